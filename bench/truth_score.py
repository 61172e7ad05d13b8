"""Is a miss the search's fault or the data's? The true law, refitted, scored beside the answer.

    python bench/truth_score.py                      # the systems that miss generalisation at sigma 0.05, half dropped
    python bench/truth_score.py --setting 0:0 --ids 26,30

For each ODEBench system: the data of `bench/odebench.py`'s protocol at the setting, the default fit, and
the true equations (ODEBench's, converted to the fit's normalised frame, their coefficients of exactly
+-1 fixed as the search writes them) refitted from their true constants by the same refit and scored by
the same criterion. If the answer scores higher than the truth,
no search would have returned the truth: the data, under this criterion, prefer the answer. If the truth
scores higher, the search missed a better candidate. Writes bench/results/truth-score.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import sympy as sp
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import odebench as ob  # noqa: E402

from data_gen.expressions import from_sympy, var_name  # noqa: E402
from odeformer import ODERegressor  # noqa: E402
from odeformer.search import Problem  # noqa: E402
from odeformer.search.candidate import evaluate_fit  # noqa: E402
from odeformer.search.refit import refit  # noqa: E402
from odeformer.search.units import unit_coefficients  # noqa: E402


def truth_score(system: dict, t, x, reg: ODERegressor) -> float | None:
    """The criterion's score of the true law on (t, x), its constants refitted from the true values."""
    dim = system["dim"]
    problem = Problem([(t, x)], [var_name(i) for i in range(dim)], reg.problem_.operators, True, 60.0)
    symbols = sp.symbols(f"x_0:{dim}")
    names = {s: var_name(i) for i, s in enumerate(symbols)}
    xs, ts = problem.norm.x_scale, problem.norm.t_scale
    scaled = {s: s * float(xs[i]) for i, s in enumerate(symbols)}
    components, constants = [], []
    for i, law in enumerate(ob.parse_system(system["substituted"][0], dim)):
        tree, consts = from_sympy(sp.expand(law.xreplace(scaled) / float(xs[i]) / ts), names)
        components.append(tree)
        constants += consts
    # written as the search writes laws: a coefficient of exactly +-1 in the user's units is no constant
    fixed = unit_coefficients(components, constants, problem.norm, tol=1e-9)
    if fixed is not None:
        components, constants = fixed
    fit = refit(tuple(components), constants, problem.fit_data, deadline=problem.deadline,
                derivatives=problem.derivatives[problem.best_estimator],
                weights=problem.derivative_weights[problem.best_estimator], derivative_stage=False,
                fit_initial=not problem.clean)
    cand = evaluate_fit(problem, fit, "truth")
    return None if cand is None else float(cand.score)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="0.05:0.5", help="SIGMA:DROP")
    p.add_argument("--ids", default=None, help="comma-separated ODEBench ids (default: the generalisation misses "
                   "at this setting in bench/results/odebench-full.json)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "truth-score.json"))
    args = p.parse_args()
    sigma, drop = (float(v) for v in args.setting.split(":"))
    systems = {s["id"]: s for s in ob.load_systems(False)}
    if args.ids:
        ids = [int(v) for v in args.ids.split(",")]
    else:
        rows = json.loads((ROOT / "bench" / "results" / "odebench-full.json").read_text())["rows"]
        ids = [r["id"] for r in rows if r["sigma"] == sigma and r["drop"] == drop and not (r["r2_gen"] or -1) > 0.9]
    out = []
    for sid in tqdm(ids, desc="truth score"):
        s = systems[sid]
        f = ob.lambdify_system(s["substituted"][0], s["dim"])
        clean = ob.integrate(f, s["init"][0], ob.T_EVAL)
        t, x = ob.corrupt(clean, sigma, drop, seed=1000 * sid + int(100 * sigma) + int(10 * drop))
        reg = ODERegressor().fit(t, x)
        best = reg.equations_[0]
        truth = truth_score(s, t, x, reg)
        out.append({"id": sid, "dim": s["dim"], "answer_score": round(float(best.score), 2), "source": best.source,
                    "truth_score": None if truth is None else round(truth, 2)})
    print("| id | dim | answer's score (source) | truth's score | truth − answer (nats) |")
    print("|---|---|---|---|---|")
    for r in out:
        gap = "—" if r["truth_score"] is None else f"{r['truth_score'] - r['answer_score']:+.1f}"
        print(f"| {r['id']} | {r['dim']} | {r['answer_score']:.1f} ({r['source']}) | {r['truth_score']} | {gap} |")
    behind = sum(r["truth_score"] is not None and r["truth_score"] <= r["answer_score"] for r in out)
    print(f"the truth scores no higher than the answer for {behind} of {len(out)} systems "
          f"(sigma {sigma}, dropped {drop})")
    Path(args.out).write_text(json.dumps({"setting": [sigma, drop], "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
