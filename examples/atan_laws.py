"""The retraining walkthrough's check (docs/retraining.md): laws that need ``atan``, fitted by each model.

    python examples/atan_laws.py default tiny checkpoints/atan

For each model and law: the best equation; whether it is the law (it agrees with the true right-hand
side within 1% of the latter's largest magnitude everywhere on x in [-10, 10], far beyond the data, where
an approximant that only fits the observed range parts from it); and generalisation: R² of the equation
re-integrated from a new initial state against the true trajectory. The data are clean, 100 points over
t in [0, 10].
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

from odeformer import ODERegressor
from odeformer.metrics import r2_score

X = sp.Symbol("x")
#: name: (law as SymPy text, initial state of the data, new initial state for generalisation)
LAWS = {
    "nonlinear damping": ("-x*atan(x)", 2.0, -1.0),
    "arctangent relaxation": ("-2*atan(x)", 3.0, -2.0),
    "arctangent growth": ("0.8*atan(0.5*x)", 0.5, 3.0),
}
T = np.linspace(0.0, 10.0, 100)


def trajectory(law: sp.Expr, x0: float) -> np.ndarray:
    f = sp.lambdify(X, law, "numpy")
    return solve_ivp(lambda t, x: [f(x[0])], (0.0, 10.0), [x0], t_eval=T, rtol=1e-10, atol=1e-10).y.T


WIDE = np.linspace(-10.0, 10.0, 201)


def is_the_law(found: str, law: sp.Expr) -> bool:
    """The found right-hand side agrees with the law on x in [-10, 10] within 1% of the law's largest value."""
    expr = sp.parse_expr(found, {"x": X, "t": sp.Symbol("t")})
    if expr.free_symbols - {X}:
        return False  # it depends on time: not this autonomous law
    with np.errstate(all="ignore"):
        ours = np.broadcast_to(sp.lambdify(X, expr, "numpy")(WIDE), WIDE.shape)
    truth = sp.lambdify(X, law, "numpy")(WIDE)
    return bool(np.all(np.isfinite(ours)) and np.max(np.abs(ours - truth)) < 0.01 * np.max(np.abs(truth)))


def main(checkpoints: list[str]) -> None:
    for ck in checkpoints:
        model = ODERegressor(ck)
        print(f"== {ck}")
        for name, (text, x0, x0_new) in LAWS.items():
            law = sp.parse_expr(text, {"x": X})
            model.fit(T, trajectory(law, x0), variables=["x"])
            rhs = model.equations_[0].rhs["x"]
            truth = trajectory(law, x0_new)
            try:
                with warnings.catch_warnings():  # overflow in an approximant that leaves the data's range
                    warnings.simplefilter("ignore", RuntimeWarning)
                    pred = model.predict(T, [x0_new])
                r2 = r2_score(truth, pred)
            except Exception:  # the equation does not integrate from the new state
                r2 = float("nan")
            shown = rhs if len(rhs) <= 90 else rhs[:87] + "..."
            print(f"  {name:22s} dx/dt = {text:16s} law found: {'yes' if is_the_law(rhs, law) else 'no ':3s} "
                  f"generalisation R2 {r2:9.4f}   {shown}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["default"])
