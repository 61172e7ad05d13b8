"""Unpredictable data: ranking over windows (multiple shooting).

A chaotic system's trajectory cannot be reproduced from its first state over a span of many Lyapunov
times, not even by its own law with its constants to three digits: an error in a start or a constant
grows e-fold every Lyapunov time. There every candidate's re-integrated trajectory misses the data (R² near 0), and
the trajectory criterion ranks how the errors happen to line up: on Lorenz's chaotic regime at 1% noise
(1,000 points over 10 time units) an answer with junk terms and R² 0.14 outscored the law by 650 nats.

When the first candidate refitted does not reproduce the whole trajectories (a refit on them fixes a
predictable law's biased constants, a drifting phase; it cannot fix chaos) and no proposal does as it
is, ``window_points`` looks for the horizon: the longest window (halving the trajectories' length, at
least ``MIN_POINTS`` points) over which that candidate or one of the first proposals reproduces every
window integrated from the smoothing splines' state at its start; ``windowed`` cuts the trajectories
into windows half as long. The proposals are then refitted and ranked again over the windows, the
local search included: each window gets its own start (the trajectory stage of ``refit.py`` fits one
per trajectory on noisy data), so refits and the criterion compare laws over horizons they can predict.
On predictable data no window is tried: some candidate reproduces the whole trajectories.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_gen.expressions import Tree
from odeformer.metrics import r2_score
from odeformer.search.problem import Problem
from odeformer.search.refit import Fit, simulate, trajectory_r2

#: a window holds at least this many points: fewer, and its fitted start absorbs what tells laws apart
MIN_POINTS = 20
#: candidates whose whole-trajectory R² (from the observed first states) stays below this, all of them,
#: make the data a suspect of unpredictability
UNPREDICTABLE_R2 = 0.5
#: a candidate's horizon: the longest window over which it reaches this R²; the search ranks over windows
#: half as long (a refitted law's error, growing exponentially, is then far below its horizon's)
TRACK_R2 = 0.9
#: candidates refitted before the check (the most promising proposals come first; each refit of a long
#: chaotic recording takes about a second)
CHECK_AFTER = 1
#: proposals, the most promising first, whose constants as they are may show the windows' length
TRACKERS = 6


def cut(data: list[tuple[np.ndarray, np.ndarray]], points: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each trajectory as consecutive windows of ``points`` points (a remainder joins the last window)."""
    out = []
    for t, x in data:
        starts = list(range(0, max(len(t) - points, 0) + 1, points))
        ends = starts[1:] + [len(t)]
        out += [(t[a:b], x[a:b]) for a, b in zip(starts, ends)]
    return out


def _windows_r2(problem: Problem, fit: Fit, points: int) -> float:
    """R² of ``fit`` over the normalised trajectories cut into windows, each integrated from the
    smoothing splines' state at its start."""
    obs, preds = [], []
    for (t, x), splines in zip(problem.ndata, problem.smoothing_splines):
        for tw, xw in cut([(t, x)], points):
            start = np.array([sp(tw[0]) if sp is not None else xw[0, j] for j, sp in enumerate(splines)])
            pred = simulate(fit.components, fit.constants, tw, start, problem.deadline)
            if pred is None:
                return -np.inf
            obs.append(xw)
            preds.append(pred)
    return r2_score(np.concatenate(obs), np.concatenate(preds))


def window_points(problem: Problem, refitted: list[Fit], r2s: list[float],
                  proposed: list[tuple[Sequence[Tree], Sequence[float]]]) -> int | None:
    """The window length (points) to rank over, or None. ``refitted``: the first candidates' fits, ``r2s``
    their whole-trajectory R²; ``proposed``: the first proposals (components, constants), taken with their
    constants as they are. None when one of them reproduces the whole trajectories (predictable data) or
    none reproduces windows of any allowed length (nothing to gain from cutting)."""
    if not refitted or max(r2s) >= UNPREDICTABLE_R2:
        return None
    as_proposed = [Fit(tuple(c), np.asarray(k, dtype=np.float64), 0.0) for c, k in proposed]
    if any(trajectory_r2(f.components, f.constants, problem.ndata, problem.deadline) >= UNPREDICTABLE_R2
           for f in as_proposed):
        return None
    fits = refitted + as_proposed
    points = max(len(t) for t, _ in problem.ndata) // 2
    while points >= MIN_POINTS and not problem.expired():
        if any(_windows_r2(problem, fit, points) >= TRACK_R2 for fit in fits):
            return max(points // 2, MIN_POINTS)
        points //= 2
    return None


def windowed(problem: Problem, points: int) -> Problem:
    """The problem on the user's trajectories cut into windows of ``points`` points, on the same clock."""
    return Problem(cut(problem.data, points), problem.names, problem.operators, problem.use_time,
                   problem.time_budget_s, start=problem.start, windows=points)
