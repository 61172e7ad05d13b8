"""Validation of user data and names, shared by the Python API, CSV input, the CLI and HTTP (DESIGN.md 3.1)."""

from __future__ import annotations

import keyword
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import sympy as sp

MIN_POINTS = 5
#: the largest magnitude of a time or a value that the normalisation and the fit handle: squares and cubes
#: of the data (derivative estimates, sparse-regression libraries, variances) stay far from overflow
MAX_ABS_VALUE = 1e12
#: names SymPy's parser would read as functions or constants; S, I, E, N, Q, beta, gamma are fine as
#: variables because our output never uses them as functions (DESIGN.md 3.1)
_FINE = {"S", "I", "E", "N", "Q", "C", "O", "beta", "gamma"}
_RESERVED = {name for name in dir(sp) if isinstance(getattr(sp, name), sp.FunctionClass)} | {
    "sqrt", "cbrt", "root", "pi", "oo", "zoo", "nan", "abs", "ln"}


class InputError(ValueError):
    """The data or the options cannot be fitted; the message names the problem."""


@dataclass(frozen=True)
class Limits:
    """Size limits of one request (the HTTP service: both routes; shown in ``GET /v1/model``)."""

    max_points_per_trajectory: int = 5_000
    max_total_points: int = 20_000
    max_trajectories: int = 16
    max_abs_value: float = MAX_ABS_VALUE

    def as_dict(self) -> dict:
        return asdict(self)


LIMITS = Limits()


def check_limits(trajectories: Sequence[tuple], labels: Sequence[str] | None = None,
                 limits: Limits = LIMITS) -> None:
    """One system's trajectories ``[(t, x), ...]`` against ``limits`` (number of trajectories, points per
    trajectory, points in all); ``labels`` name the trajectories in messages (default ``trajectory k``)."""
    if labels is None:
        labels = [f"trajectory {k + 1}" for k in range(len(trajectories))]
    if len(trajectories) > limits.max_trajectories:
        raise InputError(f"{len(trajectories)} trajectories; at most {limits.max_trajectories}")
    total = 0
    for (t, _), label in zip(trajectories, labels):
        if len(t) > limits.max_points_per_trajectory:
            raise InputError(f"{label + ': ' if label else ''}{len(t)} points; at most "
                             f"{limits.max_points_per_trajectory} per trajectory")
        total += len(t)
    if total > limits.max_total_points:
        raise InputError(f"{total} points in all; at most {limits.max_total_points}")


def magnitude_error(value: float) -> str:
    """The message for a time or value beyond :data:`MAX_ABS_VALUE` (shared by ``prepare`` and the CSV parser)."""
    return (f"{value:g} is larger in magnitude than {MAX_ABS_VALUE:g}, the most the fit handles "
            "(rescale the data, or subtract the start time from timestamps)")


def check_variable_names(names: Sequence[str]) -> None:
    seen = set()
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(f"variable name {name!r} is not a Python identifier")
        if keyword.iskeyword(name):
            raise InputError(f"variable name {name!r} is a Python keyword")
        if name == "t":
            raise InputError("variable name 't' is reserved for time")
        if name in _RESERVED and name not in _FINE:
            raise InputError(f"variable name {name!r} is a SymPy function or constant name")
        if name in seen:
            raise InputError(f"variable name {name!r} appears twice")
        seen.add(name)


def prepare(t, x, max_dim: int, variables: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """One trajectory (arrays) or several (lists of arrays) -> sorted float arrays, checked. Messages start
    with ``trajectory k:`` (counted from 1); ``variables`` (optional) name the columns of ``x`` in them."""
    if isinstance(t, (list, tuple)) and len(t) and np.ndim(t[0]) == 1:
        if not isinstance(x, (list, tuple)) or len(x) != len(t):
            raise InputError("t is a list of trajectories: x must be a list of the same length")
        pairs = list(zip(t, x))
    else:
        pairs = [(t, x)]
    out = []
    dims = set()
    for k, (ti, xi) in enumerate(pairs):
        where = f"trajectory {k + 1}: "
        try:
            ti = np.asarray(ti, dtype=np.float64)
            xi = np.asarray(xi, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{where}t and x must be numeric") from None
        if ti.ndim != 1:
            raise InputError(f"{where}t must be one-dimensional, got shape {ti.shape}")
        if xi.ndim == 1:
            xi = xi[:, None]
        if xi.ndim != 2 or xi.shape[0] != len(ti):
            raise InputError(f"{where}x must have shape (len(t), n_variables), got {xi.shape} for {len(ti)} times")
        if len(ti) < MIN_POINTS:
            raise InputError(f"{where}{len(ti)} points; at least {MIN_POINTS} are needed")
        bad = ~np.isfinite(ti)
        if bad.any():
            raise InputError(f"{where}t[{int(np.argmax(bad))}] is not finite")
        bad_x = ~np.isfinite(xi)
        if bad_x.any():
            r, c = np.argwhere(bad_x)[0]
            raise InputError(f"{where}x[{r}, {c}]{_column(variables, c)} is not finite")
        big = np.abs(ti) > MAX_ABS_VALUE
        if big.any():
            i = int(np.argmax(big))
            raise InputError(f"{where}t[{i}] = {magnitude_error(float(ti[i]))}")
        big_x = np.abs(xi) > MAX_ABS_VALUE
        if big_x.any():
            r, c = np.argwhere(big_x)[0]
            raise InputError(f"{where}x[{r}, {c}]{_column(variables, c)} = {magnitude_error(float(xi[r, c]))}")
        order = np.argsort(ti, kind="stable")
        ti, xi = ti[order], xi[order]
        dup = np.flatnonzero(np.diff(ti) == 0)
        if len(dup):
            raise InputError(f"{where}duplicate time t={ti[dup[0]]}")
        dims.add(xi.shape[1])
        out.append((ti, xi))
    if len(dims) != 1:
        raise InputError(f"trajectories have different numbers of variables: {sorted(dims)}")
    d = dims.pop()
    if d > max_dim:
        raise InputError(f"{d} variables; the model supports at most {max_dim}")
    return out


def _column(variables: Sequence[str] | None, c: int) -> str:
    return f" ({variables[c]})" if variables is not None and c < len(variables) else ""
