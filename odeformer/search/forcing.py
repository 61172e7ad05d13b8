"""Proposal source: periodic forcing ``A*sin(w*t + phi)`` with the frequency found from the data.

For every trial frequency ``w`` on a grid, the derivative estimates are regressed on the state terms
(quadratic, trigonometric and cubic library) together with ``sin(w*t)`` and ``cos(w*t)``; the share of what
the state terms leave unexplained that the pair explains is the periodogram. This is a Lomb-Scargle
periodogram (irregular sampling is fine) with the state terms as nuisance regressors: fitting the state
first and taking the periodogram of the residual instead (scipy's ``lombscargle``) misses the forcing of
an oscillator driven near steady state, whose sin(w*t) is then almost a combination of the state
itself.
The phase of each peak comes from the same fit. Each peak becomes one term whose w and phi the refit
then tunes on the trajectories, so the law found does not depend on how long the recording is."""

from __future__ import annotations

import numpy as np

from data_gen.expressions import CONST, TIME
from odeformer.search.library import Term, polynomial_terms, unique
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal
from odeformer.search.regression import library_matrix
from odeformer.search.sparse import LibrarySource

#: a peak counts when the share of the unexplained derivative variance the pair explains reaches this:
#: on noisy data an autonomous oscillator's smoothing errors repeat with its own period and reach 0.2-0.4
#: (Lotka-Volterra at 5% noise), real forcing at that noise 0.6-1
MIN_POWER = 0.5
MAX_PEAKS = 3


def find_frequencies(t: np.ndarray, dxs: np.ndarray, nuisance: np.ndarray,
                     max_peaks: int = MAX_PEAKS) -> list[tuple[float, float]]:
    """(angular frequency, phase) of the strongest peaks of the periodogram of ``dxs`` (n, d) with the
    columns of ``nuisance`` (n, m) fitted alongside, strongest first; the phase is that of the component
    the forcing moves most."""
    span = float(np.ptp(t))
    dt = float(np.median(np.diff(np.sort(t))))
    if span <= 0 or dt <= 0:
        return []
    lo, hi = 2 * np.pi / (1.5 * span), 0.8 * np.pi / dt
    if hi <= lo:
        return []
    grid = np.arange(lo, hi, 2 * np.pi / (20 * span))
    q, _ = np.linalg.qr(nuisance)
    residual = dxs - q @ (q.T @ dxs)
    sin, cos = np.sin(np.outer(t, grid)), np.cos(np.outer(t, grid))
    sin, cos = sin - q @ (q.T @ sin), cos - q @ (q.T @ cos)
    ss, cc, sc = np.sum(sin * sin, 0), np.sum(cos * cos, 0), np.sum(sin * cos, 0)
    det = np.maximum(ss * cc - sc**2, 1e-300)
    # each component's share weighted by how much of it is unexplained, so a component the state
    # already explains to rounding error does not vote
    scale = np.maximum(dxs.var(axis=0), 1e-300) * len(t)
    explained, unexplained = np.zeros(len(grid)), 0.0
    amplitudes = []
    for j in range(dxs.shape[1]):
        a, b = sin.T @ residual[:, j], cos.T @ residual[:, j]
        explained += (cc * a * a - 2 * sc * a * b + ss * b * b) / det / scale[j]
        unexplained += float(residual[:, j] @ residual[:, j]) / scale[j]
        # least-squares amplitudes of sin and cos at every frequency
        amplitudes.append(((cc * a - sc * b) / det, (ss * b - sc * a) / det))
    if unexplained <= 0:
        return []
    power = explained / unexplained
    peaks = [k for k in range(1, len(grid) - 1) if power[k] >= power[k - 1] and power[k] >= power[k + 1]
             and power[k] >= MIN_POWER]
    peaks.sort(key=lambda k: -power[k])
    out = []
    for k in peaks[:max_peaks]:
        j = int(np.argmax([np.hypot(sa[k], ca[k]) * np.sqrt(scale[i]) for i, (sa, ca) in enumerate(amplitudes)]))
        sa, ca = amplitudes[j][0][k], amplitudes[j][1][k]
        a, b, c = power[k - 1], power[k], power[k + 1]
        shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
        out.append((float(grid[k] + shift * (grid[1] - grid[0])), float(np.arctan2(ca, sa))))
    return out


def forcing_terms(problem: Problem, state_terms: list[Term]) -> list[Term]:
    t, x = problem.fit_points
    theta, _ = library_matrix(state_terms, x, t)
    found = find_frequencies(t, problem.derivatives[problem.best_estimator], theta)
    return [Term(("sin", ("add", ("mul", CONST, TIME), CONST)), (w, phi)) for w, phi in found]


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
        # cubic: a driven oscillator's restoring force is often x - x**3 (Duffing), which the quadratic
        # and trigonometric terms only imitate (and then bend the frequency found)
        cubic = unique(polynomial_terms(d, ops, False, degree=3), ops)
        forcing = forcing_terms(problem, unique(state + cubic, ops))
        if not forcing:
            return {}
        linear = polynomial_terms(d, ops, False, degree=1)
        return {"linear+forcing": linear + forcing, "state+forcing": state + forcing, "cubic+forcing": cubic + forcing}
