"""Unit coefficients (odeformer/search/units.py): a coefficient near +-1 in the user's units is tried at
exactly that, whatever the normalisation, and kept only where the criterion prefers it."""

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp
from sympy.parsing.sympy_parser import parse_expr

from data_gen.expressions import CONST, split_constants, to_sympy
from odeformer import ODERegressor
from odeformer.encoding import Normalization
from odeformer.search.units import unit_coefficients

X, Y = sp.symbols("x y")


def user_rhs(norm: Normalization, components, constants) -> list[sp.Expr]:
    """The system in the user's units, as the search writes its answers."""
    syms = [sp.Symbol("x_0"), sp.Symbol("x_1")]
    exprs = [to_sympy(c, cc) for c, cc in zip(components, split_constants(components, constants))]
    return [sp.expand(e) for e in norm.invert(exprs, syms, sp.Symbol("t"))]


def test_fixed_coefficients_are_exact_in_the_users_units():
    # user units: t over 2 time units (t_scale 5), x up to 1,800 and y up to 9,000 (rescaled by 360, 1,800)
    norm = Normalization(0.0, 5.0, np.array([360.0, 1800.0]))
    comp = ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("pow3", "x_0")))
    # in the user's units: 0.97 * x_1 + 1.2 * x_0**3 (a coefficient c of x_1 reads 360 * 5 * c / 1800 = c
    # there, one of x_0**3 reads 360 * 5 * c / 360**3)
    c_lin, c_cube = 0.97, 1.2 * 360.0**3 / 360.0 / 5.0
    assert unit_coefficients((comp,), [0.5, 0.0], norm) is None  # 0.5: not near a unit
    (fixed,), consts = unit_coefficients((comp,), [c_lin, c_cube], norm, tol=0.1)
    assert consts == [c_cube]  # x_1's coefficient is no longer free, x_0**3's (1.2) still is
    rhs = user_rhs(norm, (fixed,), consts)[0]
    assert abs(float(rhs.coeff(sp.Symbol("x_1"))) - 1.0) < 1e-12
    assert abs(float(rhs.coeff(sp.Symbol("x_0") ** 3)) - 1.2) < 1e-9
    (both,), consts = unit_coefficients((comp,), [c_lin, c_cube], norm, tol=0.25)
    assert consts == []
    rhs = user_rhs(norm, (both,), consts)[0]
    assert abs(float(rhs.coeff(sp.Symbol("x_0") ** 3)) - 1.0) < 1e-12


def duffing(scale_t: float = 1.0, scale: tuple = (1.0, 1.0)):
    """A damped Duffing oscillator x' = y, y' = x - x**3 - 0.18 y (clean, 150 points), in other units."""
    t = np.linspace(0, 10, 150)
    z = solve_ivp(lambda _, u: [u[1], u[0] - u[0] ** 3 - 0.18 * u[1]], (0, 10), [-1.8, -1.8], t_eval=t,
                  rtol=1e-10, atol=1e-10).y.T
    # dX/dT with X = a x, Y = b y, T = t / s: X' = (a s / b) Y, the law's 1 where a s = b
    return t / scale_t, z * np.array(scale)


def test_a_law_with_unit_coefficients_comes_back_with_them():
    t, z = duffing()
    best = ODERegressor().fit(t, z, variables=["x", "y"]).equations_[0]
    rhs = {k: parse_expr(v, local_dict={"x": X, "y": Y}) for k, v in best.rhs.items()}
    assert rhs["x"] == Y  # exactly, not 0.99999999*y
    assert rhs["y"].coeff(X ** 3) == -1 and rhs["y"].coeff(X) == 1
    assert abs(float(rhs["y"].coeff(Y)) + 0.18) < 1e-4


def test_unit_coefficients_in_rescaled_units():
    # x in thousands, y in five-thousands, time compressed five times: still X' = Y exactly
    t, z = duffing(scale_t=5.0, scale=(1000.0, 5000.0))
    best = ODERegressor().fit(t, z, variables=["x", "y"]).equations_[0]
    rhs = {k: parse_expr(v, local_dict={"x": X, "y": Y}) for k, v in best.rhs.items()}
    assert rhs["x"] == Y
    assert abs(float(rhs["y"].coeff(X)) - 25.0) < 1e-3  # 5 * 5000 / 1000 * 1: not a unit, stays a constant


def test_a_coefficient_near_one_is_not_forced():
    # x' = -1.15 x + 0.3: -1.15 is within the wider tolerance of -1, and the data say it is not -1
    t = np.linspace(0, 10, 120)
    x = (0.3 / 1.15 + (2.0 - 0.3 / 1.15) * np.exp(-1.15 * t))[:, None]
    best = ODERegressor().fit(t, x, variables=["x"]).equations_[0]
    rhs = parse_expr(best.rhs["x"], local_dict={"x": X})
    assert abs(float(rhs.coeff(X)) + 1.15) < 1e-3
