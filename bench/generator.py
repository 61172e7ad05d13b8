"""Generator throughput: our batched pipeline vs a plain ``solve_ivp`` loop on the same systems.

    python bench/generator.py            # ~1.5 min on one core, plus the contamination check
    python bench/generator.py --quick    # a few seconds, no contamination check

Measured on one core (one process, numba single-threaded), on the default grammar's training
configuration restricted to 1-2 variables (the issue's target), and on the full default grammar:
valid systems/s, distinct skeletons/s, acceptance rate. The baseline integrates the very same
drawn trajectories with ``scipy.integrate.solve_ivp`` (LSODA, same tolerances, a blow-up event,
right-hand sides compiled to Python lambdas) and applies the same filters. Then the contamination
check: how many ODEBench skeletons appear among N generated systems.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_gen.expressions import from_sympy, python_rhs, var_name  # noqa: E402
from data_gen.grammar import Grammar, default_grammar  # noqa: E402
from data_gen.pipeline import draw_chunk, generate_chunk, stream_chunks  # noqa: E402
from data_gen.sampler import Skeleton  # noqa: E402
from data_gen.simplify import simplify  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def restrict_dims(grammar: Grammar, max_dim: int) -> Grammar:
    data = json.loads(grammar.to_json())
    data["system"]["dim_weights"] = data["system"]["dim_weights"][: max_dim - data["system"]["min_dim"] + 1]
    data["system"]["max_dim"] = max_dim
    return Grammar.from_dict(data, grammar.source + f" (max_dim={max_dim})")


def measure_ours(grammar: Grammar, seconds: float, seed: int) -> dict:
    generate_chunk(grammar, seed + 1000, 0, n_skeletons=4)  # compile / load the numba cache first
    systems = skeletons = attempted = chunks = 0
    rejections: Counter = Counter()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = generate_chunk(grammar, seed, chunks)
        chunks += 1
        systems += len(chunk.systems)
        skeletons += chunk.distinct_skeletons
        rejections.update(chunk.rejections)
    elapsed = time.perf_counter() - start
    attempted = systems + rejections["system_no_valid_trajectory"]
    traj = sum(v for k, v in rejections.items() if k.startswith("traj_"))
    return {
        "chunks": chunks, "seconds": elapsed, "valid_systems": systems, "systems_per_s": systems / elapsed,
        "distinct_skeletons_per_s": skeletons / elapsed, "system_acceptance": systems / max(attempted, 1),
        "trajectory_acceptance": rejections["traj_ok"] / max(traj, 1),
        "rejections": dict(sorted(rejections.items())),
    }


#: a plain loop needs a guard too, or one chattering system stalls it for minutes; this cap is far
#: looser than our integrator's (max_steps x 6 evaluations)
MAX_EVALS = 20_000


class _TooManyEvaluations(Exception):
    pass


def _capped(rhs, limit: int):
    count = 0

    def f(t, y):
        nonlocal count
        count += 1
        if count > limit:
            raise _TooManyEvaluations
        return rhs(t, y)

    return f


def measure_solve_ivp(grammar: Grammar, seed: int, max_trajectories: int) -> dict:
    """Integrate the first trajectories that our pipeline drew for ``seed``, one solve_ivp call each."""
    integ = grammar["integration"]
    grid = grammar["time"]["grid_points"]
    per = grammar["initial_conditions"]["per_system"]
    k = grammar["tree"]["instances_per_skeleton"]
    ok_traj = 0
    valid_systems = 0
    n_traj = 0
    elapsed = 0.0
    index = 0
    while n_traj < max_trajectories:
        draw = draw_chunk(grammar, seed, index)
        index += 1
        for sys_index in range(len(draw.t_end)):
            skel = draw.skeletons[sys_index // k]
            rhs = _capped(python_rhs(skel.components, draw.consts[sys_index // k][sys_index % k]), MAX_EVALS)
            t_end = draw.t_end[sys_index]
            t_eval = np.linspace(0, t_end, grid)
            any_ok = False
            for j in range(sys_index * per, (sys_index + 1) * per):
                y0 = draw.x0[j, : skel.dim]

                def blowup(t, y):
                    return integ["bound"] - np.max(np.abs(y))

                blowup.terminal = True
                start = time.perf_counter()
                with np.errstate(all="ignore"):
                    try:
                        sol = solve_ivp(rhs, (0, t_end), y0, method="LSODA", t_eval=t_eval, rtol=integ["rtol"],
                                        atol=integ["atol"], events=blowup)
                        x = sol.y.T
                        ok = sol.status == 0 and x.shape[0] == grid and np.all(np.isfinite(x))
                    except (ValueError, OverflowError, ZeroDivisionError, _TooManyEvaluations):
                        ok = False
                elapsed += time.perf_counter() - start
                if ok:
                    spread = x.max(axis=0) - x.min(axis=0)
                    ok = bool(np.all(spread > 1e-3 * np.abs(x).max(axis=0) + 1e-8))
                ok_traj += ok
                any_ok |= ok
                n_traj += 1
            valid_systems += any_ok
            if n_traj >= max_trajectories:
                break
    return {"trajectories": n_traj, "seconds": elapsed, "valid_systems": int(valid_systems),
            "systems_per_s": valid_systems / elapsed, "trajectories_per_s": n_traj / elapsed,
            "trajectory_acceptance": float(ok_traj / n_traj)}


def odebench_keys(path: Path) -> dict[str, int]:
    systems = json.loads(path.read_text())["systems"]
    keys = {}
    for s in systems:
        rhs = s["substituted"][0]
        symbols = {sp.Symbol(var_name(i)): var_name(i) for i in range(len(rhs))}
        local = {v: k for k, v in symbols.items()}
        comps = tuple(simplify(from_sympy(sp.parse_expr(c, local_dict=local), symbols)[0]) for c in rhs)
        keys[Skeleton(comps, False).key] = s["id"]
    return keys


def contamination(grammar: Grammar, n: int, seed: int, workers: int) -> dict:
    """How many ODEBench skeletons (up to constants) are among ``n`` generated systems."""
    bench = odebench_keys(ROOT / "bench" / "data" / "odebench.json")
    seen: Counter = Counter()
    total = 0
    for chunk in stream_chunks(grammar, seed, workers=workers):
        for s in chunk.systems[: n - total]:
            seen[s.skeleton.key] += 1
        total = min(n, total + len(chunk.systems))
        if total >= n:
            break
    hits = {bench[key]: seen[key] for key in bench if key in seen}
    n_systems = len(json.loads((ROOT / "bench" / "data" / "odebench.json").read_text())["systems"])
    return {"generated_systems": total, "distinct_skeletons": len(seen), "odebench_systems": n_systems,
            "odebench_distinct_skeletons": len(bench), "odebench_skeletons_found": len(hits),
            "found_ids_with_counts": dict(sorted(hits.items()))}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    labels, ours, base = [], [], []
    for name, r in results["configs"].items():
        labels.append(name)
        ours.append(r["ours"]["systems_per_s"])
        base.append(r["solve_ivp"]["systems_per_s"])
    xs = np.arange(len(labels))
    a.bar(xs - 0.2, ours, 0.4, label="batched DOPRI5 (numba)")
    a.bar(xs + 0.2, base, 0.4, label="solve_ivp loop (LSODA)")
    a.set_xticks(xs, labels)
    a.set_yscale("log")
    a.set_ylabel("valid systems / s / core")
    a.legend()
    a.set_title("generator throughput, one core")
    rej = next(iter(results["configs"].values()))["ours"]["rejections"]
    traj = {k[5:]: v for k, v in rej.items() if k.startswith("traj_")}
    b.barh(list(traj), list(traj.values()))
    b.set_title(f"trajectory outcomes ({next(iter(results['configs']))})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short timings, no contamination check")
    p.add_argument("--seconds", type=float, default=None, help="timing budget for our generator per config")
    p.add_argument("--baseline-trajectories", type=int, default=None)
    p.add_argument("--contamination", type=int, default=None, help="systems for the contamination check")
    p.add_argument("--workers", type=int, default=2, help="processes for the contamination check only")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--out", default=str(RESULTS / "generator.json"))
    args = p.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    n_base = args.baseline_trajectories or (150 if args.quick else 1500)
    n_cont = args.contamination if args.contamination is not None else (0 if args.quick else 100_000)

    full = default_grammar()
    configs = {"1-2 variables": restrict_dims(full, 2), "default (1-4 variables)": full}
    results = {"configs": {}, "command": " ".join(sys.argv)}
    for name, g in configs.items():
        ours = measure_ours(g, seconds, args.seed)
        base = measure_solve_ivp(g, args.seed, n_base)
        ratio = ours["systems_per_s"] / base["systems_per_s"]
        results["configs"][name] = {"ours": ours, "solve_ivp": base, "ratio": ratio}
        print(f"[{name}] ours: {ours['systems_per_s']:.0f} valid systems/s/core, "
              f"{ours['distinct_skeletons_per_s']:.0f} distinct skeletons/s, system acceptance "
              f"{ours['system_acceptance']:.1%} (trajectories {ours['trajectory_acceptance']:.1%}); "
              f"solve_ivp loop: {base['systems_per_s']:.0f} valid systems/s "
              f"({base['trajectories_per_s']:.0f} trajectories/s)  ->  ratio {ratio:.1f}x")
    if n_cont:
        c = contamination(full, n_cont, args.seed + 1, args.workers)
        results["contamination"] = c
        print(f"contamination: {c['odebench_skeletons_found']} of the {c['odebench_distinct_skeletons']} distinct "
              f"skeletons of the {c['odebench_systems']} ODEBench systems are among "
              f"{c['generated_systems']} generated systems ({c['distinct_skeletons']} distinct skeletons): "
              f"ids {c['found_ids_with_counts']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
