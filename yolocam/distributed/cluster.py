"""Connecting to Ray: the lazy import (with the install hint), `ray.init`, and worker resources."""

from __future__ import annotations

import logging
import math

from ..errors import YolocamError

INSTALL_HINT = 'Ray is not installed; --ray needs the optional extra: pip install "yolocam[ray]"'
DECODE_CPUS = 0.25  # CPUs reserved per decode task (fractional: read tasks never wait for a whole core)


def require_ray():
    """The `ray` module with Ray Data, or a one-line `YolocamError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise YolocamError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None):
    """Join the Ray cluster at `address` (`auto`: the one `ray start` made on this machine; `host:port` or
    `ray://host:10001`; None: $RAY_ADDRESS when set, else a new local Ray). An already initialised Ray
    (e.g. the caller's `ray.init`) is used as it is. Returns the `ray` module."""
    ray = require_ray()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-run notes; our own progress bar says it
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise YolocamError(f"cannot connect to the Ray cluster at {address or 'a new local Ray'}: "
                           f"{' '.join(str(exc).split())}") from None
    return ray


def worker_cpus(ray, workers: int, cpus_per_worker: float | None, reserve: float = DECODE_CPUS) -> float:
    """CPUs each worker reserves: given, else a share of the cluster's CPUs that leaves room for decode
    tasks (on 2 cores and 2 workers: 0.75 each, so reads still get scheduled). Refused in one line when no
    node can hold a worker, or when the workers Ray can start would leave less than `reserve` CPUs for the
    decode tasks (Ray would wait for them forever)."""
    if cpus_per_worker is not None:
        if not cpus_per_worker > 0:
            raise YolocamError(f"cpus_per_worker: expected a positive number, got {cpus_per_worker!r}")
        cpus = float(cpus_per_worker)
    else:
        total = float(ray.cluster_resources().get("CPU", 1.0))
        share = (total - 2 * DECODE_CPUS) / max(1, workers)
        cpus = max(0.1, min(1.0, round(share * 20) / 20))
    nodes = [float(n.get("CPU", 0.0)) for n in _nodes(ray)]
    room = sum(math.floor(c / cpus + 1e-9) for c in nodes)
    if room == 0:
        raise YolocamError(f"cpus_per_worker: asked for {cpus:g} CPUs per worker, the largest node of the Ray "
                           f"cluster has {max(nodes, default=0.0):g}")
    started = min(workers, room)
    if reserve > 0 and sum(nodes) - started * cpus < reserve - 1e-9:
        most = (sum(nodes) - reserve) / workers
        raise YolocamError(f"cpus_per_worker: {started} worker{'s' if started != 1 else ''} of {cpus:g} CPUs take "
                           f"all {sum(nodes):g} CPUs of the Ray cluster, leaving none to read images ({reserve:g} "
                           f"per read task): ask for fewer workers or at most {math.floor(most * 100) / 100:g} CPUs "
                           "per worker")
    return cpus


def _nodes(ray) -> list[dict]:
    """The total resources of each live node of the cluster (the whole cluster as one when Ray cannot say)."""
    try:
        nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive", True)]
    except Exception:  # noqa: BLE001 - a client connection without the state API
        nodes = []
    return nodes or [ray.cluster_resources()]


def check_workers(workers, gpus_per_worker) -> tuple[int, float | None]:
    """(workers, GPUs per worker or None for the default) checked, before Ray starts."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise YolocamError(f"workers: expected a positive int, got {workers!r}")
    if gpus_per_worker is None:
        return workers, None
    try:
        gpus = float(gpus_per_worker)
    except (TypeError, ValueError):
        raise YolocamError(f"gpus_per_worker: expected a number, got {gpus_per_worker!r}") from None
    if not gpus >= 0:
        raise YolocamError(f"gpus_per_worker: expected >= 0, got {gpus_per_worker!r}")
    return workers, gpus


def placement(ray, gpus: float | None, device):
    """(GPUs per worker, device for its Explainer): None GPUs = 1 when the cluster has any, else 0; a GPU
    worker's model goes to the GPU Ray gave it (`cuda:0` in its own numbering) unless a device is given.
    More GPUs per worker than any node of the cluster has are refused in one line (Ray would wait forever)."""
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    if gpus > 0:
        per_node = [float(n.get("GPU", 0.0)) for n in _nodes(ray)]
        if max(per_node, default=0.0) < gpus - 1e-9:
            total = sum(per_node)
            where = f" (at most {max(per_node):g} on one node)" if len(per_node) > 1 and total >= gpus else ""
            raise YolocamError(f"gpus_per_worker: asked for {gpus:g} GPU{'s' if gpus != 1 else ''} per worker, the "
                               f"Ray cluster has {total:g}{where}: pass gpus_per_worker=0 (--gpus-per-worker 0) "
                               "for CPU workers")
    if gpus > 0 and device is None:
        device = "cuda:0"
    return gpus, device
