"""Input encoding: a set of observed points (t, x_1..x_d) from one or several trajectories -> features.

Number encoding, and why: one token per observed point, embedded by a small MLP over real-valued
features, rather than ODEFormer's three tokens (sign, mantissa, exponent) per number. With 4
variables and 200 points ODEFormer's scheme needs 3,000 input tokens; ours needs 200, so attention
is ~200x cheaper and the same GPU minutes see far more systems. The MLP gets, per point:

- time ``t / 10`` (the generator's frame: trajectories over [0, 5..15]) and the position in the
  observed window ``(t - t_min) / (t_max - t_min)``;
- per variable ``asinh(x)`` (absolute magnitude, compressed: the equations are predicted in the data's
  own units, so the model must see them), ``x / s`` with ``s = max|x|`` over the sample (the shape),
  ``log10(s) / 3`` (the scale), and a presence flag (unused variables are zero);
- optionally (``derivatives=True``, a model setting stored in its checkpoint) per variable an estimate
  of ``dx/dt`` (Savitzky-Golay on each trajectory), as ``asinh(dx/dt)`` and ``asinh(dx/dt / s)``. The
  model is then shown the (x, dx/dt) pairs the equations relate instead of having to learn to
  differentiate across points: a small model trained for an hour on a CPU learns to read its input
  with them and does not without (README, "The CPU model").

Several trajectories of one system are pooled into one set of points with a trajectory-id embedding
added in the model; the points carry no positional encoding (time is a feature).

Normalisation for inference (:class:`Normalization`): user data is mapped into the training frame
by an affine map of time onto [0, 10] and a per-variable scale when magnitudes fall outside the
generator's range; the decoded equations are mapped back symbolically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp

from odeformer.derivatives import estimate_derivatives

T_REF = 10.0


def n_features(max_dim: int, derivatives: bool = False) -> int:
    return 2 + (6 if derivatives else 4) * max_dim


def encode_points(trajectories: Sequence[tuple[np.ndarray, np.ndarray]], max_dim: int,
                  derivatives: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features (n_points, n_features) float32 and trajectory ids (n_points,) of pooled trajectories."""
    ts = np.concatenate([np.asarray(t, dtype=np.float64) for t, _ in trajectories])
    xs = np.concatenate([np.asarray(x, dtype=np.float64).reshape(len(t), -1) for t, x in trajectories])
    ids = np.concatenate([np.full(len(t), i, dtype=np.int64) for i, (t, _) in enumerate(trajectories)])
    n, d = xs.shape
    if d > max_dim:
        raise ValueError(f"{d} variables, the model supports at most {max_dim}")
    span = ts.max() - ts.min()
    scale = np.abs(xs).max(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    feats = np.zeros((n, n_features(max_dim, derivatives)), dtype=np.float32)
    feats[:, 0] = ts / T_REF
    feats[:, 1] = (ts - ts.min()) / span if span > 0 else 0.0
    base = 2
    feats[:, base: base + d] = np.arcsinh(xs)
    feats[:, base + max_dim: base + max_dim + d] = xs / scale
    feats[:, base + 2 * max_dim: base + 2 * max_dim + d] = np.log10(scale) / 3.0
    feats[:, base + 3 * max_dim: base + 3 * max_dim + d] = 1.0
    if derivatives:
        dx = np.concatenate([_rates(ts[ids == i], xs[ids == i]) for i in range(len(trajectories))])
        feats[:, base + 4 * max_dim: base + 4 * max_dim + d] = np.arcsinh(dx)
        feats[:, base + 5 * max_dim: base + 5 * max_dim + d] = np.arcsinh(dx / scale)
    return feats, ids


def _rates(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dx/dt estimates of one trajectory; zero where there is none (too few points, repeated times)."""
    if len(t) < 3 or not np.ptp(t) > 0:
        return np.zeros_like(x)
    with np.errstate(all="ignore"):
        try:
            dx = estimate_derivatives(t, x)
        except ValueError:
            return np.zeros_like(x)
    return np.nan_to_num(dx, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class Normalization:
    """Affine time map ``t' = (t - t_shift) * t_scale`` and per-variable scales ``x' = x / x_scale``."""

    t_shift: float
    t_scale: float
    x_scale: np.ndarray

    #: magnitudes the generator produces; data beyond this band is rescaled into it
    X_RANGE = (0.05, 500.0)

    @classmethod
    def fit(cls, trajectories: Sequence[tuple[np.ndarray, np.ndarray]]) -> Normalization:
        ts = np.concatenate([t for t, _ in trajectories])
        xs = np.concatenate([np.asarray(x).reshape(len(t), -1) for t, x in trajectories])
        span = float(ts.max() - ts.min())
        t_scale = T_REF / span if span > 0 else 1.0
        mag = np.abs(xs).max(axis=0)
        lo, hi = cls.X_RANGE
        x_scale = np.where((mag < lo) | (mag > hi), np.where(mag > 0, mag / 5.0, 1.0), 1.0)
        return cls(float(ts.min()), t_scale, x_scale)

    def apply(self, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(t) - self.t_shift) * self.t_scale, np.asarray(x) / self.x_scale

    def invert(self, rhs: Sequence[sp.Expr], variables: Sequence[sp.Symbol], t: sp.Symbol) -> list[sp.Expr]:
        """Right-hand sides in the user's units from ones predicted in the normalised frame:
        dx_i/dt = x_scale_i * t_scale * g_i(x / x_scale, (t - t_shift) * t_scale)."""
        # variables left at scale 1 are not substituted: ``x/1.0`` would rebuild every expression as
        # ``1.0*x`` (SymPy's arithmetic is most of a candidate's write-up), for the same result
        subs = {v: v / float(s) for v, s in zip(variables, self.x_scale) if float(s) != 1.0}
        subs[t] = (t - self.t_shift) * self.t_scale
        return [sp.Float(float(s) * self.t_scale) * g.xreplace(subs) for g, s in zip(rhs, self.x_scale)]
