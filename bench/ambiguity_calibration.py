"""Calibration of the ambiguity flag's threshold (docs/ambiguity.md) on systems of the default grammar.

    python bench/ambiguity_calibration.py --n 80      # the first 80 in-distribution systems, clean

The in-distribution set (bench/make_indist.py: the default grammar, never ODEBench) under the protocol
of bench/odebench.py (150 points on [0, t_end], fit on the first initial condition, generalisation
from the second): per system, each close candidate's largest disagreement with the best (in sigma),
then the share flagged and generalisation accuracy among flagged and unflagged systems for a range
of thresholds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from odebench import corrupt, integrate, lambdify_exprs, load_systems, parse_system, r2, t_eval_of  # noqa: E402

THRESHOLDS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=80)
    p.add_argument("--sigma", type=float, default=0.0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from odeformer import ODERegressor

    reg = ODERegressor(time_budget_s=10)
    rows = []
    for s in load_systems(False, "indist")[: args.n]:
        dim, te = s["dim"], t_eval_of(s)
        f = lambdify_exprs(parse_system(s["substituted"][0], dim), dim)
        clean = [integrate(f, x0, te) for x0 in s["init"][:2]]
        if any(c is None for c in clean):
            continue
        t_obs, x_obs = corrupt(clean[0], args.sigma, 0.0, seed=1000 * s["id"] + int(100 * args.sigma), t_eval=te)
        reg.fit(t_obs, x_obs)
        if not reg.equations_:
            continue
        gen = r2(clean[1], integrate(lambdify_exprs(reg.equations_[0].expressions, dim), s["init"][1], te))
        sep = max(reg.ambiguity_.separation.values(), default=0.0)
        rows.append({"id": s["id"], "gen": float(gen) if np.isfinite(gen) else -1e9, "separation": sep,
                     "gaps": reg.ambiguity_.gaps})
        print(s["id"], f"gen={gen:.3f}", f"separation={sep:.1f}", flush=True)
    good = np.array([r["gen"] > 0.9 for r in rows])
    seps = np.array([r["separation"] for r in rows])
    print("| threshold (sigma) | flagged | gen. acc flagged | gen. acc unflagged |\n|---|---|---|---|")
    for thr in THRESHOLDS:
        flag = seps > thr
        acc = f"{good[flag].mean():.2f}" if flag.any() else "—"
        print(f"| {thr:g} | {flag.sum()} of {len(rows)} | {acc} | {good[~flag].mean():.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
