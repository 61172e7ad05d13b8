"""The problem every stage of the search works on: the data in both frames, the held-out points, the
noise level, the allowed operators and the clock."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from odeformer.derivatives import estimate_derivatives, interpolating_derivatives, smoothing_spline
from odeformer.encoding import Normalization
from odeformer.search.quiet import quiet_scipy

Trajectory = tuple[np.ndarray, np.ndarray]  # (t (n,), x (n, d)), t increasing

#: every HOLDOUT_EVERY-th point of each trajectory is held out for ranking (the first point stays: it is
#: the start). Holding out the last quarter instead, a forecast, lost 4 of 21 quick-ODEBench systems in
#: clean generalisation.
HOLDOUT_EVERY = 5
#: (neighbours on each side, degree) of the local polynomials whose leave-one-out errors bound the noise
LOCAL_FITS = ((3, 3), (3, 5), (4, 7))
#: points over which the noise around a point is averaged, and the range of the points' weights (the
#: trajectory's noise variance / the noise variance around the point)
WEIGHT_WINDOW = 15
WEIGHT_RANGE = (0.01, 100.0)
#: a smoothing spline whose residual mean square exceeds this many times the noise variance is refitted
GCV_TOLERANCE = 4.0
#: integration steps per interval between observed points (integral comparisons on noisy data)
SUBSTEPS = 4
#: derivative errors below this share of the derivative's spread earn no more weight
WEIGHT_FLOOR = 1e-5
#: the time budget (s), the default's, for which the search's stages are sized; a larger one scales them
REFERENCE_BUDGET_S = 10.0


@dataclass
class Problem:
    """One fit: the user's trajectories (sorted, checked), their normalised copies, the held-out masks,
    the operators proposals may use, whether ``t`` may appear, and the deadline."""

    data: list[Trajectory]
    names: list[str]
    operators: set[str]
    use_time: bool
    time_budget_s: float
    start: float = field(default_factory=time.monotonic)
    #: the user's trajectories were cut into windows of this many points (windows.py; None: whole)
    windows: int | None = None
    #: seconds after the start at which each stage of the search ended ("proposals", "refits", "pruning",
    #: "climb" where it ran, "units", "final"), and "reserved": the seconds the schedule kept for the unit
    #: step and the final refits when the climb began (bench/stages.py reads them)
    spent: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.norm = Normalization.fit(self.data)
        self.ndata: list[Trajectory] = [self.norm.apply(t, x) for t, x in self.data]
        self.held: list[np.ndarray] = []
        self.fit_data: list[Trajectory] = []
        for t, x in self.ndata:
            keep = np.ones(len(t), dtype=bool)
            keep[np.arange(len(t)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1] = False
            self.held.append(~keep)
            self.fit_data.append((t[keep], x[keep]))

    @property
    def dim(self) -> int:
        return self.data[0][1].shape[1]

    @property
    def deadline(self) -> float:
        return self.start + self.time_budget_s

    @property
    def budget_scale(self) -> float:
        """How many times the reference budget this fit has (at least 1): the search refits that many
        times as many library proposals and climbs that much longer (anytime)."""
        return max(1.0, self.time_budget_s / REFERENCE_BUDGET_S)

    def by(self, share: float) -> float:
        """The clock time when ``share`` of the budget is spent."""
        return self.start + share * self.time_budget_s

    def expired(self, share: float = 1.0) -> bool:
        return time.monotonic() > self.by(share)

    def mark(self, stage: str) -> None:
        """Record that ``stage`` of the search ended now (``spent``)."""
        self.spent[stage] = time.monotonic() - self.start

    @cached_property
    def observed(self) -> np.ndarray:
        """Every observed state, trajectories one after another (normalised frame)."""
        return np.concatenate([x for _, x in self.ndata])

    @cached_property
    def scale(self) -> np.ndarray:
        """Per-variable standard deviation over all observed points (normalised frame)."""
        return self.observed.std(axis=0)

    @cached_property
    def spread(self) -> np.ndarray:
        """Per-variable range over all observed points (normalised frame)."""
        return np.ptp(self.observed, axis=0)

    @cached_property
    def fit_points(self) -> tuple[np.ndarray, np.ndarray]:
        """All fitting points pooled: (t (n,), x (n, d)) in the normalised frame."""
        return np.concatenate([t for t, _ in self.fit_data]), np.concatenate([x for _, x in self.fit_data])

    @cached_property
    def derivatives(self) -> _Derivatives:
        """dx/dt at the fitting points by several estimators (computed on first use), pooled over
        trajectories: ``savgol5``, ``savgol9``, ``savgol17``, ``spline`` and ``interp``. Which one is right
        depends on the noise: the interpolating spline is exact on clean data and useless on noisy data,
        the smoothing spline chooses its own smoothing, Savitzky-Golay windows sit in between."""
        return _Derivatives(self.fit_data, self.smoothing_splines)

    @cached_property
    def derivative_weights(self) -> _Weights:
        """Per-point regression weights (pooled points, variables) for each derivative estimate, mean 1:
        the inverse of the estimate's squared error where that error can be told (the interpolating
        spline's, from its disagreement with one of higher degree), on noisy data the points' noise
        weights (``fit_weights``: an estimate's error grows with the noise it smooths), else uniform.
        On clean data the quintic spline is accurate to 1e-4 inside the data and off by tens of percent
        at a fast start or an end; unweighted, those few points decide which terms a sparse regression
        keeps."""
        return _Weights(self.fit_data, self.derivatives, self.fit_weights)

    @cached_property
    def integration_grid(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per fitting trajectory: a grid ``SUBSTEPS`` times finer than its points, the smoothing
        splines' states on it, and where its points sit on it; for integral (weak-form) comparisons,
        where the noise is averaged instead of differentiated."""
        out = []
        for (t, x), splines in zip(self.fit_data, self.smoothing_splines):
            steps = [np.linspace(a, b, SUBSTEPS, endpoint=False) for a, b in zip(t[:-1], t[1:])]
            fine = np.concatenate([*steps, t[-1:]])
            states = np.stack([sp(fine) if sp is not None else np.interp(fine, t, x[:, j])
                               for j, sp in enumerate(splines)], axis=1)
            out.append((fine, states, np.arange(len(t)) * SUBSTEPS))
        return out

    @cached_property
    def integration_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The integration grids' states and times, trajectories one after another."""
        grid = self.integration_grid
        return np.concatenate([s for _, s, _ in grid]), np.concatenate([f for f, _, _ in grid])

    @cached_property
    def integration_targets(self) -> np.ndarray:
        """The fitting points' states centred per trajectory (integral form: the start is unknown)."""
        return np.concatenate([x - x.mean(axis=0) for _, x in self.fit_data])

    @property
    def best_estimator(self) -> str:
        """The derivative estimate to trust most: exact interpolation on clean data, else the smoothing spline."""
        return "interp" if self.clean else "spline"

    @cached_property
    def smoothing_splines(self) -> list[list]:
        """A cubic smoothing spline per trajectory and variable, fitted to the fitting points (for
        derivatives), its penalty chosen by generalised cross-validation (None where it cannot be fitted)."""
        out = []
        for t, x in self.fit_data:
            row = _smoothing_splines(t, x)
            for j, spline in enumerate(row):
                # generalised cross-validation sometimes flattens a fast, coarsely sampled curve into a
                # nearly straight line (Lorenz at 1% noise); then the spline whose residual is the noise
                # level estimated from the local fits takes its place
                if spline is None or np.mean((spline(t) - x[:, j]) ** 2) > GCV_TOLERANCE * self.noise_var[j]:
                    row[j] = _spline_at_noise(t, x[:, j], float(self.noise_var[j])) or spline
            out.append(row)
        return out

    @cached_property
    def all_point_splines(self) -> list[list]:
        """Smoothing splines through all the points of each trajectory (for the noise level)."""
        return [_smoothing_splines(t, x) for t, x in self.ndata]

    @cached_property
    def noise_var(self) -> np.ndarray:
        """Per-variable variance of the measurement noise (normalised frame): the smallest of the
        smoothing splines' residual mean square (penalty by generalised cross-validation) and the
        leave-one-out errors of local polynomials of degree 3, 5 and 7, each corrected for the variance
        of its own prediction so that on pure noise every one of them estimates the noise variance."""
        sse = np.zeros(self.dim)
        count = 0
        for (t, x), splines in zip(self.ndata, self.all_point_splines):
            for j, spline in enumerate(splines):
                r = x[:, j] - (spline(t) if spline is not None else x[:, j])
                sse[j] += float(np.sum(r[np.isfinite(r)] ** 2))
            count += len(t)
        var = sse / max(count, 1)
        # generalised cross-validation can choose a nearly straight line on noise-free data (its curve is
        # flat there), and on clean but coarsely sampled fast dynamics (Lorenz at 15 points per time unit)
        # a cubic's error is the curvature, not noise: a higher degree shrinks a smooth curve's error by
        # orders of magnitude and leaves noise as it is
        for side, degree in LOCAL_FITS:
            local = [_loo_squares(t, x, side, degree) for t, x in self.ndata]
            local = np.concatenate([r for r in local if len(r)]) if any(len(r) for r in local) else None
            if local is not None:
                var = np.minimum(var, np.mean(local, axis=0))
        return np.maximum(var, (1e-7 * np.maximum(self.scale, 1e-12)) ** 2)

    @cached_property
    def point_weights(self) -> list[np.ndarray] | None:
        """Per trajectory of ``ndata``, each point's weight (points, variables): the trajectory's noise
        variance over the noise variance around that point, so that within a trajectory each residual
        counts by its own noise (the Gaussian likelihood's weights) where noise grows with the signal
        (proportional noise, as ODEBench's and many instruments'). The noise variance around a point is
        the all-point smoothing splines' squared residuals averaged over the ``WEIGHT_WINDOW`` points
        centred on it. Each trajectory's weights average 1: across trajectories the criterion assumes
        one noise level, as unweighted; a small swing beside a large one (docs/ambiguity.md) would
        otherwise outweigh it by their scales squared, and the large one carries the evidence.
        None on clean data."""
        if self.clean:
            return None
        kernel = np.ones(WEIGHT_WINDOW)
        out = []
        for r in self._spline_squares:
            counts = np.convolve(np.ones(len(r)), kernel, mode="same")[:, None]
            local = np.stack([np.convolve(r[:, j], kernel, mode="same") for j in range(r.shape[1])], axis=1)
            w = np.clip(np.mean(r, axis=0) / np.maximum(local / counts, 1e-300), *WEIGHT_RANGE)
            out.append(w / np.maximum(np.mean(w, axis=0), 1e-300))
        return out

    @cached_property
    def weighted_share(self) -> np.ndarray:
        """Per variable, the weighted mean square of noise over its plain mean square (1 on clean data):
        the all-point splines' squared residuals with and without ``point_weights``. Weights that average
        1 shrink the mean square of noise that varies (the noisiest points weigh least), so anything
        compared with a weighted mean square in noise-variance units (the criterion's floor) is scaled
        by this share."""
        if self.point_weights is None:
            return np.ones(self.dim)
        squares = np.concatenate(self._spline_squares)
        weighted = np.mean(squares * np.concatenate(self.point_weights), axis=0)
        return weighted / np.maximum(np.mean(squares, axis=0), 1e-300)

    @cached_property
    def _spline_squares(self) -> list[np.ndarray]:
        """Per trajectory of ``ndata``, the all-point splines' squared residuals (points, variables)."""
        out = []
        for (t, x), splines in zip(self.ndata, self.all_point_splines):
            fitted = np.stack([sp(t) if sp is not None else x[:, j] for j, sp in enumerate(splines)], axis=1)
            out.append((x - fitted) ** 2)
        return out

    @cached_property
    def fit_weights(self) -> list[np.ndarray] | None:
        """``point_weights`` at the fitting points."""
        if self.point_weights is None:
            return None
        return [w[~held] for w, held in zip(self.point_weights, self.held)]

    @cached_property
    def clean(self) -> bool:
        """The data look noise-free: the smoothing spline's residuals are below 1e-3 of each variable's spread."""
        return bool(np.all(np.sqrt(self.noise_var) < 1e-3 * np.maximum(self.scale, 1e-12)))


class _Derivatives(dict):
    """Derivative estimates by name, each computed when first asked for."""

    def __init__(self, data: Sequence[Trajectory], splines: list[list]):
        super().__init__()
        self.data, self.splines = data, splines

    def __missing__(self, name: str) -> np.ndarray:
        if name.startswith("savgol"):
            w = int(name[6:])
            value = np.concatenate([estimate_derivatives(t, x, w) for t, x in self.data])
        elif name == "spline":
            parts = []
            for (t, x), row in zip(self.data, self.splines):
                if any(sp is None for sp in row):
                    parts.append(estimate_derivatives(t, x))
                    continue
                with np.errstate(all="ignore"):
                    dx = np.stack([sp.derivative()(t) for sp in row], axis=1)
                parts.append(dx if np.all(np.isfinite(dx)) else estimate_derivatives(t, x))
            value = np.concatenate(parts)
        elif name == "interp":
            value = np.concatenate([interpolating_derivatives(t, x) for t, x in self.data])
        else:
            raise KeyError(name)
        self[name] = value
        return value


class _Weights(dict):
    """Regression weights by derivative estimate name, each computed when first asked for."""

    def __init__(self, data: Sequence[Trajectory], derivatives: _Derivatives,
                 noisy: list[np.ndarray] | None = None):
        super().__init__()
        self.data, self.derivatives = data, derivatives
        # on noisy data each point's weight by its noise (Problem.fit_weights): a derivative estimate's
        # error grows with the noise of the states it smooths
        self.noisy = None if noisy is None else np.concatenate(noisy)

    def __missing__(self, name: str) -> np.ndarray:
        value = self.derivatives[name]
        if name == "interp":
            higher = np.concatenate([interpolating_derivatives(t, x, degree=7) for t, x in self.data])
            # the error's size relative to the derivative's spread: a floor keeps a point that both
            # splines agree on from outweighing all the others
            floor = (WEIGHT_FLOOR * np.maximum(value.std(axis=0), 1e-12)) ** 2
            w = 1.0 / ((value - higher) ** 2 + floor)
            w = np.where(np.isfinite(w), w, 0.0)
            w = w / np.maximum(w.mean(axis=0), 1e-300)
        elif self.noisy is not None:
            w = self.noisy
        else:
            w = np.ones_like(value)
        self[name] = w
        return w


def _spline_at_noise(t: np.ndarray, y: np.ndarray, noise_var: float):
    """The cubic smoothing spline whose residual sum of squares is the noise's (FITPACK's ``s``), or None."""
    from scipy.interpolate import UnivariateSpline

    if len(t) < 5:
        return None
    try:
        # FITPACK warns when it cannot meet ``s`` exactly; the spline it returns is still the closest
        with np.errstate(all="ignore"), quiet_scipy():
            spline = UnivariateSpline(t, y, k=3, s=len(t) * noise_var)
        return spline if np.all(np.isfinite(spline(t))) else None
    except (ValueError, np.linalg.LinAlgError):
        return None


def _smoothing_splines(t: np.ndarray, x: np.ndarray) -> list:
    out = []
    for j in range(x.shape[1]):
        try:  # fewer than 5 points raise ValueError too
            out.append(smoothing_spline(t, x[:, j]))
        except (ValueError, np.linalg.LinAlgError):
            out.append(None)
    return out


def _loo_squares(t: np.ndarray, x: np.ndarray, side: int, degree: int) -> np.ndarray:
    """Squared leave-one-out errors of each interior point against the polynomial of ``degree`` fitted
    by least squares to its ``side`` nearest neighbours on each side, each divided by ``1 + c`` where
    ``c`` is the variance of the polynomial's prediction per unit noise variance: on pure noise their
    mean is the noise variance; on clean data they are the polynomial's error (tiny where it resolves
    the curve)."""
    n = len(t)
    if n < 2 * side + 1 or 2 * side < degree + 1:
        return np.zeros((0, x.shape[1]))
    idx = np.arange(side, n - side)
    offsets = np.concatenate([np.arange(-side, 0), np.arange(1, side + 1)])
    nb = idx[:, None] + offsets[None, :]
    dt = (t[nb] - t[idx][:, None]) / np.maximum(t[nb[:, -1]] - t[nb[:, 0]], 1e-300)[:, None]
    a = np.stack([dt**k for k in range(degree + 1)], axis=2)  # (m, 2*side, degree + 1)
    try:
        with np.errstate(all="ignore"):
            inv = np.linalg.inv(np.einsum("mki,mkj->mij", a, a))
    except np.linalg.LinAlgError:
        return np.zeros((0, x.shape[1]))
    weights = np.einsum("mi,mki->mk", inv[:, 0, :], a)  # the prediction at the centre, as weights on neighbours
    pred = np.einsum("mk,mkj->mj", weights, x[nb])
    out = (x[idx] - pred) ** 2 / (1.0 + np.sum(weights**2, axis=1))[:, None]
    return out[np.all(np.isfinite(out), axis=1)]
