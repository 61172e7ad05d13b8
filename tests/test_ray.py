"""`odeformer fit --ray` with a real Ray: a cluster of two one-CPU nodes on this machine, a private local Ray,
killed workers, and resuming on Ray what a local run left (docs/ray.md)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from tests.test_cli_fit import CKPT, ROOT, _write, wait_for_journal  # noqa: E402

T = np.linspace(0, 5, 40)
#: options under which these small systems are fitted long before the deadline: deterministic results
OPTIONS = ["--checkpoint", CKPT, "--beam-size", "3", "--time-budget", "60", "--quiet"]


def _fit(*args, timeout=240, env=None):
    cmd = [sys.executable, "-m", "odeformer.cli", "fit", *OPTIONS, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same(a: list[dict], b: list[dict]) -> None:
    """Identical results but for the timing."""
    strip = [[{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs] for rs in (a, b)]
    assert strip[0] == strip[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_inputs")
    rows = [[name, t, a * np.exp(k * t)] for name, a, k in [("e1", 2.0, -0.4), ("e2", 1.5, 0.2), ("e3", 3.0, -0.8)]
            for t in T]
    rows += [["broken", t, 1.0 if i != 3 else "abc"] for i, t in enumerate(T)]
    multi = _write(d / "multi.csv", ["system", "t", "x"], rows)
    decay = _write(d / "decay.csv", ["t", "N"], [[t, 4 * np.exp(-0.3 * t)] for t in T[::-1]])
    return [multi, decay]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The local path's results on the same files."""
    out = tmp_path_factory.mktemp("ray_ref") / "local.jsonl"
    proc = _fit(*inputs, "-o", out)
    assert proc.returncode == 1, proc.stderr
    results = _read(out)
    assert [r["system"] for r in results] == ["e1", "e2", "e3", "broken", "decay"]
    return results


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each (a head and a worker node), on loopback; shut down by the fixture."""
    saved = dict(os.environ)
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    from ray.cluster_utils import Cluster

    small = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
    c = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    try:
        c.add_node(**small)
        c.wait_for_nodes()
        yield c.address
    finally:
        c.shutdown()
        os.environ.clear()
        os.environ.update(saved)


class Killer(threading.Thread):
    """Kills (SIGKILL) the Ray workers whose process title says they are fitting one of ``targets``:
    ``{system: how many times}``."""

    def __init__(self, targets: dict[str, int]):
        super().__init__(daemon=True)
        self.targets, self.killed, self.stop = dict(targets), [], threading.Event()

    def run(self):
        while not self.stop.is_set() and any(self.targets.values()):
            ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
            for line in ps.splitlines():
                m = re.match(r"\s*(\d+) ray::FitWorker\.fit (\S+)\s*$", line)
                if m and self.targets.get(m[2], 0) > 0:
                    try:
                        os.kill(int(m[1]), signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.targets[m[2]] -= 1
                    self.killed.append(m[2])
            time.sleep(0.03)


def test_two_node_cluster_gives_the_local_results(cluster, inputs, reference, tmp_path):
    out = tmp_path / "ray.jsonl"
    proc = _fit(*inputs, "-o", out, "--ray-address", cluster)
    assert proc.returncode == 1, proc.stderr  # as locally: the broken system fails, the others are answered
    assert "1 of 5 system(s) failed" in proc.stderr and "broken: ERROR row 125, column x" in proc.stdout
    _same(_read(out), reference)
    assert not (tmp_path / "ray.jsonl.partial").exists()
    out_csv = tmp_path / "ray.csv"  # the CSV output too, from the same results
    assert _fit(inputs[1], "-o", out_csv, "--ray-address", cluster).returncode == 0
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "system,rank,variable,rhs,r2,complexity,error" and lines[1].startswith("decay,1,N,")


def test_killed_workers_are_replaced_and_a_system_that_keeps_killing_them_is_an_error(cluster, inputs, reference,
                                                                                     tmp_path):
    poison = _write(tmp_path / "poison.csv", ["t", "x"], [[t, 5 / (1 + 4 * np.exp(-0.9 * t))] for t in T])
    out = tmp_path / "ray.jsonl"
    killer = Killer({"e2": 1, "poison": 3})
    killer.start()
    try:
        proc = _fit(inputs[0], poison, inputs[1], "-o", out, "--ray-address", cluster)
    finally:
        killer.stop.set()
    assert sorted(killer.killed) == ["e2", "poison", "poison", "poison"], (killer.killed, proc.stderr)
    assert proc.returncode == 1, proc.stderr
    results = _read(out)
    assert [r["system"] for r in results] == ["e1", "e2", "e3", "broken", "poison", "decay"]  # each once
    assert results[4]["candidates"] == [] and "died 3 times" in results[4]["error"]
    _same(results[:4] + results[5:], reference)  # e2, retried on a new worker, as if nothing happened
    assert "2 of 6 system(s) failed" in proc.stderr


def test_resume_on_ray_what_a_local_run_left(cluster, inputs, reference, tmp_path):
    out = tmp_path / "res.jsonl"
    journal = tmp_path / "res.jsonl.partial"
    proc = subprocess.Popen([sys.executable, "-m", "odeformer.cli", "fit", *OPTIONS, *map(str, inputs), "-o",
                             str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_journal(proc, journal, 3)  # header and two results
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    kept = _read(journal)[1:]
    assert 2 <= len(kept) < 5 and not out.exists()
    done = _fit(*inputs, "-o", out, "--ray-address", cluster, "--resume")
    assert done.returncode == 1, done.stderr
    assert f"{len(kept)} system(s) taken from the interrupted run" in done.stderr
    results = _read(out)
    _same(results, reference)
    by_system = {r["system"]: r for r in results}
    assert all(by_system[e["result"]["system"]] == e["result"] for e in kept)  # not fitted again
    assert not journal.exists()


def test_a_private_local_ray_listens_on_loopback_only_and_gives_the_local_results(inputs, reference, tmp_path):
    import psutil

    out = tmp_path / "ray.jsonl"
    cmd = [sys.executable, "-m", "odeformer.cli", "fit", *OPTIONS, *map(str, inputs), "-o", str(out), "--ray",
           "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    listening = set()
    try:
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:  # the sockets of the driver and of the Ray processes it started
            try:
                pids = {driver.pid} | {p.pid for p in driver.children(recursive=True)}
            except psutil.NoSuchProcess:
                break
            listening |= {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN and c.pid in pids}
            time.sleep(0.2)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert len(listening) >= 3, listening  # GCS, raylet, object manager, workers...
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, listening
    _same(_read(out), reference)


def test_an_unreachable_cluster_is_bad_usage_and_nothing_is_written(inputs, tmp_path):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "never.jsonl"
    proc = _fit(inputs[1], "-o", out, "--ray-address", f"127.0.0.1:{port}", timeout=120)
    assert proc.returncode == 2 and "cannot reach the Ray cluster" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
