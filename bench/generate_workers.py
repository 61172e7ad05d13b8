"""How much a second worker speeds up ``odeformer generate``: one and two workers back to back.

    python bench/generate_workers.py                 # 3 rounds of 20,000 systems, ~1.5 min on 2 cores
    python bench/generate_workers.py --n 5000 --rounds 1

Each round runs ``odeformer generate --n N --seed 1 --quiet --workers W`` for W = 1 then 2 in fresh
processes and reads the systems/s the command reports (timed from its first chunk); the process wall
time is recorded beside it. The ratio only means something on otherwise idle cores: run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE = re.compile(r"in ([0-9.]+) s: ([0-9]+) systems/s")


def run_once(n: int, workers: int, out: Path) -> dict:
    """One ``odeformer generate`` run: the systems/s it reports and its process wall time."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "service.cli", "generate", "--n", str(n), "--out", str(out), "--seed", "1",
           "--quiet", "--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    m = RATE.search(proc.stdout)
    if m is None:
        raise RuntimeError(f"no systems/s line in the output of {' '.join(cmd)}:\n{proc.stdout}")
    return {"workers": workers, "systems_per_s": int(m.group(2)), "elapsed_s": float(m.group(1)),
            "wall_s": round(wall, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "generate_workers.json"))
    args = p.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            one, two = (run_once(args.n, w, Path(tmp) / "g") for w in (1, 2))
            rounds.append({"one": one, "two": two, "ratio": round(two["systems_per_s"] / one["systems_per_s"], 2),
                           "wall_ratio": round(one["wall_s"] / two["wall_s"], 2)})
            print(f"round {r + 1}: 1 worker {one['systems_per_s']}/s ({one['wall_s']} s), "
                  f"2 workers {two['systems_per_s']}/s ({two['wall_s']} s): "
                  f"{rounds[-1]['ratio']}x systems/s, {rounds[-1]['wall_ratio']}x wall")
    ratios = sorted(x["ratio"] for x in rounds)
    print(f"median ratio {ratios[len(ratios) // 2]}x over {len(rounds)} rounds "
          f"(load average before the last round: {os.getloadavg()[0]:.2f})")
    Path(args.out).write_text(json.dumps({"n": args.n, "cpus": os.cpu_count(), "rounds": rounds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
