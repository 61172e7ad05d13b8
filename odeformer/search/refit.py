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
from functools import lru_cache

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

from data_gen.expressions import Tree, evaluate, python_rhs, split_constants
from data_gen.integrate import OP_ADD, OP_NEG, STACK_DEPTH, STATUS_OK, STATUS_STIFF, solve_at
from data_gen.program import build_batch, compile_system
from odeformer.derivatives import estimate_derivatives
from odeformer.metrics import r2_score
from odeformer.search.quiet import quiet_scipy

Trajectory = tuple[np.ndarray, np.ndarray]  # (t (n,), x (n, d)), t increasing
MAX_STEPS = 10_000  # per simulation in the compiled integrator: a candidate needing more is rejected


class _Deadline(Exception):
    pass


@dataclass
class Fit:
    components: tuple[Tree, ...]
    constants: np.ndarray
    r2: float  # variance-weighted R^2 of the re-integrated system over all trajectories (-inf if it fails)
    #: fitted initial states, one per trajectory (None: the observed first points)
    x0: list[np.ndarray] | None = None

    def start(self, k: int, observed: np.ndarray) -> np.ndarray:
        return observed if self.x0 is None else self.x0[k]


def _simulate_scipy(components: Sequence[Tree], consts: Sequence[float], t: np.ndarray, x0: np.ndarray,
                    deadline: float = np.inf, max_evals: int = 2_000) -> np.ndarray | None:
    """LSODA (stiff-capable) with a clock and an evaluation cap inside the right-hand side."""
    rhs = python_rhs(components, consts)
    count = 0

    def f(tt, y):
        nonlocal count
        count += 1
        if count > max_evals or (count % 64 == 0 and time.monotonic() > deadline):
            raise _Deadline
        return rhs(tt, y)

    try:
        # a candidate that LSODA cannot integrate is rejected by its status; scipy's warning about it
        # ("lsoda: Repeated convergence failures") would reach the user's console from inside the search
        with np.errstate(all="ignore"), quiet_scipy():
            sol = solve_ivp(f, (t[0], t[-1]), x0, t_eval=t, method="LSODA", rtol=1e-6, atol=1e-9)
    except (_Deadline, ValueError, OverflowError, ZeroDivisionError):
        return None
    if sol.status != 0 or sol.y.shape[1] != len(t) or not np.all(np.isfinite(sol.y)):
        return None
    return sol.y.T


@lru_cache(maxsize=512)
def _program(components: tuple[Tree, ...]):
    """The candidate as a program of the batched integrator, or None where it cannot run it (an
    operator it lacks, or a stack deeper than its fixed one)."""
    try:
        prog = compile_system(components)
    except KeyError:
        return None
    depth = peak = 0
    for op in prog.code.tolist():
        depth += 1 if op < OP_ADD else (-1 if op < OP_NEG else 0)
        peak = max(peak, depth)
    return prog if peak <= STACK_DEPTH else None


def simulate_many(components: Sequence[Tree], const_rows: np.ndarray, t: np.ndarray, x0: np.ndarray,
                  deadline: float = np.inf, alike: bool = False) -> list[np.ndarray | None]:
    """Integrate one candidate under each row of constants from ``x0`` at ``t[0]`` (one state, or one per
    row); the states at ``t`` per row (None where it fails). All rows run in one call of the compiled
    Dormand-Prince integrator of the generator; rows that run out of steps (stiff), or candidates it
    cannot run, fall back to LSODA. ``alike``: the rows are one point and its small perturbations (a
    finite-difference Jacobian), so where LSODA fails on one the rest are not tried (each failure takes
    tens of milliseconds; 85 of them took 1.6 s of a noisy Rössler fit)."""
    components = tuple(components)
    rows = np.atleast_2d(np.asarray(const_rows, dtype=np.float64))
    t = np.asarray(t, dtype=np.float64)
    x0 = np.asarray(x0, dtype=np.float64)
    starts = x0 if x0.ndim == 2 else np.repeat(x0[None], len(rows), axis=0)
    prog = _program(components)
    if prog is None or rows.shape[1] != prog.n_free:
        return [_simulate_scipy(components, r, t, y0, deadline) for r, y0 in zip(rows, starts)]
    sol = solve_at(build_batch([prog], [rows], np.full(len(rows), t[-1])), starts,
                   t, rtol=1e-7, atol=1e-9, max_steps=MAX_STEPS)
    out: list[np.ndarray | None] = []
    implicit = True  # until LSODA fails on one of ``alike`` rows
    for j, r in enumerate(rows):
        if sol.status[j] == STATUS_OK and np.all(np.isfinite(sol.x[j])):
            out.append(sol.x[j])
        elif sol.status[j] == STATUS_STIFF and implicit and time.monotonic() < deadline:
            # out of steps: stiff, where an implicit method still gets through cheaply
            out.append(_simulate_scipy(components, r, t, starts[j], deadline))
            implicit = out[-1] is not None or not alike
        else:
            out.append(None)
    return out


def simulate(components: Sequence[Tree], consts: Sequence[float], t: np.ndarray, x0: np.ndarray,
             deadline: float = np.inf) -> np.ndarray | None:
    """Integrate from ``x0`` at ``t[0]`` and return the states at ``t`` (None if it fails)."""
    return simulate_many(components, np.asarray(consts, dtype=np.float64)[None], t, x0, deadline)[0]


def trajectory_r2(components, consts, data: Sequence[Trajectory], deadline: float = np.inf,
                  x0: Sequence[np.ndarray] | None = None) -> float:
    """R^2 of the system integrated from each trajectory's first point (or from ``x0``, one per trajectory)."""
    preds, obs = [], []
    for k, (t, x) in enumerate(data):
        p = simulate(components, consts, t, x[0] if x0 is None else x0[k], deadline)
        if p is None:
            return -np.inf
        preds.append(p)
        obs.append(x)
    return r2_score(np.concatenate(obs), np.concatenate(preds))


def fit_derivatives(components: Sequence[Tree], consts0: Sequence[float], ts: np.ndarray, xs: np.ndarray,
                    dxs: np.ndarray, deadline: float = np.inf, evaluations: int = 600,
                    weights: np.ndarray | None = None) -> np.ndarray | None:
    """Constants that fit the right-hand sides to derivative estimates ``dxs`` at the points (``ts``,
    ``xs``), by (``weights``-weighted) least squares from ``consts0``; None if the fit fails or runs out
    of time. ``evaluations`` caps the right-hand side evaluations (each step also costs a
    finite-difference Jacobian)."""
    components = tuple(components)
    c0 = np.asarray(consts0, dtype=np.float64)
    scale = np.maximum(dxs.std(axis=0), 1e-9)
    if weights is not None:
        scale = scale / np.sqrt(weights)

    def residual(c):
        if time.monotonic() > deadline:
            raise _Deadline
        with np.errstate(all="ignore"):
            pred = np.stack([np.broadcast_to(evaluate(comp, xs, ts, cc), len(ts))
                             for comp, cc in zip(components, split_constants(components, c))], axis=1)
        r = ((pred - dxs) / scale).ravel()
        return np.where(np.isfinite(r), r, 1e3)

    try:
        with np.errstate(all="ignore"):  # a diverging candidate overflows inside the solver; it just loses
            out = least_squares(residual, c0, max_nfev=max(10, evaluations // (len(c0) + 1)), method="trf").x
    except (_Deadline, ValueError, FloatingPointError):
        return None
    return out if np.all(np.isfinite(out)) else None


def refit(components: Sequence[Tree], consts0: Sequence[float], data: Sequence[Trajectory],
          deadline: float = np.inf, max_nfev: int = 15, derivatives: np.ndarray | None = None,
          derivative_stage: bool = True, fit_initial: bool = True, weights: np.ndarray | None = None,
          point_weights: Sequence[np.ndarray] | None = None) -> Fit:
    """Refit the constants of one candidate to the data; returns the better of the start and the refit.
    ``derivatives``: dx/dt at the pooled points of ``data`` for the first stage (default: Savitzky-Golay);
    ``weights``: per-point weights of those derivatives (Problem.derivative_weights);
    ``derivative_stage=False`` skips that stage (constants that already come from a derivative fit);
    ``fit_initial``: the trajectory stage fits each trajectory's initial state too (for noisy data; on
    clean data the observed first points are the truth, and freeing them lets a wrong law fit);
    ``point_weights``: per trajectory, each point's weight in the trajectory stage (points, variables;
    ``Problem.point_weights``), whose weighted residuals then also decide between the start and the
    refit."""
    components = tuple(components)
    c0 = np.asarray(consts0, dtype=np.float64)
    if len(c0) == 0:
        return Fit(components, c0, trajectory_r2(components, c0, data, deadline))
    ts = np.concatenate([t for t, _ in data])
    xs = np.concatenate([x for _, x in data])
    dxs = derivatives if derivatives is not None else np.concatenate([estimate_derivatives(t, x) for t, x in data])
    candidates = [c0]
    if derivative_stage:
        stage1 = fit_derivatives(components, c0, ts, xs, dxs, deadline, weights=weights)
        if stage1 is not None:
            candidates.append(stage1)
    x_scale = np.maximum(xs.std(axis=0), 1e-9)

    k, d = len(c0), data[0][1].shape[1]

    def residuals(rows: np.ndarray) -> np.ndarray:
        """Scaled trajectory residuals for each row of parameters (the constants, then every trajectory's
        initial state), all rows integrated in one call."""
        if time.monotonic() > deadline:
            raise _Deadline
        out = []
        for j, (t, x) in enumerate(data):
            preds = simulate_many(components, rows[:, :k], t, rows[:, k + j * d: k + (j + 1) * d], deadline,
                                  alike=True)
            root = 1.0 if point_weights is None else np.sqrt(point_weights[j])
            out.append(np.stack([((p - x) / x_scale * root).ravel() if p is not None else np.full(x.size, 1e3)
                                 for p in preds]))
        return np.concatenate(out, axis=1)

    candidates = [c for c in candidates if np.all(np.isfinite(c))]
    if not candidates:
        return Fit(components, c0, -np.inf)
    scored = [(trajectory_r2(components, c, data, deadline), i) for i, c in enumerate(candidates)]
    r2, i = max(scored)
    if r2 > 0.9999:  # the derivative fit already reproduces the trajectories: skip the costly stage
        return Fit(components, candidates[i], r2)
    # on noisy data the second stage fits the initial states too: a noisy first point would otherwise
    # bend the constants
    observed = np.concatenate([x[0] for _, x in data])
    free = k + (len(observed) if fit_initial else 0)

    def full(params: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(params)
        return rows if fit_initial else np.hstack([rows, np.repeat(observed[None], len(rows), axis=0)])

    start = np.concatenate([candidates[i], observed])[:free]
    try:
        with np.errstate(all="ignore"):
            stage2 = least_squares(lambda p: residuals(full(p))[0], start,
                                   jac=lambda p: _jacobian(lambda rows: residuals(full(rows)), p),
                                   max_nfev=max_nfev, method="trf")
        params = full(stage2.x)[0]
        consts, starts = params[:k], [params[k + j * d: k + (j + 1) * d] for j in range(len(data))]
        if not np.all(np.isfinite(params)):
            raise ValueError("not finite")
        r2_2 = trajectory_r2(components, consts, data, deadline, starts)
        if point_weights is None:
            better = r2_2 > r2
        else:  # the weighted residuals decide, as the fit minimised them
            better = np.isfinite(r2_2) and np.sum(stage2.fun**2) < np.sum(residuals(full(start))[0] ** 2)
        if better:
            return Fit(components, consts, r2_2, starts if fit_initial else None)
    except (_Deadline, ValueError, FloatingPointError):
        pass
    return Fit(components, candidates[i], r2)


def _jacobian(residuals, params: np.ndarray) -> np.ndarray:
    """Forward differences, the base point and every perturbed one in one batch; steps well above the
    integrator's tolerance so that its adaptivity does not show up as slope."""
    h = 1e-5 * np.maximum(np.abs(params), 1e-2)
    r = residuals(np.vstack([params, params + np.diag(h)]))
    return ((r[1:] - r[0]) / h[:, None]).T
