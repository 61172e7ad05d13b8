"""Derivative estimates dx/dt at irregular observation times, for the encoder's features, the
constant refit's first stage and the sparse-regression proposals."""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter


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


def gcv_penalty(t: np.ndarray, y: np.ndarray) -> float:
    """The penalty λ of the cubic smoothing spline ``min Σ (y_i - f(t_i))² + λ ∫ f''²`` that minimises
    generalised cross-validation, searched as scipy's ``make_smoothing_spline`` searches it (bounded
    Brent on [0, n]). The criterion is evaluated from one eigendecomposition of the penalty's matrix in
    the Reinsch form (``∫ f''² = fᵀ Q R⁻¹ Qᵀ f`` for the natural spline's values f), each evaluation a
    sum over n terms, where scipy runs a Python loop over the banded inverse per evaluation: the same
    criterion and penalty, several times faster (``bench/splines.py``)."""
    from scipy.linalg import eigh
    from scipy.optimize import minimize_scalar

    n = len(t)
    h = np.diff(t)
    if n < 5 or not np.all(h > 0):
        raise ValueError("a smoothing spline needs at least 5 strictly increasing times")
    j = np.arange(n - 2)
    q = np.zeros((n, n - 2))  # second divided differences
    q[j, j], q[j + 1, j], q[j + 2, j] = 1 / h[:-1], -1 / h[:-1] - 1 / h[1:], 1 / h[1:]
    r = np.zeros((n - 2, n - 2))
    r[j, j] = (h[:-1] + h[1:]) / 3
    r[j[:-1], j[1:]] = r[j[1:], j[:-1]] = h[1:-1] / 6
    d, u = eigh(q @ np.linalg.solve(r, q.T))
    d = np.maximum(d, 0.0)  # the two zero eigenvalues (lines) may come out slightly negative
    z2 = (u.T @ y) ** 2

    def gcv(lam: float) -> float:
        shrunk = lam * d / (1.0 + lam * d)  # per eigenvector, the share of y that is residual
        return float(np.sum(shrunk**2 * z2) / n / (np.sum(shrunk) / n) ** 2)

    return float(minimize_scalar(gcv, bounds=(0, n), method="Bounded").x)


def smoothing_spline(t: np.ndarray, y: np.ndarray):
    """The cubic smoothing spline of ``y`` with its penalty chosen by generalised cross-validation
    (``gcv_penalty``), as a scipy ``BSpline``. Raises ValueError or LinAlgError where none can be fitted."""
    from scipy.interpolate import make_smoothing_spline

    with np.errstate(all="ignore"):
        return make_smoothing_spline(t, y, lam=gcv_penalty(t, y))


def spline_derivatives(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dx/dt of a cubic smoothing spline per variable, its penalty chosen by generalised
    cross-validation: adapts its smoothing to the noise, and needs no regular grid."""
    if len(t) < 5:
        return np.gradient(x, t, axis=0)
    try:
        with np.errstate(all="ignore"):
            dx = np.stack([smoothing_spline(t, x[:, i]).derivative()(t) for i in range(x.shape[1])], axis=1)
    except (ValueError, np.linalg.LinAlgError):
        return estimate_derivatives(t, x)
    return dx if np.all(np.isfinite(dx)) else estimate_derivatives(t, x)


def interpolating_derivatives(t: np.ndarray, x: np.ndarray, degree: int = 5) -> np.ndarray:
    """dx/dt of an interpolating spline of ``degree`` through every point: accurate to many digits on
    clean, densely sampled data (where smoothing would only blur), and useless on noisy data."""
    from scipy.interpolate import make_interp_spline

    k = min(degree, len(t) - 1)
    if k < 3:
        return estimate_derivatives(t, x)
    try:
        dx = make_interp_spline(t, x, k=k, axis=0).derivative()(t)
    except (ValueError, np.linalg.LinAlgError):
        return estimate_derivatives(t, x)
    return dx if np.all(np.isfinite(dx)) else estimate_derivatives(t, x)
