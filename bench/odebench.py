"""ODEBench with the protocol of DESIGN.md 5 (63 systems of Strogatz and others, 1-4 variables).

    python bench/odebench.py --quick                 # 21 systems, clean and noisy, a few minutes
    python bench/odebench.py                         # all 63 systems, the full corruption grid
    python bench/odebench.py --checkpoint PATH --ablation
    python bench/odebench.py --suite forced          # 14 textbook non-autonomous systems
    python bench/odebench.py --suite indist --quick  # systems of the default grammar (bench/make_indist.py)
    python bench/odebench.py --clean-only --no-baseline --workers 1 --out bench/results/odebench-ambiguity.json
    python bench/odebench.py --quick --no-baseline --edit-prior   # the transformer reorders the climb's edits
    python bench/odebench.py --no-baseline --ids 8,58 --setting 0.05:0.5   # some systems at one setting

For each system: integrate the clean trajectories from its two initial conditions on t in [0, 10]
(LSODA, rtol 1e-5, atol 1e-7, 150 points); corrupt the first (multiplicative noise sigma, a dropped
share of the points, seeded); fit; re-integrate the top candidate from both initial conditions; R^2
(variance weighted) against the clean trajectories. Reported per setting: reconstruction and
generalisation accuracy (share of systems with R^2 > 0.9), median R^2, exact-structure rate (same
skeleton up to constants) and seconds per system, overall and per dimension; for our search also the
ambiguity flag against generalisation, and how often the answer or one of its rivals (re-integrated
from the second initial condition too) generalises (docs/ambiguity.md). The benchmark file is
read here only; nothing in the generator or the model reads it.

The PySINDy baseline (bench/sindy_baseline.py, the optional ``bench`` extra) runs in the same job on
the same corrupted data, with two derivative estimates, scored by the same code; ``--no-baseline``
leaves it out. Ratios ours/theirs are printed per setting.
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

SUITES = {"odebench": ROOT / "bench" / "data" / "odebench.json", "forced": ROOT / "bench" / "data" / "forced.json",
          "indist": ROOT / "bench" / "data" / "in_distribution.json"}
BASELINES = ("pysindy-fd", "pysindy-spline")
OURS = "hybrid"
INDIST_QUICK = 60  # systems of the in-distribution set in --quick mode
RESULTS = ROOT / "bench" / "results"
T_EVAL = np.linspace(0.0, 10.0, 150)
SETTINGS = [(0.0, 0.0), (0.01, 0.0), (0.05, 0.0), (0.0, 0.5), (0.01, 0.5), (0.05, 0.5)]
QUICK_SETTINGS = [(0.0, 0.0), (0.05, 0.5)]


def load_systems(quick: bool, suite: str = "odebench") -> list[dict]:
    systems = json.loads(SUITES[suite].read_text())["systems"]
    if not quick or suite == "forced":
        return systems
    return systems[:INDIST_QUICK] if suite == "indist" else systems[::3]


def t_eval_of(system: dict) -> np.ndarray:
    """150 points on [0, t_end] (ODEBench and the forced set: t_end = 10)."""
    return np.linspace(0.0, float(system.get("t_end", 10.0)), 150)


def parse_system(rhs: list[str], dim: int) -> list[sp.Expr]:
    """Benchmark right-hand sides read with an explicit symbol table (x_0.., t)."""
    table = {f"x_{i}": sp.Symbol(f"x_{i}") for i in range(dim)} | {"t": sp.Symbol("t")}
    table |= {name: getattr(sp, name) for name in ("sin", "cos", "tan", "exp", "log", "sqrt", "Abs", "sign", "asin",
                                                   "acos", "atan", "sinh", "cosh", "tanh", "asinh", "atanh",
                                                   "cot", "sec", "csc")}
    return [sp.parse_expr(r, local_dict=table, global_dict={"Integer": sp.Integer, "Float": sp.Float,
                                                            "Rational": sp.Rational, "Symbol": sp.Symbol}) for r in rhs]


def lambdify_exprs(exprs: list[sp.Expr], dim: int):
    syms = [sp.Symbol(f"x_{i}") for i in range(dim)]
    f = sp.lambdify((sp.Symbol("t"), syms), exprs, "numpy")
    return lambda t, y: np.asarray(np.broadcast_arrays(*f(t, y)), dtype=float).ravel()


def lambdify_system(rhs: list[str], dim: int):
    return lambdify_exprs(parse_system(rhs, dim), dim)


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


def corrupt(x: np.ndarray, sigma: float, drop: float, seed: int,
            t_eval: np.ndarray = T_EVAL) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(t_eval), size=int(round(len(t_eval) * (1 - drop))), replace=False))
    xs = x[keep] * (1.0 + sigma * rng.standard_normal(x[keep].shape))
    return t_eval[keep], xs


def skeleton_key(exprs: list[sp.Expr], dim: int) -> str | None:
    from data_gen.expressions import NotExpressible, from_sympy
    from data_gen.sampler import Skeleton
    from data_gen.simplify import simplify

    names = {sp.Symbol(f"x_{i}"): f"x_{i}" for i in range(dim)} | {sp.Symbol("t"): "t"}
    try:
        # expanded, so that x*(1 - x) and x - x**2 count as the same structure
        return Skeleton(tuple(simplify(from_sympy(sp.expand(e), names)[0]) for e in exprs), False).key
    except (NotExpressible, ValueError, TypeError):
        return None


def run_one(job: dict) -> dict:
    """Fit one (system, setting, variant) and score it. Runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    s, sigma, drop, variant = job["system"], job["sigma"], job["drop"], job["variant"]
    dim = s["dim"]
    t_eval = t_eval_of(s)
    out = {"id": s["id"], "dim": dim, "sigma": sigma, "drop": drop, "variant": variant}
    try:
        truth = parse_system(s["substituted"][0], dim)
    except (SyntaxError, TypeError, ValueError, NameError) as e:  # a bad benchmark entry is reported, not fatal
        return {**out, "error": f"cannot parse the benchmark's right-hand side: {e}"}
    f = lambdify_exprs(truth, dim)
    clean = [integrate(f, x0, t_eval) for x0 in s["init"][:2]]
    if any(c is None for c in clean):
        return {**out, "error": "reference integration failed"}
    t_obs, x_obs = corrupt(clean[0], sigma, drop, seed=1000 * s["id"] + int(100 * sigma) + int(10 * drop),
                           t_eval=t_eval)
    start = time.monotonic()
    try:
        if variant in BASELINES:
            from sindy_baseline import fit_sindy

            time_input = any(sp.Symbol("t") in e.free_symbols for e in truth)  # told, as it would be by a user
            exprs = fit_sindy(t_obs, x_obs, variant.split("-")[1], time_input)
            rhs = [str(e) for e in exprs]
        else:
            from odeformer import ODERegressor

            reg = ODERegressor(job["checkpoint"], **job["options"]).fit(t_obs, x_obs)
            exprs, rhs = (reg.equations_[0].expressions, reg.equations_[0].rhs) if reg.equations_ else (None, None)
            out["ambiguous"] = bool(reg.ambiguous_)  # docs/ambiguity.md
            out["rivals"] = [r + 1 for r in reg.rivals_]
            rival_exprs = [reg.equations_[r].expressions for r in reg.rivals_]
    except Exception as e:  # a crash is a miss, recorded with its message
        return {**out, "error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - start}
    seconds = time.monotonic() - start
    if exprs is None:
        return {**out, "r2_recon": -np.inf, "r2_gen": -np.inf, "structure": False, "seconds": seconds, "rhs": None}
    g = lambdify_exprs(exprs, dim)
    preds = [integrate(g, x0, t_eval) for x0 in s["init"][:2]]
    key_true = skeleton_key(truth, dim)
    if "rivals" in out:
        # does one of the laws the data cannot separate from the answer generalise? (the rivals' futures)
        out["r2_gen_rivals"] = [r2(clean[1], integrate(lambdify_exprs(e, dim), s["init"][1], t_eval))
                                for e in rival_exprs]
    return {**out, "r2_recon": r2(clean[0], preds[0]), "r2_gen": r2(clean[1], preds[1]),
            "structure": key_true is not None and skeleton_key(exprs, dim) == key_true,
            "seconds": seconds, "rhs": rhs,
            # for the gallery plot only (not written out)
            "_plot": {"t": t_eval, "clean": clean[0], "t_obs": t_obs, "x_obs": x_obs, "pred": preds[0]}}


def summarise(rows: list[dict]) -> dict:
    def block(rs):
        rec = np.array([r.get("r2_recon", -np.inf) for r in rs], dtype=float)
        gen = np.array([r.get("r2_gen", -np.inf) for r in rs], dtype=float)
        return {"n": len(rs), "recon_acc": float(np.mean(rec > 0.9)), "gen_acc": float(np.mean(gen > 0.9)),
                "median_r2_recon": float(np.median(np.maximum(rec, -1e9))),
                "structure": float(np.mean([bool(r.get("structure")) for r in rs])),
                "seconds_per_system": float(np.mean([r.get("seconds", 0.0) for r in rs]))} | ambiguity(rs)

    out: dict = {}
    order = {"transformer": 0, "transformer+refit": 1, "hybrid": 2, "pysindy-fd": 3, "pysindy-spline": 4}
    for key in sorted({(r["variant"], r["sigma"], r["drop"]) for r in rows}, key=lambda k: (k[1], k[2],
                                                                                          order.get(k[0], 9))):
        rs = [r for r in rows if (r["variant"], r["sigma"], r["drop"]) == key]
        name = f"{key[0]} sigma={key[1]} drop={key[2]}"
        out[name] = {"all": block(rs)} | {f"dim{d}": block([r for r in rs if r["dim"] == d])
                                          for d in sorted({r["dim"] for r in rs})}
    return out


def ambiguity(rs: list[dict]) -> dict:
    """The ambiguity flag (docs/ambiguity.md) against generalisation: the share of systems flagged, and
    generalisation accuracy and mean R^2 (each clipped at -1) among flagged and unflagged systems (only
    for variants that report the flag)."""
    rs = [r for r in rs if "ambiguous" in r]
    if not rs:
        return {}
    out: dict = {"flagged_share": float(np.mean([r["ambiguous"] for r in rs]))}
    # the answer or one of its rivals generalises: the law is among what the fit returns as undecided
    out["gen_acc_best_or_rival"] = float(np.mean([max([r.get("r2_gen", -np.inf), *r.get("r2_gen_rivals", [])]) > 0.9
                                                  for r in rs]))
    for name, flag in (("flagged", True), ("unflagged", False)):
        gen = np.array([r.get("r2_gen", -np.inf) for r in rs if r["ambiguous"] == flag], dtype=float)
        out[f"n_{name}"] = len(gen)
        out[f"gen_acc_{name}"] = float(np.mean(gen > 0.9)) if len(gen) else None
        clipped = np.clip(np.nan_to_num(gen, nan=-1.0), -1, 1)
        out[f"mean_r2_gen_{name}"] = float(np.mean(clipped)) if len(gen) else None
    return out


def markdown_ambiguity(summary: dict) -> str:
    """Per setting: share flagged ambiguous; generalisation accuracy (and mean R^2 clipped at -1) among
    flagged and unflagged systems; generalisation accuracy of the answer or one of its rivals."""
    lines = ["| variant | noise σ | dropped | flagged | gen. acc flagged (n) | gen. acc unflagged (n) | "
             "mean gen. R² flagged / unflagged | gen. acc answer or a rival |", "|---|---|---|---|---|---|---|---|"]
    for name, blocks in summary.items():
        a = blocks["all"]
        if "flagged_share" not in a:
            continue
        variant, sigma, drop = name.split(" ")

        def f(v):
            return "—" if v is None else f"{v:.2f}"
        lines.append(f"| {variant} | {sigma.split('=')[1]} | {drop.split('=')[1]} | {a['flagged_share']:.2f} | "
                     f"{f(a['gen_acc_flagged'])} ({a['n_flagged']}) | "
                     f"{f(a['gen_acc_unflagged'])} ({a['n_unflagged']}) | "
                     f"{f(a['mean_r2_gen_flagged'])} / {f(a['mean_r2_gen_unflagged'])} | "
                     f"{f(a.get('gen_acc_best_or_rival'))} |")
    return "\n".join(lines) if len(lines) > 2 else ""


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


def markdown_by_dim(summary: dict) -> str:
    """Reconstruction / generalisation accuracy per number of variables, one row per variant and setting."""
    dims = sorted({k for blocks in summary.values() for k in blocks if k != "all"})
    lines = ["| variant | noise σ | dropped | " + " | ".join(f"{d[3:]} var. (n)" for d in dims) + " |",
             "|---|---|---|" + "---|" * len(dims)]
    for name, blocks in summary.items():
        variant, sigma, drop = name.split(" ")
        cells = [f"{blocks[d]['recon_acc']:.2f} / {blocks[d]['gen_acc']:.2f} ({blocks[d]['n']})" if d in blocks
                 else "—" for d in dims]
        lines.append(f"| {variant} | {sigma.split('=')[1]} | {drop.split('=')[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite(v):
    """JSON has no infinities or NaN: None instead."""
    return None if isinstance(v, float) and not np.isfinite(v) else v


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


def ratios(summary: dict) -> str:
    """Ours (hybrid) over each baseline, per setting: reconstruction and generalisation accuracy."""
    lines = []
    for name, blocks in summary.items():
        variant, sigma, drop = name.split(" ")
        if variant != OURS:
            continue
        for base in BASELINES:
            other = summary.get(f"{base} {sigma} {drop}")
            if other:
                a, b = blocks["all"], other["all"]
                lines.append(f"{sigma} {drop}: ours/{base} recon {_ratio(a['recon_acc'], b['recon_acc'])}, "
                             f"gen {_ratio(a['gen_acc'], b['gen_acc'])}")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a:.2f}/{b:.2f} = " + (f"{a / b:.2f}x" if b > 0 else ("inf" if a > 0 else "n/a"))


def gallery(rows: list[dict], path: Path, n: int = 8) -> None:
    """Fitted trajectories for the first ``n`` systems of the noisiest setting: clean, observed, ours
    and the spline-derivative baseline, first variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = max({(r["sigma"], r["drop"]) for r in rows})
    by = {(r["id"], r["variant"]): r for r in rows if (r["sigma"], r["drop"]) == setting and "_plot" in r}
    ids = sorted({i for i, v in by if v == OURS})[:n]
    if not ids:
        return
    cols = 4
    fig, axes = plt.subplots(-(-len(ids) // cols), cols, figsize=(4 * cols, 2.8 * -(-len(ids) // cols)),
                             squeeze=False)
    for ax, sid in zip(axes.ravel(), ids):
        ours = by[(sid, OURS)]["_plot"]
        ax.plot(ours["t"], ours["clean"][:, 0], "k-", lw=1, label="clean")
        ax.plot(ours["t_obs"], ours["x_obs"][:, 0], ".", color="0.6", ms=3, label="observed")
        if ours["pred"] is not None:
            ax.plot(ours["t"], ours["pred"][:, 0], "C0--", lw=1.5, label="ours")
        base = by.get((sid, "pysindy-spline"))
        if base and base["_plot"]["pred"] is not None:
            ax.plot(ours["t"], base["_plot"]["pred"][:, 0], "C3:", lw=1.5,
                    label="PySINDy (spline)")
        lo, hi = ours["clean"][:, 0].min(), ours["clean"][:, 0].max()
        pad = 0.5 * (hi - lo) + 1e-6
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(f"system {sid}", fontsize=9)
    for ax in axes.ravel()[len(ids):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"x_0 of fitted systems, noise σ={setting[0]}, dropped {setting[1]:.0%}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _setting(text: str) -> tuple[float, float]:
    try:
        sigma, drop = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SIGMA:DROP, e.g. 0.05:0.5") from None
    return sigma, drop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="odebench")
    p.add_argument("--quick", action="store_true",
                   help="clean and (0.05, 0.5) only; ODEBench: every third system; indist: the first 60")
    p.add_argument("--checkpoint", default=None, help="default: the default checkpoint")
    p.add_argument("--beam-size", type=int, default=16)
    p.add_argument("--time-budget", type=float, default=10.0)
    p.add_argument("--ablation", action="store_true",
                   help="also run the transformer alone, without and with constant refitting")
    p.add_argument("--clean-only", action="store_true", help="the clean setting only (sigma 0, nothing dropped)")
    p.add_argument("--setting", action="append", metavar="SIGMA:DROP", type=_setting,
                   help="only this setting, e.g. 0.05:0.5 (repeatable)")
    p.add_argument("--no-baseline", action="store_true", help="leave PySINDy out")
    p.add_argument("--no-ours", action="store_true", help="run the baseline only")
    p.add_argument("--edit-prior", action="store_true",
                   help="the transformer's skeleton log-probability reorders the local search's edits")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ids", default=None, help="comma-separated system ids: these systems of the suite only")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from odeformer import checkpoint as ckpt

    checkpoint = str(args.checkpoint or ckpt.default_path())
    systems = load_systems(args.quick, args.suite)
    if args.ids:
        wanted = {int(v) for v in args.ids.split(",")}
        systems = [s for s in systems if s["id"] in wanted]
        if not systems:
            p.error(f"no system of the suite has an id in {args.ids}")
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    if args.clean_only:
        settings = [(0.0, 0.0)]
    if args.setting:
        settings = args.setting
    variants = {} if args.no_ours else {OURS: {}}  # transformer + sparse-regression proposals, constants refitted
    if args.ablation and not args.no_ours:
        variants = {"transformer": {"sources": ["transformer"], "refit": False},
                    "transformer+refit": {"sources": ["transformer"]}, **variants}
    if not args.no_baseline:
        try:
            import pysindy  # noqa: F401

            variants |= {b: {} for b in BASELINES}
        except ImportError:
            print("PySINDy is not installed (pip install -e .[bench]): baseline left out")
    jobs = [{"system": s, "sigma": sg, "drop": dr, "checkpoint": checkpoint, "variant": v,
             "options": {"beam_size": args.beam_size, "time_budget_s": args.time_budget,
                         **({"edit_prior": True} if args.edit_prior else {}), **o}}
            for v, o in variants.items() for sg, dr in settings for s in systems]
    from tqdm import tqdm

    rows = []
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=50) as pool:
        for row in tqdm(pool.imap_unordered(run_one, jobs), total=len(jobs), desc=args.suite):
            rows.append(row)
    summary = summarise(rows)
    table = markdown(summary)
    print(table)
    by_dim = markdown_by_dim(summary)
    print(by_dim)
    versus = ratios(summary)
    if versus:
        print(versus)
    flags = markdown_ambiguity(summary)
    if flags:
        print(flags)
    name = args.suite + ("-quick" if args.quick else "")
    out = Path(args.out or RESULTS / f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = json.loads((Path(checkpoint) / "config.json").read_text())["weights"]
    gallery(rows, out.with_name(out.stem + "-gallery.png"))
    rows = [{k: [_finite(u) for u in v] if k == "r2_gen_rivals" else _finite(v) for k, v in r.items() if k != "_plot"}
            for r in rows]
    out.write_text(json.dumps({"command": " ".join(["python", "bench/odebench.py", *sys.argv[1:]]),
                               "checkpoint": checkpoint, "weights_sha256": sha, "summary": summary, "table": table,
                               "table_by_dim": by_dim,
                               "ratios": versus, "table_ambiguity": flags,
                               "rows": sorted(rows, key=lambda r: (r["variant"], r["sigma"], r["drop"], r["id"]))},
                              indent=1))
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.png')} and {out.with_name(out.stem + '-gallery.png')}")


if __name__ == "__main__":
    main()
