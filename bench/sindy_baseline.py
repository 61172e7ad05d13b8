"""The PySINDy baseline of the benchmarks (optional ``bench`` extra: ``pip install -e .[bench]``).

SINDy with a polynomial (degree <= 3) + Fourier library and the STLSQ optimiser, tuned per system as
the ODEBench baselines were: every (degree, frequencies, threshold) of a small grid is fitted on the
first 70% of the observed trajectory, simulated from the first observation, and scored by R^2 on the
last 30%; the winner is refitted on all of it. Two derivative estimates: PySINDy's own smoothed finite
differences (``fd``) and the derivative of a smoothing spline with its penalty chosen by generalised
cross-validation (``spline``, scipy's ``make_smoothing_spline``). Non-autonomous data (``time_input``)
gives SINDy the time as a control input, so its library holds polynomials and sines of ``t`` too.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import sympy as sp

DEGREES = (1, 2, 3)
FREQUENCIES = (0, 1, 2)
THRESHOLDS = (1e-3, 1e-2, 0.03, 0.1, 0.3)
TRAIN_SHARE = 0.7
_FACTOR = re.compile(r"^(x_\d+|t)(?:\^(\d+))?$")
_TRIG = re.compile(r"^(sin|cos)\((\d+) (x_\d+|t)\)$")


def feature_expr(name: str, symbols: dict[str, sp.Symbol]) -> sp.Expr:
    """A PySINDy feature name (``1``, ``x_0^2 x_1``, ``sin(2 x_1)``, ``x_0 t``) as a SymPy expression,
    read with an explicit grammar rather than ``sympify``."""
    if name == "1":
        return sp.Integer(1)
    trig = _TRIG.match(name)
    if trig:
        fn = sp.sin if trig.group(1) == "sin" else sp.cos
        return fn(int(trig.group(2)) * symbols[trig.group(3)])
    out = sp.Integer(1)
    for factor in name.split(" "):
        m = _FACTOR.match(factor)
        if not m:
            raise ValueError(f"unexpected PySINDy feature {name!r}")
        out *= symbols[m.group(1)] ** int(m.group(2) or 1)
    return out


def _library(degree: int, frequencies: int):
    import pysindy as ps

    lib = ps.PolynomialLibrary(degree=degree)
    return lib + ps.FourierLibrary(n_frequencies=frequencies) if frequencies else lib


def _fit(t, x, x_dot, degree, frequencies, threshold, time_input, names):
    import pysindy as ps

    model = ps.SINDy(optimizer=ps.STLSQ(threshold=threshold, alpha=0.05), feature_library=_library(degree, frequencies))
    kwargs = {"u": t[:, None]} if time_input else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, t=t, x_dot=x_dot, feature_names=names, **kwargs)
    symbols = {n: sp.Symbol(n) for n in names}
    feats = [feature_expr(n, symbols) for n in model.get_feature_names()]
    coefs = model.coefficients()
    return [sp.Add(*[sp.Float(float(c), 6) * f for c, f in zip(row, feats) if c != 0.0]) for row in coefs]


def simulate(exprs: list[sp.Expr], x0: np.ndarray, t_eval: np.ndarray, max_seconds: float = 2.0):
    """Integrate ``exprs`` (in x_0.., t) as the benchmark does; None when it fails or runs too long."""
    from odebench import integrate, lambdify_exprs

    return integrate(lambdify_exprs(exprs, len(exprs)), x0, t_eval, max_seconds)


def fit_sindy(t: np.ndarray, x: np.ndarray, derivative: str = "fd", time_input: bool = False) -> list[sp.Expr]:
    """The tuned SINDy model of one observed trajectory, as SymPy right-hand sides in ``x_i`` (and ``t``)."""
    import pysindy as ps
    from odebench import r2

    from odeformer.derivatives import spline_derivatives

    t, x = np.asarray(t, float), np.asarray(x, float)
    dim = x.shape[1]
    names = [f"x_{i}" for i in range(dim)] + (["t"] if time_input else [])

    def derivs(tt, xx):
        if derivative == "spline":
            return spline_derivatives(tt, xx)
        if derivative == "fd":
            return ps.SmoothedFiniteDifference()(xx, tt)
        raise ValueError(f"unknown derivative method {derivative!r}")

    cut = max(int(len(t) * TRAIN_SHARE), 8)
    dx_train = derivs(t[:cut], x[:cut])
    best, best_score = None, -np.inf
    for degree in DEGREES:
        for freq in FREQUENCIES:
            for threshold in THRESHOLDS:
                try:
                    exprs = _fit(t[:cut], x[:cut], dx_train, degree, freq, threshold, time_input, names)
                except (ValueError, np.linalg.LinAlgError):
                    continue
                pred = simulate(exprs, x[0], t)
                score = r2(x[cut:], None if pred is None else pred[cut:])
                if score > best_score:
                    best, best_score = (degree, freq, threshold), score
    if best is None:
        best = (1, 0, THRESHOLDS[0])
    return _fit(t, x, derivs(t, x), *best, time_input, names)

