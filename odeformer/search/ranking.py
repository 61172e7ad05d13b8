"""Ranking: a noise-aware Bayesian information criterion over the observed points.

For a candidate re-integrated from each trajectory's first observed state (on noisy data from the
initial state fitted with its constants, which pays a Gaussian prior around the observed first state:
``start_cost``), with
``n`` observed points per variable (the constants were fitted without the held-out fifth of them),
residual mean square ``MSE_j`` for variable ``j`` (normalised frame; on noisy data each squared
residual weighted by its point's noise, ``Problem.point_weights``: the Gaussian likelihood of noise
that grows with the signal), ``k`` free constants and ``N = n * d`` residuals in all:

    criterion = sum_j n * log(MSE_j + floor_j) + (k + NODE_COST * nodes + TIME_COST * t_terms) * log(N)

``floor_j`` is a tenth of the measurement-noise variance estimated from the data (the residuals of a
smoothing spline chosen by generalised cross-validation; ``Problem.noise_var``), and at least
``(1e-3 * std_j)**2`` (the variable's standard deviation), on noisy data both in the weighted
residuals' units (``Problem.weighted_share``): nothing is rewarded for fitting below the noise, or below
0.1% of the standard deviation, which approximants with many terms reach on one trajectory and then
fail on the next. On clean data an
exact law (MSE at the floor) still beats an approximant with 1% error (MSE 1e-4 of the spread squared)
by about n*log(50) ~ 590 nats for 150 points, far beyond what a constant costs (log N ~ 5
nats). A node costs a fifth of a constant, so among equally good fits the smaller tree wins.
Logarithms per variable make it independent of units. Each occurrence of ``t`` costs two constants
more (``TIME_COST``), a prior against explicit time dependence. ``score`` (contract 3.2) is
``-criterion``: higher is better, and differences are in nats (natural-log likelihood units).
"""

from __future__ import annotations

import numpy as np

from odeformer.search.problem import Problem
from odeformer.search.refit import simulate_many

#: a node of the expression costs this share of a constant: among equally good fits, the smaller
#: tree wins
NODE_COST = 0.2
#: each occurrence of ``t`` costs as much as this many more constants: a prior against explicit time
#: dependence, because over one trajectory ``a + b*t`` imitates any trend and fails from the next start;
#: a real forcing term buys hundreds of nats of fit
TIME_COST = 2.0
#: floor = this share of the estimated noise variance, and at least (PRECISION * spread)**2: below that,
#: differences are the integrators' tolerances (ours, and whatever produced the data), not the law
FLOOR_SHARE = 0.1
PRECISION = 1e-3
#: a gap this many nats wide is evidence (a Bayes factor of e^5 ~ 150, "very strong" on Kass and
#: Raftery's scale); a narrower one is not: candidates within it are close (odeformer/ambiguity.py), and
#: a local search edit must win by it (local.py)
MARGIN_NATS = 10.0


def criterion(problem: Problem, preds: list[np.ndarray], n_constants: int, nodes: int, time_terms: int = 0) -> float:
    """The criterion (lower is better) of a candidate whose predictions at every point of each
    normalised trajectory are ``preds``; ``time_terms``: occurrences of ``t`` in its equations."""
    # every observed point (constants never see the held-out fifth): with half of 150 points dropped, 15
    # held-out points cannot tell a logistic law from a cubic at 5% noise, and 75 can
    pred = np.concatenate(preds)
    if not np.all(np.isfinite(pred)):
        return np.inf
    n, d = problem.observed.shape
    mse = _mean_squares(problem, pred)
    floor = floors(problem)
    total = n * d
    cost = n_constants + NODE_COST * nodes + TIME_COST * time_terms
    return float(np.sum(n * np.log(mse + floor)) + cost * np.log(total))


def floors(problem: Problem) -> np.ndarray:
    """Per-variable mean squares below which the criterion rewards nothing more."""
    # in the weighted residuals' units on noisy data (Problem.weighted_share)
    return np.maximum(FLOOR_SHARE * problem.noise_var, (PRECISION * problem.scale) ** 2) * problem.weighted_share


def at_floor(problem: Problem, preds: list[np.ndarray]) -> bool:
    """The predictions reproduce every observed point to within the floor: no other candidate can fit
    better in the criterion's eyes, only be simpler."""
    return bool(np.all(_mean_squares(problem, np.concatenate(preds)) <= floors(problem)))


def _mean_squares(problem: Problem, pred: np.ndarray) -> np.ndarray:
    """Per-variable mean square of the residuals at every observed point, each weighted by its noise
    (``Problem.point_weights``) on noisy data."""
    weights = problem.point_weights
    squares = (problem.observed - pred) ** 2
    return np.mean(squares * np.concatenate(weights) if weights is not None else squares, axis=0)


#: restarts from observed states at these shares of the first trajectory, each nudged up and down
RESTART_AT = (1 / 3, 2 / 3)
NUDGE = 0.1


def instability(problem: Problem, fit) -> float:
    """A law integrates from states near the ones it was observed in; an approximant with a pole or an
    exponential just outside the data often does not. The first trajectory is restarted (at its start
    time, over its whole span) from observed states a third and two thirds along it, each nudged by
    +-10% of each variable's spread. The cost is N log(1 + failed share): all four failing weigh as much
    as doubling the mean square error everywhere."""
    t, x = problem.ndata[0]
    spread = problem.spread
    starts = []
    for share in RESTART_AT:
        base = x[int(share * (len(t) - 1))]
        starts += [base + NUDGE * spread, base - NUDGE * spread]
    starts = np.array(starts)
    rows = np.repeat(np.asarray(fit.constants, dtype=np.float64)[None], len(starts), axis=0)
    bound = 10.0 * (np.abs(problem.observed).max(axis=0) + spread)
    runs = simulate_many(fit.components, rows, t, starts, problem.deadline)
    failed = sum(r is None or not np.all(np.abs(r) <= bound) for r in runs)
    n_residuals = sum(x.size for _, x in problem.ndata)
    return float(n_residuals * np.log1p(failed / len(runs)))


START_SPREAD = 0.01


def start_cost(problem: Problem, fit) -> float:
    """Initial states fitted with the constants (noisy data) pay a Gaussian prior centred on the observed
    first states, with the noise's variance (at least 1% of each variable's spread, squared), in nats:
    a wrong law that passes through the data from somewhere else pays for the detour. (Smoothing
    splines' first states are no better a centre: at a fast transient they miss by half the spread.)"""
    if fit.x0 is None:
        return 0.0
    var = np.maximum(problem.noise_var, (START_SPREAD * problem.spread) ** 2 + 1e-300)
    return float(sum(0.5 * np.sum((x0 - x[0]) ** 2 / var) for x0, (_, x) in zip(fit.x0, problem.ndata)))
