"""Training-time corruption: one dense solution yields many different noisy, irregular samples.

Nothing here is baked into shard files: each call draws a fresh sub-window, point count, dropped
share, noise levels and choice of trajectories from the grammar's ``[corruption]`` ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_gen.pipeline import System

MIN_POINTS = 5


@dataclass
class Sample:
    """Observations of one system: a list of trajectories, each (t (n,), x (n, dim)), times increasing."""

    trajectories: list[tuple[np.ndarray, np.ndarray]]
    noise_multiplicative: float
    noise_additive: float


def corrupt(system: System, cfg: dict, rng: np.random.Generator) -> Sample:
    """Draw one corrupted sample of ``system`` with the ranges of a grammar's ``corruption`` section."""
    n_avail, grid, _ = system.x.shape
    n_traj = int(rng.integers(cfg["trajectories"][0], cfg["trajectories"][1] + 1))
    chosen = np.sort(rng.choice(n_avail, size=min(n_traj, n_avail), replace=False))
    sigma_m = float(rng.uniform(*cfg["noise_multiplicative"]))
    sigma_a = float(rng.uniform(*cfg["noise_additive"]))
    window = float(rng.uniform(*cfg["window"]))
    n_points = int(rng.integers(cfg["points"][0], cfg["points"][1] + 1))
    drop = float(rng.uniform(*cfg["drop"]))
    dt = system.t_end / (grid - 1)
    out = []
    for j in chosen:
        length = min(grid, max(MIN_POINTS, int(round(window * grid))))
        start = int(rng.integers(0, grid - length + 1))
        n = min(n_points, length)
        idx = np.sort(rng.choice(length, size=n, replace=False))
        keep = max(MIN_POINTS, int(round(n * (1.0 - drop))))
        idx = start + np.sort(rng.choice(idx, size=min(keep, n), replace=False))
        x = system.x[j, idx].astype(np.float64)
        if sigma_m > 0:
            x = x * (1.0 + sigma_m * rng.standard_normal(x.shape))
        if sigma_a > 0:
            x = x + sigma_a * x.std(axis=0, keepdims=True) * rng.standard_normal(x.shape)
        out.append((idx * dt, x))
    return Sample(out, sigma_m, sigma_a)
