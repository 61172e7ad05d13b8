"""Constant refitting and scoring of candidate systems against observed trajectories.

Two stages, as in DESIGN.md: a cheap fit of the right-hand side to derivatives estimated from the
smoothed data (no integration), then a refinement on the re-integrated trajectories. Both use
``scipy.optimize.least_squares`` with capped evaluations, and every right-hand side checks a deadline,
so a stiff or exploding candidate cannot overrun the time budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares
from scipy.signal import savgol_filter

from odeformer.expressions import Tree, evaluate, python_rhs, split_constants
from odeformer.metrics import r2_score

Trajectory = tuple[np.ndarray, np.ndarray]  # (t (n,), x (n, d)), t increasing


class _Deadline(Exception):
    pass


@dataclass
class Fit:
    components: tuple[Tree, ...]
    constants: np.ndarray
    r2: float  # variance-weighted R^2 of the re-integrated system over all trajectories (-inf if it fails)


def estimate_derivatives(t: np.ndarray, x: np.ndarray, window: int = 7) -> np.ndarray:
    """dx/dt at the observed times: a Savitzky-Golay (cubic) derivative on a regular resampling.
    Small windows follow fast dynamics on clean data; larger ones average noise away."""
    n = len(t)
    if n < 5:
        return np.gradient(x, t, axis=0)
    grid = np.linspace(t[0], t[-1], n)
    xs = np.stack([np.interp(grid, t, x[:, i]) for i in range(x.shape[1])], axis=1)
    window = min(window | 1, n if n % 2 else n - 1)
    dx = savgol_filter(xs, window, min(3, window - 1), deriv=1, delta=grid[1] - grid[0], axis=0)
    return np.stack([np.interp(t, grid, dx[:, i]) for i in range(x.shape[1])], axis=1)


def simulate(components: Sequence[Tree], consts: Sequence[float], t: np.ndarray, x0: np.ndarray,
             deadline: float = np.inf, max_evals: int = 20_000) -> np.ndarray | None:
    """Integrate from ``x0`` at ``t[0]`` and return the states at ``t`` (None if it fails)."""
    rhs = python_rhs(components, consts)
    count = 0

    def f(tt, y):
        nonlocal count
        count += 1
        if count > max_evals or (count % 64 == 0 and time.monotonic() > deadline):
            raise _Deadline
        return rhs(tt, y)

    try:
        with np.errstate(all="ignore"):
            sol = solve_ivp(f, (t[0], t[-1]), x0, t_eval=t, method="LSODA", rtol=1e-6, atol=1e-9)
    except (_Deadline, ValueError, OverflowError, ZeroDivisionError):
        return None
    if sol.status != 0 or sol.y.shape[1] != len(t) or not np.all(np.isfinite(sol.y)):
        return None
    return sol.y.T


def trajectory_r2(components, consts, data: Sequence[Trajectory], deadline: float = np.inf) -> float:
    preds, obs = [], []
    for t, x in data:
        p = simulate(components, consts, t, x[0], deadline)
        if p is None:
            return -np.inf
        preds.append(p)
        obs.append(x)
    return r2_score(np.concatenate(obs), np.concatenate(preds))


def refit(components: Sequence[Tree], consts0: Sequence[float], data: Sequence[Trajectory],
          deadline: float = np.inf, max_nfev: int = 15) -> Fit:
    """Refit the constants of one candidate to the data; returns the better of the start and the refit."""
    components = tuple(components)
    c0 = np.asarray(consts0, dtype=np.float64)
    if len(c0) == 0:
        return Fit(components, c0, trajectory_r2(components, c0, data, deadline))
    ts = np.concatenate([t for t, _ in data])
    xs = np.concatenate([x for _, x in data])
    dxs = np.concatenate([estimate_derivatives(t, x) for t, x in data])
    scale = np.maximum(dxs.std(axis=0), 1e-9)

    def deriv_residual(c):
        if time.monotonic() > deadline:
            raise _Deadline
        with np.errstate(all="ignore"):
            pred = np.stack([np.broadcast_to(evaluate(comp, xs, ts, cc), len(ts))
                             for comp, cc in zip(components, split_constants(components, c))], axis=1)
        r = ((pred - dxs) / scale).ravel()
        return np.where(np.isfinite(r), r, 1e3)

    candidates = [c0]
    try:
        stage1 = least_squares(deriv_residual, c0, max_nfev=20 * (len(c0) + 1), method="trf")
        candidates.append(stage1.x)
    except (_Deadline, ValueError, FloatingPointError):
        pass
    x_scale = np.maximum(xs.std(axis=0), 1e-9)

    def traj_residual(c):
        if time.monotonic() > deadline:
            raise _Deadline
        out = []
        for t, x in data:
            p = simulate(components, c, t, x[0], deadline, max_evals=5_000)
            out.append(((p - x) / x_scale).ravel() if p is not None else np.full(x.size, 1e3))
        return np.concatenate(out)

    candidates = [c for c in candidates if np.all(np.isfinite(c))]
    if not candidates:
        return Fit(components, c0, -np.inf)
    scored = [(trajectory_r2(components, c, data, deadline), i) for i, c in enumerate(candidates)]
    r2, i = max(scored)
    if r2 > 0.9999:  # the derivative fit already reproduces the trajectories: skip the costly stage
        return Fit(components, candidates[i], r2)
    try:
        stage2 = least_squares(traj_residual, candidates[i], max_nfev=max_nfev, method="trf")
        r2_2 = trajectory_r2(components, stage2.x, data, deadline) if np.all(np.isfinite(stage2.x)) else -np.inf
        if r2_2 > r2:
            return Fit(components, stage2.x, r2_2)
    except (_Deadline, ValueError, FloatingPointError):
        pass
    return Fit(components, candidates[i], r2)

