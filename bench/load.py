"""Load test of the HTTP service on loopback: N concurrent clients posting 1-variable, 100-point fits.

    python bench/load.py --clients 8 --seconds 60        # starts `odeformer serve` on a free port

The clients run in a second process (threads with one HTTP connection each), bounded in time and in
request count. Reported: requests/s, p50/p95 latency, errors by status, dropped connections, and the
server's resident memory at the start and the end of the run (flat memory: no leak per request).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _client(args) -> list:
    url, seconds, max_requests, index = args
    import httpx

    rng = np.random.default_rng(index)
    out = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < deadline and len(out) < max_requests:
            t = np.sort(rng.uniform(0, 10, 100))
            k, x0 = rng.uniform(0.1, 1.0), rng.uniform(0.5, 5.0)
            x = (x0 * np.exp(-k * t))[:, None]
            body = {"variables": ["x"], "trajectories": [{"t": t.tolist(), "x": x.tolist()}]}
            start = time.monotonic()
            try:
                r = client.post(url + "/v1/fit", json=body)
                out.append((time.monotonic() - start, r.status_code))
            except httpx.HTTPError as e:
                out.append((time.monotonic() - start, f"dropped: {type(e).__name__}"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-requests", type=int, default=500, help="per client")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.json"))
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        rss_start = _rss_mb(server.pid)
        start = time.monotonic()
        samples: list = []
        stop = threading.Event()

        def sample_memory():
            while not stop.wait(5.0):
                samples.append((round(time.monotonic() - start, 1), round(_rss_mb(server.pid), 1)))

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        with mp.get_context("spawn").Pool(1) as pool:  # the clients live in a second process
            results = pool.apply(_threads, ((url, args.seconds, args.max_requests, args.clients),))
        stop.set()
        elapsed = time.monotonic() - start
        rss_end = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = np.array([t for t, code in results if code == 200])
    errors: dict = {}
    for _, code in results:
        if code != 200:
            errors[str(code)] = errors.get(str(code), 0) + 1
    report = {"clients": args.clients, "seconds": round(elapsed, 1), "requests": len(results),
              "ok": int(len(lat)), "requests_per_s": round(len(lat) / elapsed, 2),
              "p50_s": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
              "p95_s": round(float(np.percentile(lat, 95)), 3) if len(lat) else None,
              "errors": errors, "server_rss_mb_start": round(rss_start, 1), "server_rss_mb_end": round(rss_end, 1),
              "server_rss_mb_every_5s": samples}
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


def _threads(args) -> list:
    url, seconds, max_requests, clients = args
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(clients) as pool:
        chunks = list(pool.map(_client, [(url, seconds, max_requests, i) for i in range(clients)]))
    return [r for c in chunks for r in c]


if __name__ == "__main__":
    main()
