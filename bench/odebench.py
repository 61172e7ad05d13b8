"""ODEBench with the protocol of DESIGN.md 5 (63 systems of Strogatz and others, 1-4 variables).

    python bench/odebench.py --quick                 # 21 systems, clean and noisy, a few minutes
    python bench/odebench.py                         # all 63 systems, the full corruption grid
    python bench/odebench.py --checkpoint PATH --ablation

For each system: integrate the clean trajectories from its two initial conditions on t in [0, 10]
(LSODA, rtol 1e-5, atol 1e-7, 150 points); corrupt the first (multiplicative noise sigma, a dropped
share of the points, seeded); fit; re-integrate the top candidate from both initial conditions; R^2
(variance weighted) against the clean trajectories. Reported per setting: reconstruction and
generalisation accuracy (share of systems with R^2 > 0.9), median R^2, exact-structure rate (same
skeleton up to constants) and seconds per system, overall and per dimension. The benchmark file is
read here only; nothing in the generator or the model reads it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "bench" / "data" / "odebench.json"
RESULTS = ROOT / "bench" / "results"
T_EVAL = np.linspace(0.0, 10.0, 150)
SETTINGS = [(0.0, 0.0), (0.01, 0.0), (0.05, 0.0), (0.0, 0.5), (0.01, 0.5), (0.05, 0.5)]
QUICK_SETTINGS = [(0.0, 0.0), (0.05, 0.5)]


def load_systems(quick: bool) -> list[dict]:
    systems = json.loads(DATA.read_text())["systems"]
    return systems[::3] if quick else systems


def lambdify_system(rhs: list[str], dim: int):
    syms = [sp.Symbol(f"x_{i}") for i in range(dim)]
    exprs = [sp.parse_expr(r, local_dict={s.name: s for s in syms}) for r in rhs]
    f = sp.lambdify([syms], exprs, "numpy")
    return lambda t, y: np.asarray(f(y), dtype=float).ravel()


def integrate(f, x0, t_eval=T_EVAL, max_seconds: float = 20.0) -> np.ndarray | None:
    start = time.monotonic()

    def guarded(t, y):
        if time.monotonic() - start > max_seconds:
            raise TimeoutError
        return f(t, y)

    try:
        with np.errstate(all="ignore"):
            sol = solve_ivp(guarded, (t_eval[0], t_eval[-1]), np.asarray(x0, float), t_eval=t_eval, method="LSODA",
                            rtol=1e-5, atol=1e-7)
    except (TimeoutError, ValueError, OverflowError, ZeroDivisionError):
        return None
    if sol.status != 0 or sol.y.shape[1] != len(t_eval) or not np.all(np.isfinite(sol.y)):
        return None
    return sol.y.T


def r2(y_true: np.ndarray, y_pred: np.ndarray | None) -> float:
    from odeformer.metrics import r2_score

    return -np.inf if y_pred is None else r2_score(y_true, y_pred)


def corrupt(x: np.ndarray, sigma: float, drop: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(T_EVAL), size=int(round(len(T_EVAL) * (1 - drop))), replace=False))
    xs = x[keep] * (1.0 + sigma * rng.standard_normal(x[keep].shape))
    return T_EVAL[keep], xs


def skeleton_key(exprs: list[sp.Expr], dim: int) -> str | None:
    from data_gen.sampler import Skeleton
    from data_gen.simplify import simplify
    from odeformer.expressions import NotExpressible, from_sympy

    names = {sp.Symbol(f"x_{i}"): f"x_{i}" for i in range(dim)} | {sp.Symbol("t"): "t"}
    try:
        # expanded, so that x*(1 - x) and x - x**2 count as the same structure
        return Skeleton(tuple(simplify(from_sympy(sp.expand(e), names)[0]) for e in exprs), False).key
    except (NotExpressible, ValueError, TypeError):
        return None


def run_one(job: dict) -> dict:
    """Fit one (system, setting) and score it. Runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from odeformer import ODERegressor

    s, sigma, drop, opts = job["system"], job["sigma"], job["drop"], job["options"]
    dim = s["dim"]
    f = lambdify_system(s["substituted"][0], dim)
    clean = [integrate(f, x0) for x0 in s["init"][:2]]
    out = {"id": s["id"], "dim": dim, "sigma": sigma, "drop": drop, "variant": job["variant"]}
    if any(c is None for c in clean):
        return {**out, "error": "reference integration failed"}
    t_obs, x_obs = corrupt(clean[0], sigma, drop, seed=1000 * s["id"] + int(100 * sigma) + int(10 * drop))
    start = time.monotonic()
    try:
        reg = ODERegressor(job["checkpoint"], **opts).fit(t_obs, x_obs)
    except Exception as e:  # a crash is a miss, recorded with its message
        return {**out, "error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - start}
    seconds = time.monotonic() - start
    if not reg.equations_:
        return {**out, "r2_recon": -np.inf, "r2_gen": -np.inf, "structure": False, "seconds": seconds, "rhs": None}
    best = reg.equations_[0]
    syms = [sp.Symbol(f"x_{i}") for i in range(dim)]
    g = sp.lambdify((sp.Symbol("t"), syms), best.expressions, "numpy")

    def fg(t, y):
        return np.asarray(np.broadcast_arrays(*g(t, y)), dtype=float).ravel()

    preds = [integrate(fg, x0) for x0 in s["init"][:2]]
    truth = [sp.parse_expr(r, local_dict={v.name: v for v in syms}) for r in s["substituted"][0]]
    key_true = skeleton_key(truth, dim)
    return {**out, "r2_recon": r2(clean[0], preds[0]), "r2_gen": r2(clean[1], preds[1]),
            "structure": key_true is not None and skeleton_key(best.expressions, dim) == key_true,
            "seconds": seconds, "rhs": best.rhs}


def summarise(rows: list[dict]) -> dict:
    def block(rs):
        rec = np.array([r.get("r2_recon", -np.inf) for r in rs], dtype=float)
        gen = np.array([r.get("r2_gen", -np.inf) for r in rs], dtype=float)
        return {"n": len(rs), "recon_acc": float(np.mean(rec > 0.9)), "gen_acc": float(np.mean(gen > 0.9)),
                "median_r2_recon": float(np.median(np.maximum(rec, -1e9))),
                "structure": float(np.mean([bool(r.get("structure")) for r in rs])),
                "seconds_per_system": float(np.mean([r.get("seconds", 0.0) for r in rs]))}

    out: dict = {}
    order = {"transformer": 0, "transformer+refit": 1, "hybrid": 2}
    for key in sorted({(r["variant"], r["sigma"], r["drop"]) for r in rows}, key=lambda k: (k[1], k[2],
                                                                                          order.get(k[0], 9))):
        rs = [r for r in rows if (r["variant"], r["sigma"], r["drop"]) == key]
        name = f"{key[0]} sigma={key[1]} drop={key[2]}"
        out[name] = {"all": block(rs)} | {f"dim{d}": block([r for r in rs if r["dim"] == d])
                                          for d in sorted({r["dim"] for r in rs})}
    return out


def markdown(summary: dict) -> str:
    lines = ["| variant | noise σ | dropped | recon. acc | gen. acc | median R² | structure | s/system |",
             "|---|---|---|---|---|---|---|---|"]
    for name, blocks in summary.items():
        variant, sigma, drop = name.split(" ")
        a = blocks["all"]
        lines.append(f"| {variant} | {sigma.split('=')[1]} | {drop.split('=')[1]} | {a['recon_acc']:.2f} | "
                     f"{a['gen_acc']:.2f} | {_fmt_r2(a['median_r2_recon'])} | {a['structure']:.2f} | "
                     f"{a['seconds_per_system']:.1f} |")
    return "\n".join(lines)


def _fmt_r2(v: float) -> str:
    return "< -1" if v < -1 else f"{v:.3f}"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    rec = [summary[n]["all"]["recon_acc"] for n in names]
    gen = [summary[n]["all"]["gen_acc"] for n in names]
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    ax.bar(xs - 0.2, rec, 0.4, label="reconstruction")
    ax.bar(xs + 0.2, gen, 0.4, label="generalisation")
    ax.set_xticks(xs, [n.replace(" ", "\n") for n in names], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of systems with R² > 0.9")
    ax.legend()
    ax.set_title("ODEBench")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every third system, clean and (0.05, 0.5) only")
    p.add_argument("--checkpoint", default=None, help="default: the default checkpoint")
    p.add_argument("--beam-size", type=int, default=16)
    p.add_argument("--time-budget", type=float, default=10.0)
    p.add_argument("--ablation", action="store_true",
                   help="also run the transformer alone, without and with constant refitting")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from odeformer import checkpoint as ckpt

    checkpoint = str(args.checkpoint or ckpt.default_path())
    systems = load_systems(args.quick)
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    variants = {"hybrid": {}}  # transformer + sparse-regression proposals, constants refitted
    if args.ablation:
        variants = {"transformer": {"sources": ["transformer"], "refit": False},
                    "transformer+refit": {"sources": ["transformer"]}, **variants}
    jobs = [{"system": s, "sigma": sg, "drop": dr, "checkpoint": checkpoint, "variant": v,
             "options": {"beam_size": args.beam_size, "time_budget_s": args.time_budget, **o}}
            for v, o in variants.items() for sg, dr in settings for s in systems]
    from tqdm import tqdm

    rows = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for row in tqdm(pool.imap_unordered(run_one, jobs), total=len(jobs), desc="odebench"):
            rows.append(row)
    summary = summarise(rows)
    table = markdown(summary)
    print(table)
    out = Path(args.out or RESULTS / ("odebench-quick.json" if args.quick else "odebench.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = json.loads((Path(checkpoint) / "config.json").read_text())["weights"]
    rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    out.write_text(json.dumps({"command": " ".join(sys.argv), "checkpoint": checkpoint, "weights_sha256": sha,
                               "summary": summary, "table": table,
                               "rows": sorted(rows, key=lambda r: (r["variant"], r["sigma"], r["drop"], r["id"]))},
                              indent=1))
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
