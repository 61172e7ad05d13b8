"""Ranking: a noise-aware Bayesian information criterion on the held-out points.

For a candidate re-integrated from each trajectory's first observed state, with ``n`` held-out points
per variable, residual mean square ``MSE_j`` for variable ``j`` (normalised frame), ``k`` free constants
and ``N = n * d`` residuals in all:

    criterion = sum_j n * log(MSE_j + floor_j) + k * log(N) + NODE_COST * nodes * log(N)

``floor_j`` is a tenth of the measurement-noise variance estimated from the data (the residuals of a
smoothing spline chosen by generalised cross-validation; ``Problem.noise_var``), and at least
``(1e-5 * spread_j)**2``, so that nothing is rewarded for fitting below the noise or below integration
tolerances, while on clean data an exact law (MSE at the floor) beats an approximant with 0.1% error
(MSE ~1e-6 of the spread squared) by about n*log(1e4) ~ 280 nats for 30 held-out points: far beyond
what any constant can buy. Logarithms per variable make it independent of units. Explicit time
dependence gets no special penalty: its constants count like any other. ``score`` (contract 3.2) is
``-criterion``: higher is better, and differences are in nats (natural-log likelihood units).
"""

from __future__ import annotations

import numpy as np

from odeformer.search.problem import Problem

#: a node of the expression costs this share of a constant: among equally good fits, the smaller
#: tree wins
NODE_COST = 0.05
#: floor = this share of the estimated noise variance, and at least (PRECISION * spread)**2: below that,
#: differences are the integrators' tolerances (ours, and whatever produced the data), not the law
FLOOR_SHARE = 0.1
PRECISION = 1e-5


def criterion(problem: Problem, preds: list[np.ndarray], n_constants: int, nodes: int) -> float:
    """The criterion (lower is better) of a candidate whose predictions at every point of each
    normalised trajectory are ``preds``."""
    obs = np.concatenate([x[h] for (_, x), h in zip(problem.ndata, problem.held)])
    pred = np.concatenate([p[h] for p, h in zip(preds, problem.held)])
    if len(obs) == 0:  # too few points to hold any out: rank on all of them
        obs = np.concatenate([x for _, x in problem.ndata])
        pred = np.concatenate(preds)
    if not np.all(np.isfinite(pred)):
        return np.inf
    n, d = obs.shape
    mse = np.mean((obs - pred) ** 2, axis=0)
    scale = np.concatenate([x for _, x in problem.ndata]).std(axis=0)
    floor = np.maximum(FLOOR_SHARE * problem.noise_var, (PRECISION * scale) ** 2)
    total = n * d
    return float(np.sum(n * np.log(mse + floor)) + (n_constants + NODE_COST * nodes) * np.log(total))
