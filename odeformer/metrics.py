"""Scores: variance-weighted R^2, and integration of decoded candidate systems."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_gen.integrate import STATUS_OK, solve_batch
from data_gen.program import build_batch, compile_system


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Variance-weighted R^2 over all components: 1 - sum of squared errors / total sum of squares."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    if y_pred.shape != y_true.shape or not np.all(np.isfinite(y_pred)):
        return -np.inf
    ss_res = np.sum((y_true - y_pred) ** 2)
    ss_tot = np.sum((y_true - y_true.mean(axis=0)) ** 2)
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else -np.inf
    return float(1.0 - ss_res / ss_tot)


def integrate_candidates(candidates: Sequence, problems: Sequence[tuple[float, np.ndarray, int]],
                         max_steps: int = 5000, bound: float = 1e6) -> list[np.ndarray | None]:
    """Integrate candidate systems ``(components, constants)`` (or None) from ``x0`` over [0, t_end] on
    ``n_grid`` points, all in one batch; None where a candidate is missing, has the wrong dimension or fails."""
    out: list[np.ndarray | None] = [None] * len(candidates)
    idx, progs, consts, t_end, x0 = [], [], [], [], []
    for i, (cand, (te, y0, _)) in enumerate(zip(candidates, problems)):
        if cand is None or len(cand[0]) != len(y0):
            continue
        prog = compile_system(cand[0])
        if prog.n_free != len(cand[1]):
            continue
        idx.append(i)
        progs.append(prog)
        consts.append(np.asarray(cand[1], dtype=np.float64).reshape(1, prog.n_free))
        t_end.append(te)
        x0.append(y0)
    if not idx:
        return out
    grids = {problems[i][2] for i in idx}
    max_dim = max(len(y) for y in x0)
    batch = build_batch(progs, consts, np.array(t_end))
    x0_arr = np.zeros((len(idx), max_dim))
    for j, y in enumerate(x0):
        x0_arr[j, : len(y)] = y
    for n_grid in grids:
        sol = solve_batch(batch, x0_arr, np.arange(len(idx)), n_grid, 1e-6, 1e-8, max_steps, bound, verify_factor=0.0)
        for j, i in enumerate(idx):
            if problems[i][2] == n_grid and sol.status[j] == STATUS_OK:
                out[i] = sol.x[j, :, : len(x0[j])]
    return out
