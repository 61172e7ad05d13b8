"""The smoothing splines' penalty search: ours (``odeformer.derivatives.gcv_penalty``) against scipy's own.

    python bench/splines.py            # ODEBench's 63 systems, clean and sigma 0.05 with half dropped

Every problem's smoothing splines (fitting points and all points, every variable) are fitted both ways,
alternating, in this process: scipy's ``make_smoothing_spline`` searching the penalty itself, and the
same function given the penalty ``gcv_penalty`` found (one eigendecomposition, then the same bounded
search on the same criterion). Prints the mean seconds per problem by number of variables, the ratio,
and the largest difference between the two splines (values and derivatives at the data, relative to
the data's spread). Writes bench/results/splines.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.interpolate import make_smoothing_spline
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import odebench as ob  # noqa: E402

from odeformer.derivatives import smoothing_spline  # noqa: E402
from odeformer.search import Problem  # noqa: E402


def series(sigma: float, drop: float) -> list[tuple[int, list[tuple[np.ndarray, np.ndarray]]]]:
    """Per ODEBench system, the (times, values) series whose splines a fit computes."""
    out = []
    for s in ob.load_systems(False):
        f = ob.lambdify_system(s["substituted"][0], s["dim"])
        clean = ob.integrate(f, s["init"][0], ob.T_EVAL)
        t, x = ob.corrupt(clean, sigma, drop, seed=1000 * s["id"] + int(100 * sigma) + int(10 * drop))
        p = Problem([(t, x)], [f"x_{i}" for i in range(s["dim"])], {"add", "mul"}, True, 30.0)
        pieces = [*p.fit_data, *p.ndata]  # the derivatives' splines and the noise level's
        out.append((s["dim"], [(tt, xx[:, j]) for tt, xx in pieces for j in range(xx.shape[1])]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "splines.json"))
    args = p.parse_args()
    results = {}
    for sigma, drop in [(0.0, 0.0), (0.05, 0.5)]:
        times: dict[str, dict[int, list[float]]] = {"scipy": {}, "ours": {}}
        worst = 0.0
        for dim, pieces in tqdm(series(sigma, drop), desc=f"sigma {sigma:g}, dropped {drop:g}"):
            took = {"scipy": 0.0, "ours": 0.0}
            for t, y in pieces:
                with np.errstate(all="ignore"):
                    start = time.perf_counter()
                    theirs = make_smoothing_spline(t, y)
                    took["scipy"] += time.perf_counter() - start
                    start = time.perf_counter()
                    ours = smoothing_spline(t, y)
                    took["ours"] += time.perf_counter() - start
                spread = float(np.ptp(y)) or 1.0
                worst = max(worst, float(np.max(np.abs(theirs(t) - ours(t)))) / spread,
                            float(np.max(np.abs(theirs.derivative()(t) - ours.derivative()(t))))
                            / spread * float(np.ptp(t)))
            for k in took:
                times[k].setdefault(dim, []).append(took[k])
        row = {str(d): {"scipy_s": float(np.mean(times["scipy"][d])), "ours_s": float(np.mean(times["ours"][d])),
                        "ratio": float(np.mean(times["scipy"][d]) / np.mean(times["ours"][d]))}
               for d in sorted(times["scipy"])}
        results[f"sigma={sigma:g} drop={drop:g}"] = {"per_dim": row, "max_relative_difference": worst}
        print(f"sigma {sigma:g}, dropped {drop:g}: " + ", ".join(
            f"{d} var. {r['scipy_s']:.3f} -> {r['ours_s']:.3f} s ({r['ratio']:.1f}x)" for d, r in row.items())
            + f"; largest difference {worst:.1e} of the spread")
    Path(args.out).write_text(json.dumps({"command": "python bench/splines.py", "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
