"""One model explained from several threads: results equal the sequential ones, the model is left as
found, and SmoothGrad noise comes from the call's own generator (torch's global RNG is untouched)."""

import threading

import numpy as np
import pytest
import torch
from ultralytics import YOLO

import yolocam
from yolocam.demo.models import demo_model_path
from yolocam.demo.scenes import make_scene
from yolocam.model.adapter import ModelAdapter

ROUNDS = 3


@pytest.fixture(scope="module")
def demo_yolo():
    return YOLO(str(demo_model_path("demo-v8")))


@pytest.fixture
def yolo(demo_yolo):
    """The module's model; whatever a test changes of its modes and grad flags is put back after it, so that no
    test depends on the order they run in."""
    inner = demo_yolo.model
    modes = [m.training for m in inner.modules()]
    flags = [p.requires_grad for p in inner.parameters()]
    yield demo_yolo
    for m, mode in zip(inner.modules(), modes):
        m.training = mode
    for p, flag in zip(inner.parameters(), flags):
        p.requires_grad_(flag)
        p.grad = None


def _scenes(*specs):
    return [make_scene(seed, size).image for seed, size in specs]


def _maps(results):
    return [d.heatmap for r in results for d in r.detections]


def assert_same_maps(got, expected):
    """The same maps as a sequential run: the same kernels on the same shapes (measured: equal to the bit), but
    concurrent OpenMP teams may split a reduction otherwise, so to float rounding; a race that mixed up images,
    layers, hooks or noise would be off by far more (maps are in [0, 1])."""
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _state(module):
    """Everything an explanation may touch on the model: modes, grad flags, hooks of every kind."""
    mods = list(module.modules())
    return ([m.training for m in mods], [p.requires_grad for p in module.parameters()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in mods],
            [p.grad is None for p in module.parameters()])


def _run_threads(work, n):
    """Run work(i) on n threads started together; re-raise the first failure."""
    barrier, errors = threading.Barrier(n), []

    def run(i):
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # reported on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_explainers_sharing_a_model_on_threads_give_sequential_results(yolo):
    inner = yolo.model
    inner.model[3].train()  # a state of the caller's that must survive: some modules training,
    for p in inner.model[5].parameters():  # some parameters frozen, the others trainable
        p.requires_grad_(False)
    for p in inner.model[6].parameters():
        p.requires_grad_(True)
    before = _state(inner)
    jobs = [  # (explainer, images): different input sizes, strategies, targets, methods
        (yolocam.Explainer(yolo, imgsz=128), _scenes((1, (200, 300)), (2, (240, 240)))),
        (yolocam.Explainer(yolo, imgsz=160, strategy="batched", target="box"), _scenes((3, (300, 180)))),
        (yolocam.Explainer(yolo.model, imgsz=96, method="smoothgradcam++", layers=[15, 18]), _scenes((4, (256, 320)))),
    ]
    expected = [_maps(e.explain(images, conf=0.1)) for e, images in jobs]
    assert all(expected) and _state(inner) == before
    got = [[] for _ in jobs]

    def work(i):
        e, images = jobs[i]
        for _ in range(ROUNDS):
            got[i].append(_maps(e.explain(images, conf=0.1)))

    _run_threads(work, len(jobs))
    assert len(got) == len(expected) == len(jobs)
    for exp_maps, rounds in zip(expected, got):
        assert len(rounds) == ROUNDS
        for maps in rounds:
            assert_same_maps(maps, exp_maps)
    assert _state(inner) == before


def test_a_plain_forward_on_another_thread_neither_disturbs_nor_is_disturbed(yolo):
    inner = yolo.model.eval()
    exp = yolocam.Explainer(yolo, imgsz=128)
    images = _scenes((6, (320, 320)))
    expected = _maps(exp.explain(images, conf=0.1))
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        reference = inner(x)[0]
    got, forwards = [], []

    def work(i):
        for _ in range(4 * ROUNDS):
            if i == 0:
                got.append(_maps(exp.explain(images, conf=0.1)))
            else:
                with torch.no_grad():
                    forwards.append(inner(x)[0])

    _run_threads(work, 2)
    assert len(got) == len(forwards) == 4 * ROUNDS
    for maps in got:
        assert_same_maps(maps, expected)
    for out in forwards:  # decoded boxes (pixels) and scores
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-4)
        assert not out.requires_grad


def test_every_adapter_on_one_module_shares_its_lock_and_releases_it(yolo, v8_model):
    a, b = ModelAdapter(yolo), ModelAdapter(yolo.model)
    assert a.lock is b.lock and a.lock is not ModelAdapter(v8_model).lock
    exp = yolocam.Explainer(yolo, imgsz=96)
    exp.explain(_scenes((1, (200, 300))), conf=0.1)
    free = []

    def probe():
        free.append(a.lock.acquire(blocking=False))
        if free[-1]:
            a.lock.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert free == [True]


def _rng_states():
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available():
        states += torch.cuda.get_rng_state_all()
    return states


def test_smoothgrad_noise_is_the_calls_own_and_leaves_torch_rng_alone(yolo):
    exp = yolocam.Explainer(yolo, imgsz=96, method="smoothgradcam++")
    images = _scenes((5, (240, 320)))
    torch.manual_seed(1234)
    before = _rng_states()
    expected = _maps(exp.explain(images, conf=0.1))
    assert expected and all(torch.equal(a, b) for a, b in zip(before, _rng_states()))
    torch.manual_seed(99)  # whatever the caller's state: the same maps
    assert_same_maps(_maps(exp.explain(images, conf=0.1)), expected)

    got, draws, done = [], [], threading.Event()

    def work(i):
        if i == 0:
            try:
                for _ in range(ROUNDS):
                    got.append(_maps(exp.explain(images, conf=0.1)))
            finally:
                done.set()
        else:  # the caller's own random stream, drawn meanwhile on another thread
            torch.manual_seed(7)
            while not done.is_set() or len(draws) < 50:
                draws.append(torch.rand(16))

    _run_threads(work, 2)
    torch.manual_seed(7)
    assert all(torch.equal(d, torch.rand(16)) for d in draws)
    assert len(got) == ROUNDS
    for maps in got:
        assert_same_maps(maps, expected)


def test_smoothgrad_maps_do_not_depend_on_strategy_chunks_or_batch(v8_model, image):
    def maps(images, batch=1, **kw):
        exp = yolocam.Explainer(v8_model, imgsz=96, method="smoothgradcam++", layers="neck", fuse="sum", **kw)
        return _maps(exp.explain(images, conf=0.0, iou=0.1, max_det=4, batch=batch))

    expected = maps([image])
    assert len(expected) == 4
    for got in (maps([image], strategy="batched"), maps([image], strategy="batched", max_batch=3),
                maps([image, image[::-1].copy()], batch=2)[:4]):
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, atol=2e-3)
