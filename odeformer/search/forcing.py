"""Proposal source: periodic forcing ``A*sin(w*t + phi)`` with the frequency found from the data.

The derivative estimates are first explained by the state alone (least squares on the quadratic and
trigonometric library); a Lomb-Scargle periodogram of what is left (irregular sampling is fine)
gives the frequencies of the strongest peaks; the phase of each comes from a linear fit. Each becomes
one term whose w and phi the refit then tunes on the trajectories, so the law found does not depend on
how long the recording is."""

from __future__ import annotations

import numpy as np
from scipy.signal import lombscargle

from data_gen.expressions import CONST, TIME
from odeformer.search.library import Term, polynomial_terms, unique
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal
from odeformer.search.regression import library_matrix
from odeformer.search.sparse import LibrarySource

#: a peak counts when the normalised periodogram power (share of the residual's variance it explains)
#: reaches this
MIN_POWER = 0.4
MAX_PEAKS = 2


def find_frequencies(t: np.ndarray, residual: np.ndarray, max_peaks: int = MAX_PEAKS) -> list[float]:
    """Angular frequencies of the strongest periodogram peaks of ``residual`` (n, d), strongest first."""
    span = float(np.ptp(t))
    dt = float(np.median(np.diff(np.sort(t))))
    if span <= 0 or dt <= 0:
        return []
    lo, hi = 2 * np.pi / (1.5 * span), 0.8 * np.pi / dt
    if hi <= lo:
        return []
    grid = np.arange(lo, hi, 2 * np.pi / (20 * span))
    power = np.zeros(len(grid))
    for j in range(residual.shape[1]):
        r = residual[:, j]
        if np.ptp(r) > 0:
            power = np.maximum(power, lombscargle(t, r - r.mean(), grid, normalize=True))
    peaks = [k for k in range(1, len(grid) - 1) if power[k] >= power[k - 1] and power[k] >= power[k + 1]
             and power[k] >= MIN_POWER]
    peaks.sort(key=lambda k: -power[k])
    out = []
    for k in peaks[:max_peaks]:
        a, b, c = power[k - 1], power[k], power[k + 1]
        shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
        out.append(float(grid[k] + shift * (grid[1] - grid[0])))
    return out


def forcing_terms(problem: Problem, state_terms: list[Term]) -> list[Term]:
    t, x = problem.fit_points
    dxs = problem.derivatives["spline"]
    theta, _ = library_matrix(state_terms, x, t)
    coef, *_ = np.linalg.lstsq(theta, dxs, rcond=None)
    residual = dxs - theta @ coef
    out = []
    for w in find_frequencies(t, residual):
        basis = np.stack([np.sin(w * t), np.cos(w * t)], axis=1)
        ab, *_ = np.linalg.lstsq(basis, residual, rcond=None)
        # the phase of the component where the forcing is strongest
        j = int(np.argmax(np.hypot(ab[0], ab[1])))
        phi = float(np.arctan2(ab[1, j], ab[0, j]))
        out.append(Term(("sin", ("add", ("mul", CONST, TIME), CONST)), (w, phi)))
    return out


class Forcing(LibrarySource):
    name = "forcing"
    scanned = True

    def libraries(self, problem: Problem, earlier: list[Proposal]) -> dict[str, list[Term]]:
        ops = problem.operators
        if not problem.use_time or not {"sin", "add", "mul"} <= ops:
            return {}
        d = problem.dim
        state = unique(polynomial_terms(d, ops, False, degree=2)
                       + [Term((op, f"x_{i}")) for op in ("sin", "cos") for i in range(d)], ops)
        forcing = forcing_terms(problem, state)
        if not forcing:
            return {}
        linear = polynomial_terms(d, ops, False, degree=1)
        return {"linear+forcing": linear + forcing, "state+forcing": state + forcing}
