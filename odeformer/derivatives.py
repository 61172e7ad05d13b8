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


def spline_derivatives(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dx/dt of a cubic smoothing spline per variable, its penalty chosen by generalised
    cross-validation: adapts its smoothing to the noise, and needs no regular grid."""
    from scipy.interpolate import make_smoothing_spline

    if len(t) < 5:
        return np.gradient(x, t, axis=0)
    try:
        with np.errstate(all="ignore"):
            dx = np.stack([make_smoothing_spline(t, x[:, i]).derivative()(t) for i in range(x.shape[1])], axis=1)
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
