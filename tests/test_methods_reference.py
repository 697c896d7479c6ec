"""CAM formulas against numbers computed by hand on a 2-channel, 2x2 example.

A (activations) and G (gradients), channel by channel:
    A0 = [[1, 2], [3, 4]]   G0 = [[1, 0], [0, 1]]     sum A0 = 10
    A1 = [[1, 1], [1, 0]]   G1 = [[-1, 2], [0, 1]]    sum A1 = 3
"""

import pytest
import torch

from yolocam.cam.methods import get_method, gradcampp_weights, list_methods

A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
G = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 2.0], [0.0, 1.0]]]])[None]  # (S=1, 1, 2, 2, 2)

# Worked by hand (see each comment).
EXPECTED = {
    # w = spatial mean of G = (0.5, 0.5); 0.5*A0 + 0.5*A1
    "gradcam": [[1.0, 1.5], [2.0, 2.0]],
    # alpha = g^2 / (2g^2 + g^3 * sum A). ch0: g=1 -> 1/12, twice -> w0 = 1/6.
    # ch1: g=2 -> 4/(8+24) = 1/8, times relu(2) = 1/4; g=1 -> 1/5; g=-1 has relu(g)=0 -> w1 = 9/20
    "gradcam++": [[1 / 6 + 0.45, 2 / 6 + 0.45], [3 / 6 + 0.45, 4 / 6]],
    # w_c = sum(G*A)/sum(A): ch0 5/10 = 0.5, ch1 (-1+2)/3 = 1/3
    "xgradcam": [[0.5 + 1 / 3, 1 + 1 / 3], [1.5 + 1 / 3, 2.0]],
    # sum_c relu(G)*A: [[1,0],[0,4]] + [[0,2],[0,0]]
    "layercam": [[1.0, 2.0], [0.0, 4.0]],
    # sum_c G*A: [[1,0],[0,4]] + [[-1,2],[0,0]]
    "hirescam": [[0.0, 2.0], [0.0, 4.0]],
    # sensitivity |g|/max|g|: s0 = [[1,0],[0,1]], s1 = [[.5,1],[0,.5]]; 0.5*s0*A0 + 0.5*s1*A1
    "ssgradcam": [[0.75, 0.5], [0.0, 2.0]],
    # (1/6)*s0*A0 + (9/20)*s1*A1
    "ssgradcam++": [[1 / 6 + 0.225, 0.45], [0.0, 4 / 6]],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_method_matches_hand_computation(name):
    cam = get_method(name)(A, G)
    assert cam.shape == (1, 2, 2)
    torch.testing.assert_close(cam[0], torch.tensor(EXPECTED[name]), rtol=1e-5, atol=1e-6)


def test_gradcampp_uses_the_papers_alpha_not_the_cube_sum_variants():
    w = gradcampp_weights(A, G).flatten()
    torch.testing.assert_close(w, torch.tensor([1 / 6, 9 / 20]))
    # The variant with sum_ab A_ab g_ab^3 in the denominator gives w0 = 2 * 1/(2 + 5) = 2/7 instead.
    assert abs(float(w[0]) - 2 / 7) > 0.05


def test_gradcampp_alpha_is_zero_where_gradient_is_zero():
    g = torch.zeros_like(G)
    assert torch.count_nonzero(gradcampp_weights(A, g)) == 0


def test_odam_is_hirescam_alias_and_registry_lists_everything():
    names = list_methods()
    for n in ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "odam", "eigencam", "eigengradcam",
              "smoothgradcam++", "ssgradcam", "ssgradcam++"]:
        assert n in names
    assert get_method("odam") is get_method("hirescam")


def test_smooth_gradcampp_averages_gradient_powers():
    # Two samples whose mean is G: powers are averaged before alpha (SmoothGrad-CAM++).
    noise = torch.randn_like(G[0]) * 0.1
    g2 = torch.stack([G[0] + noise, G[0] - noise])
    cam = get_method("smoothgradcam++")(A, g2)
    g1, gg, ggg = g2.mean(0), g2.pow(2).mean(0), g2.pow(3).mean(0)
    alpha = gg / (2 * gg + ggg * A.sum((-2, -1), keepdim=True))
    w = (alpha * g1.clamp(min=0)).sum((-2, -1), keepdim=True)
    torch.testing.assert_close(cam, (w * A).sum(1))


def test_eigencam_recovers_a_rank_one_pattern():
    pattern = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    acts = torch.stack([pattern * 2.0, pattern * 1.0, pattern * 0.5])[None]  # channels share one spatial pattern
    cam = get_method("eigencam")(acts, None)[0]
    centred = pattern - pattern.mean()
    corr = torch.nn.functional.cosine_similarity(cam.flatten(), centred.flatten(), dim=0)
    assert corr > 0.999  # same pattern, positive sign
