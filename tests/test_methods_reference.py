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


def test_smooth_gradcampp_averages_gradient_powers_by_hand():
    """Two samples G + N and G - N (mean G): mean g = G, mean g^2 = G^2 + N^2, mean g^3 = G^3 + 3 G N^2.
    N is 1 at ch0 (0, 1), where g = 0, and at ch1 (1, 1), where g = 1; 0 elsewhere.
    ch0: (0, 1) gets alpha 1 / (2 + 0) = 1/2 but relu(mean g) = 0, so w0 = 1/12 + 1/12 = 1/6 as without noise.
    ch1: (1, 1): alpha = 2 / (2*2 + 4*3) = 1/8 (1/5 without noise), times relu(1); (0, 1) as before 1/4 -> w1 = 3/8.
    Map: (1/6) A0 + (3/8) A1."""
    noise = torch.zeros_like(G[0])
    noise[0, 0, 0, 1] = 1.0
    noise[0, 1, 1, 1] = 1.0
    cam = get_method("smoothgradcam++")(A, torch.stack([G[0] + noise, G[0] - noise]))
    torch.testing.assert_close(cam[0], torch.tensor([[13 / 24, 17 / 24], [21 / 24, 2 / 3]]))
    torch.testing.assert_close(gradcampp_weights(A, torch.stack([G[0] + noise, G[0] - noise])).flatten(),
                               torch.tensor([1 / 6, 3 / 8]))


P_RANK1 = torch.tensor([[0.0, 1.0], [2.0, 3.0]])


def test_eigengradcam_by_hand():
    """A*G is rank one: ch0 = 3P, ch1 = -4P with P = [[0, 1], [2, 3]]. Centred over positions, each position's
    channel vector is (P - 1.5) (3, -4): first axis (3, -4) / 5, projection +-5 (P - 1.5). The channel mean of
    A*G is -P / 2, so the sign that correlates positively with it gives -5 (P - 1.5)."""
    acts = torch.tensor([[[[1.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [1.0, 3.0]]]])
    grads = torch.tensor([[[[0.0, 3.0], [3.0, 3.0]], [[0.0, -2.0], [-8.0, -4.0]]]])[None]
    torch.testing.assert_close(acts * grads[0], torch.stack([3 * P_RANK1, -4 * P_RANK1])[None])
    cam = get_method("eigengradcam")(acts, grads)
    torch.testing.assert_close(cam[0], torch.tensor([[7.5, 2.5], [-2.5, -7.5]]), rtol=1e-5, atol=1e-5)


# A second example where a channel's gradient is negative on average (G2_1 = [[-4, 0], [0, 0]], G2_0 = G0), so the
# signed maps have negative cells: methods return signed evidence, and the rectification comes after the channel sum.
G2 = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[-4.0, 0.0], [0.0, 0.0]]]])[None]
EXPECTED_SIGNED = {
    # w = (0.5, -1): 0.5*A0 - A1
    "gradcam": [[-0.5, 0.0], [0.5, 2.0]],
    # [[1,0],[0,4]] + [[-4,0],[0,0]]
    "hirescam": [[-3.0, 0.0], [0.0, 4.0]],
    # w = (5/10, -4/3): 0.5*A0 - (4/3)*A1
    "xgradcam": [[0.5 - 4 / 3, 1 - 4 / 3], [1.5 - 4 / 3, 2.0]],
    # the ReLU sits on the gradient: relu(G2)*A, ch1 contributes nothing
    "layercam": [[1.0, 0.0], [0.0, 4.0]],
    # ch1's only gradient is negative: relu(g) = 0, w1 = 0; w0 = 1/6 as before
    "gradcam++": [[1 / 6, 2 / 6], [3 / 6, 4 / 6]],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SIGNED))
def test_methods_return_signed_maps_by_hand(name):
    torch.testing.assert_close(get_method(name)(A, G2)[0], torch.tensor(EXPECTED_SIGNED[name]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fuse", ["sum", "max", "gate", "origin"])
def test_rectification_comes_after_the_channel_sum(fuse):
    """Grad-CAM's signed map [[-0.5, 0], [0.5, 2]] becomes relu / max = [[0, 0], [0.25, 1]]. Rectifying each
    channel before the sum would give 0.5*A0 / 2 = [[0.25, 0.5], [0.75, 1]]; not rectifying keeps -0.25."""
    from yolocam.cam.fusion import fuse_layer_maps

    raw = get_method("gradcam")(A, G2)
    fused = fuse_layer_maps([raw], fuse, (2, 2), [8.0], torch.tensor([8.0]))
    torch.testing.assert_close(fused[0], torch.tensor([[0.0, 0.0], [0.25, 1.0]]))


def test_eigencam_recovers_a_rank_one_pattern():
    pattern = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    acts = torch.stack([pattern * 2.0, pattern * 1.0, pattern * 0.5])[None]  # channels share one spatial pattern
    cam = get_method("eigencam")(acts, None)[0]
    centred = pattern - pattern.mean()
    corr = torch.nn.functional.cosine_similarity(cam.flatten(), centred.flatten(), dim=0)
    assert corr > 0.999  # same pattern, positive sign
