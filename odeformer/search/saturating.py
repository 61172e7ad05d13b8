"""Proposal source: libraries with fitted nonlinear parameters, the building blocks polynomials only
approximate. Saturations ``x/(K + x)`` (Michaelis-Menten, Monod, Holling II, also ``y*x/(K + x)``),
Hill activation ``x**n/(K**n + x**n)`` and repression ``1/(K**n + x**n)`` for n = 1..4, ``exp(c*x)``,
``tanh(c*x)``, ``sqrt(x)`` and the fractional powers of allometric and surface laws (``x**(2/3)``,
``x**(3/4)``...). K and c are scanned over a grid scaled to each variable's range (each
value one column); the regression picks the value that fits the derivatives best, and the refit then
tunes it on the trajectories. Only terms the allowed operators can write are offered."""

from __future__ import annotations

import numpy as np

from data_gen.expressions import CONST, Tree, var_name
from odeformer.search.library import Term, polynomial_terms, power
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal
from odeformer.search.sparse import LibrarySource

#: K (and 1/c) as multiples of a variable's median magnitude
SCALES = (0.2, 0.5, 1.0, 2.0, 5.0)
#: exponents of positive variables besides 1/2 (von Bertalanffy's 2/3, Kleiber's 3/4, Torricelli's 3/2)
FRACTIONAL_POWERS = ("1/3", "2/3", "3/4", "4/3", "3/2")


def saturating_terms(x: np.ndarray, ops: set[str]) -> list[Term]:
    """The nonlinear-parameter terms of every variable, for data ``x`` (n, d) in the normalised frame."""
    out: list[Term] = []
    d = x.shape[1]
    for i in range(d):
        v: Tree = var_name(i)
        xi = x[:, i]
        mid = float(np.median(np.abs(xi))) or 1.0
        spread = float(np.ptp(xi)) or mid
        if xi.min() > 0:  # saturations and Hill terms of a positive quantity (a concentration, a population)
            for n in (1, 2, 3, 4):
                vn = power(v, n, ops)
                if vn is None:
                    continue
                for s in SCALES:
                    kn = (s * mid) ** n
                    out.append(Term(("div", vn, ("add", CONST, vn)), (kn,)))
                    out.append(Term(("inv", ("add", CONST, vn)), (kn,)))
                    if n == 1:
                        out += [Term(("div", ("mul", var_name(j), v), ("add", CONST, v)), (kn,))
                                for j in range(d) if j != i]
            out.append(Term(("sqrt", v)))
            out += [Term(("pow", v, p)) for p in FRACTIONAL_POWERS]
        for s in SCALES:
            for sign in (1.0, -1.0):
                c = sign / (s * spread)
                out.append(Term(("exp", ("mul", CONST, v)), (c,)))
                if sign > 0:
                    out.append(Term(("tanh", ("mul", CONST, v)), (c,)))
    return [term for term in out if term.uses_only(ops)]


class Saturating(LibrarySource):
    name = "saturating"
    scanned = True

    def libraries(self, problem: Problem, earlier: list[Proposal]) -> dict[str, list[Term]]:
        _, x = problem.fit_points
        extra = saturating_terms(x, problem.operators)
        if not extra:
            return {}
        linear = polynomial_terms(problem.dim, problem.operators, False, degree=1)
        quadratic = polynomial_terms(problem.dim, problem.operators, False, degree=2)
        return {"linear+saturating": linear + extra, "quadratic+saturating": quadratic + extra}
