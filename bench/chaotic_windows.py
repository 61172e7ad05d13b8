"""Chaotic recordings: one trajectory (the search cuts it into windows itself) against the same
recording cut into windows by hand.

    python bench/chaotic_windows.py                     # Lorenz (sigma 10, rho 28, beta 8/3), 1% noise, two seeds
    python bench/chaotic_windows.py --noise 0.05 --window 50

Lorenz's chaotic regime sampled at 1,000 points over 10 time units (about nine Lyapunov times) with
multiplicative noise: fitted as one trajectory, and cut into windows of ``--window`` points passed as
separate trajectories (each then gets its own fitted start, docs/inference.md). Given one trajectory,
the search ranks over windows when no candidate reproduces it whole (odeformer/search/windows.py). Prints per fit the
answer, its number of terms and its R² (over what was fitted), and whether its structure is Lorenz's.
Writes bench/results/chaotic-windows.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import odebench as ob  # noqa: E402

from odeformer import ODERegressor  # noqa: E402

#: unit coefficients written out: the structure compared is the skeleton with a constant on every term
LORENZ = ["-10.0*x_0 + 10.0*x_1", "-1.0*x_0*x_2 + 28.0*x_0 - 1.0*x_1", "1.0*x_0*x_1 - 2.667*x_2"]


def lorenz(_t, u):
    x, y, z = u
    return [10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--span", type=float, default=10.0)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--window", type=int, default=100, help="points per window")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--time-budget", type=float, default=10.0, help="seconds per fit")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaotic-windows.json"))
    args = p.parse_args()
    t = np.linspace(0.0, args.span, args.points)
    x = solve_ivp(lorenz, (0.0, args.span), [-8.0, 8.0, 27.0], t_eval=t, rtol=1e-10, atol=1e-10).y.T
    truth = ob.skeleton_key(ob.parse_system(LORENZ, 3), 3)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        xn = x * (1.0 + args.noise * np.random.default_rng(seed).standard_normal(x.shape))
        cuts = range(0, args.points, args.window)
        by_hand = ([t[i:i + args.window] for i in cuts], [xn[i:i + args.window] for i in cuts])
        for name, ts, xs in (("one trajectory", t, xn), (f"windows of {args.window}", *by_hand)):
            start = time.monotonic()
            best = ODERegressor(time_budget_s=args.time_budget).fit(ts, xs).equations_[0]
            exprs = [sp.expand(e) for e in best.expressions]
            rows.append({"seed": seed, "fit": name, "seconds": round(time.monotonic() - start, 1), "r2": best.r2,
                         "terms": sum(len(sp.Add.make_args(e)) for e in exprs),
                         "structure": ob.skeleton_key(exprs, 3) == truth, "rhs": best.rhs})
            r = rows[-1]
            print(f"seed {seed}, {name}: {r['terms']} terms, R² {r['r2']:.3f}, Lorenz's structure: {r['structure']}, "
                  f"{r['seconds']} s\n  {r['rhs']}")
    Path(args.out).write_text(json.dumps({"command": " ".join(["python", "bench/chaotic_windows.py", *sys.argv[1:]]),
                                          "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
