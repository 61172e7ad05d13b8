"""Batch fitting on Ray (``odeformer fit --ray [--ray-address ADDRESS]``): docs/ray.md.

The driver (the ``odeformer fit`` process) connects to Ray: without an address it starts a private Ray
on this machine (every Ray process listening on 127.0.0.1 only, no dashboard, no usage statistics); with
``auto`` or a cluster's address it joins that cluster. It then starts one ``FitWorker`` actor per CPU
(or ``--workers``), each holding one torch thread and the model, loaded once from checkpoint files the
driver put into Ray's object store (so the nodes need the package, not the checkpoint). Systems are
streamed: the driver reads the inputs file by file and keeps exactly one system in flight per ready
worker; results come back to ``on_result`` in completion order (``odeformer.batch`` journals them and
writes the output in input order).

Faults: a worker that dies (process killed, out of memory, node lost) is replaced by a new actor, which
Ray places wherever a CPU is free, and the system it was fitting is sent again; a system whose worker
dies ``MAX_ATTEMPTS`` times is answered with an error for that system. A result is passed on only once,
when its task returns, so nothing is lost or reported twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from odeformer.csv_io import SystemData

#: tries of one system whose worker dies under it, before it is reported as an error
MAX_ATTEMPTS = 3
#: object store of a private local Ray: systems and one checkpoint pass through it, nothing large
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


class ClusterError(Exception):
    """Ray cannot be reached, or its workers cannot start (exit code 2)."""


def available() -> bool:
    """Whether Ray is installed (the ``ray`` extra)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start a private local Ray (``address`` None) or join a running cluster (``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if address is None:
        # Ray binds its servers to the node's address; this makes that 127.0.0.1 (Ray's own setting for
        # single-machine use), so nothing listens beyond loopback. Read when ray is first imported.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a new local Ray, without its warning
    import ray

    if address is None:
        try:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the line above
        except (ImportError, AttributeError):
            pass
    if address is not None and "://" not in address and address != "auto":
        _probe(address)  # Ray itself would retry an unreachable address for ever
    try:
        if address is None:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False, logging_level="warning")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="warning")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot {'start a local Ray' if address is None else f'join the Ray cluster at {address}'}"
                           f": {e}") from None


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when nothing listens at a cluster's ``HOST:PORT``."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray-address {address}: give 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({e.strerror or e})") from None


def _checkpoint_files(checkpoint: str | Path) -> tuple[str, dict[str, bytes]]:
    """The files of a checkpoint directory (safetensors, config.json, ...), to ship to the workers."""
    from odeformer import checkpoint as ckpt

    path = ckpt.resolve(checkpoint)
    return path.name, {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}


def _materialise(name: str, files: dict[str, bytes]) -> Path:
    """The shipped checkpoint as a directory on this node (once per node and content; loading it
    checks the weights' hashes)."""
    digest = hashlib.sha256()
    for fname in sorted(files):
        digest.update(fname.encode() + b"\0" + hashlib.sha256(files[fname]).digest())
    root = Path(tempfile.gettempdir()) / f"odeformer-checkpoint-{digest.hexdigest()[:16]}"
    target = root / name
    if (target / "config.json").is_file():
        return target
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    for fname, data in files.items():
        (tmp / fname).write_bytes(data)
    try:
        os.rename(tmp, target)
    except OSError:  # another worker on this node was first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class FitWorker:
    """A Ray actor: one torch thread, the model loaded once, then one system per call."""

    def __init__(self, options: dict, checkpoint: tuple[str, dict[str, bytes]]):
        import torch

        torch.set_num_threads(1)
        from odeformer.regressor import ODERegressor

        self.regressor = ODERegressor(**{**options, "checkpoint": str(_materialise(*checkpoint))})
        self.regressor.model_  # noqa: B018 - load (and verify) the model now, not with the first system

    def ready(self) -> int:
        return os.getpid()

    def fit(self, data: SystemData) -> dict:
        from odeformer.batch import fit_one

        _set_title(f"ray::FitWorker.fit {data.system}")  # `ps` shows which system each worker is on
        return fit_one(self.regressor, data)


def _set_title(title: str) -> None:
    try:
        import ray._raylet

        ray._raylet.setproctitle(title)
    except (ImportError, AttributeError):
        pass


@dataclass
class _Job:
    key: str
    data: SystemData
    attempts: int = 0


def _died(job: _Job) -> dict:
    return {"system": job.data.system, "variables": job.data.variables, "candidates": [],
            "error": f"the worker fitting this system died {job.attempts} times (killed, out of memory or "
                     "crashed); not fitted"}


def fit_stream(items: Iterable[tuple[str, SystemData]], options: dict, on_result: Callable[[str, dict], None],
               workers: int | None = None, address: str | None = None) -> None:
    """Fit ``(key, system)`` items on Ray; ``on_result(key, result)`` as each completes. ``workers``:
    actors to start (default: one per CPU of the cluster)."""
    connect(address, num_cpus=workers)
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        checkpoint = ray.put(_checkpoint_files(options["checkpoint"]))
        actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(FitWorker)
        starting: dict = {}  # ready() ref -> actor not yet known to be up
        running: dict = {}  # fit() ref -> (actor, job)
        idle: list = []
        retry: deque[_Job] = deque()
        start_failures = 0

        def start() -> None:
            actor = actor_class.remote(options, checkpoint)
            starting[actor.ready.remote()] = actor

        def replace(actor) -> None:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - it is gone already
                pass
            start()

        for _ in range(n):
            start()
        items = iter(items)
        exhausted = False
        while True:
            while idle:
                job = retry.popleft() if retry else None
                if job is None and not exhausted:
                    try:
                        key, data = next(items)
                        job = _Job(key, data)
                    except StopIteration:
                        exhausted = True
                if job is None:
                    break
                actor = idle.pop()
                running[actor.fit.remote(job.data)] = (actor, job)
            if not running and not retry and exhausted:
                return
            (ref,), _ = ray.wait([*running, *starting], num_returns=1)
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except RayError as e:
                    start_failures += 1
                    if start_failures > n + MAX_ATTEMPTS:
                        raise ClusterError(f"Ray workers cannot start: {e}") from None
                    replace(actor)
                continue
            actor, job = running.pop(ref)
            try:
                result = ray.get(ref)
                idle.append(actor)
            except RayTaskError as e:  # an exception outside the fit itself (fit_one catches those)
                result = {"system": job.data.system, "variables": job.data.variables, "candidates": [],
                          "error": f"fit failed: {e}"}
                idle.append(actor)
            except RayError:  # the worker died (killed process, lost node): another one tries again
                job.attempts += 1
                replace(actor)
                if job.attempts < MAX_ATTEMPTS:
                    retry.append(job)
                    continue
                result = _died(job)
            on_result(job.key, result)
    finally:
        ray.shutdown()
