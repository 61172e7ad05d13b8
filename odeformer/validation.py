"""Validation of user data and names, shared by the Python API, CSV input, the CLI and HTTP (DESIGN.md 3.1)."""

from __future__ import annotations

import keyword
from collections.abc import Sequence

import numpy as np
import sympy as sp

MIN_POINTS = 5
#: names SymPy's parser would read as functions or constants; S, I, E, N, Q, beta, gamma are fine as
#: variables because our output never uses them as functions (DESIGN.md 3.1)
_FINE = {"S", "I", "E", "N", "Q", "C", "O", "beta", "gamma"}
_RESERVED = {name for name in dir(sp) if isinstance(getattr(sp, name), sp.FunctionClass)} | {
    "sqrt", "cbrt", "root", "pi", "oo", "zoo", "nan", "abs", "ln"}


class InputError(ValueError):
    """The data or the options cannot be fitted; the message names the problem."""


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


def prepare(t, x, max_dim: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One trajectory (arrays) or several (lists of arrays) -> sorted float arrays, checked."""
    if isinstance(t, (list, tuple)) and len(t) and np.ndim(t[0]) == 1:
        if not isinstance(x, (list, tuple)) or len(x) != len(t):
            raise InputError("t is a list of trajectories: x must be a list of the same length")
        pairs = list(zip(t, x))
    else:
        pairs = [(t, x)]
    out = []
    dims = set()
    for k, (ti, xi) in enumerate(pairs):
        where = f"trajectory {k}: " if len(pairs) > 1 else ""
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
            raise InputError(f"{where}x[{r}, {c}] is not finite")
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
