"""End-to-end latency of ODERegressor().fit with default settings on this machine's CPU.

    python bench/latency.py            # 20 one-variable 100-point and 20 three-variable 200-point systems

Targets (issue: inference): median <= 1 s for one variable and 100 points, <= 3 s for three variables
and 200 points. Systems come from the default grammar (a fixed seed, no benchmark data involved);
the model is loaded and warmed up once, as in the server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_gen.grammar import Grammar, default_grammar  # noqa: E402
from data_gen.pipeline import generate_chunk  # noqa: E402
from odeformer import ODERegressor  # noqa: E402


def systems_of_dim(dim: int, n: int, seed: int):
    data = json.loads(default_grammar().to_json())
    data["system"].update(min_dim=dim, max_dim=dim, dim_weights=[1.0])
    g = Grammar.from_dict(data)
    out, index = [], 0
    while len(out) < n:
        out += generate_chunk(g, seed, index).systems[:: g["tree"]["instances_per_skeleton"]]
        index += 1
    return out[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latency.json"))
    args = p.parse_args()
    reg = ODERegressor(args.checkpoint)
    t = np.linspace(0, 5, 20)
    reg.fit(t, np.exp(-t))  # load and warm up
    results = {}
    for dim, points, target in [(1, 100, 1.0), (3, 200, 3.0)]:
        times = []
        for s in systems_of_dim(dim, args.n, seed=77):
            idx = np.linspace(0, s.x.shape[1] - 1, points).astype(int)
            t_obs = idx * s.t_end / (s.x.shape[1] - 1)
            start = time.perf_counter()
            reg.fit(t_obs, s.x[0, idx])
            times.append(time.perf_counter() - start)
        med = float(np.median(times))
        results[f"{dim}var_{points}pts"] = {"median_s": med, "p90_s": float(np.percentile(times, 90)),
                                            "target_s": target, "meets_target": med <= target, "n": len(times)}
        print(f"{dim} variable(s), {points} points: median {med:.2f} s, p90 {np.percentile(times, 90):.2f} s "
              f"(target {target} s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"checkpoint": str(reg.model_.path), "results": results}, indent=1))


if __name__ == "__main__":
    main()
