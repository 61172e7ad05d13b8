"""Proposal source: libraries with fitted nonlinear parameters, the building blocks polynomials only
approximate. Saturations ``x/(K + x)`` (Michaelis-Menten, Monod, Holling II, also ``y*x/(K + x)``),
Hill activation ``x**n/(K**n + x**n)`` and repression ``1/(K**n + x**n)`` for n = 1..4, ``exp(c*x)``,
``tanh(c*x)``, ``sqrt(x)`` and the fractional powers of allometric and surface laws (``x**(2/3)``,
``x**(3/4)``...). K and c are scanned over a grid scaled to each variable's range (each
value one column); the regression picks the value that fits the derivatives best, and the refit then
tunes it on the trajectories. A grid this coarse misses a law whose fit hinges on K (``2/(1 + x**2) -
x/2`` fits no better with K = 1.9 than a dozen wrong pairs do), so on clean data of one and two
variables each family's constant is also tuned continuously next to the polynomial terms (``tuned_terms``), and the
tuned terms make a small library of their own beside the linear terms. Only terms the allowed operators
can write are offered."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from data_gen.expressions import CONST, Tree, var_name
from odeformer.search.library import Term, polynomial_terms, power
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal
from odeformer.search.regression import library_matrix
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


#: tuned terms for clean systems of at most this many variables: with three, their library's regressions
#: and refits lifted the median latency of a three-variable fit from 2.4 s to 3.1 s; on noisy data they
#: changed no answer on ODEBench's noisy settings and cost a system at a 2 s budget
MAX_TUNED_DIM = 2
#: a tuned constant is refined to this share of its value: on clean data an exact law's support wins
#: the sparse path only with its constant exact
TOLERANCE = 1e-8


def tuned_terms(terms: list[Term], bases: list[list[Term]], x: np.ndarray, t: np.ndarray, targets: np.ndarray,
                weights: np.ndarray) -> list[Term]:
    """For every component (column of ``targets``, with ``weights``), every base (polynomial terms and a
    constant) and every family of ``terms`` with one inner constant (one form at its grid values): the
    family's terms at the constants that let base + term fit the component best by least squares (the
    grid's local minima, each refined between its neighbours by Brent's method). Not beyond the grid:
    past its ends a term is a constant or a line on the data (x/(K + x) with K far above x, tanh(c*x)
    with c near 0), no saturation. Each tuned term once."""
    families: dict[str, list[Term]] = {}
    for term in terms:
        if len(term.consts) == 1:
            families.setdefault(term.form, []).append(term)
    found: dict[str, Term] = {}
    for base in bases:
        theta, _ = library_matrix(base, x, t)  # the usable columns and a constant one
        for i in range(targets.shape[1]):
            root = np.sqrt(weights[:, i])
            q, _ = np.linalg.qr(theta * root[:, None])
            y = targets[:, i] * root
            r = y - q @ (q.T @ y)
            for members in families.values():
                for term in _tuned(members, x, t, q, r, root):
                    found.setdefault(term.key, term)
    return list(found.values())


def _tuned(members: list[Term], x: np.ndarray, t: np.ndarray, q: np.ndarray, r: np.ndarray,
           root: np.ndarray) -> list[Term]:
    """The family's terms whose column, added to the orthonormal basis ``q`` (residual ``r``), leaves a
    least squared error: one per local minimum along the grid (of each sign), refined between its
    neighbours. Several: a large K that makes the term a polynomial on the data is often a minimum too."""
    tree = members[0].tree
    rr = float(r @ r)

    def error(value: float) -> float:
        col = Term(tree, (value,)).column(x, t) * root
        if not np.all(np.isfinite(col)) or np.max(np.abs(col)) > 1e8:
            return np.inf
        perp = col - q @ (q.T @ col)
        norm = float(perp @ perp)
        if norm <= 1e-12 * float(col @ col):  # inside the base's span: it explains nothing new
            return rr
        return rr - float(perp @ r) ** 2 / norm

    out = []
    grid = sorted({m.consts[0] for m in members})
    for sign in (1.0, -1.0):
        same = [v for v in grid if np.sign(v) == sign]
        errors = [error(v) for v in same]
        for k, (e0, v0) in enumerate(zip(errors, same)):
            if not np.isfinite(e0) or (k > 0 and errors[k - 1] < e0) or (k + 1 < len(same) and errors[k + 1] < e0):
                continue
            lo, hi = same[max(k - 1, 0)], same[min(k + 1, len(same) - 1)]
            if lo < hi:
                with np.errstate(all="ignore"):  # a pole or an overflow inside the bracket is just a bad value
                    res = minimize_scalar(error, bounds=(lo, hi), method="bounded",
                                          options={"xatol": TOLERANCE * abs(v0)})
                if res.success and np.isfinite(res.fun) and res.fun < e0:
                    v0 = float(res.x)
            out.append(Term(tree, (float(v0),)))
    return out


class Saturating(LibrarySource):
    name = "saturating"
    scanned = True

    def libraries(self, problem: Problem, earlier: list[Proposal]) -> dict[str, list[Term]]:
        t, x = problem.fit_points
        extra = saturating_terms(x, problem.operators)
        if not extra:
            return {}
        linear = polynomial_terms(problem.dim, problem.operators, False, degree=1)
        quadratic = polynomial_terms(problem.dim, problem.operators, False, degree=2)
        libraries = {"linear+saturating": linear + extra, "quadratic+saturating": quadratic + extra}
        if problem.dim <= MAX_TUNED_DIM and problem.clean:
            est = problem.best_estimator
            tuned = tuned_terms(extra, [linear, quadratic], x, t, problem.derivatives[est],
                                problem.derivative_weights[est])
            # a small library of their own: among a hundred grid columns the sparse path can miss a tuned
            # law's exact support
            libraries["linear+tuned"] = linear + tuned
        return libraries
