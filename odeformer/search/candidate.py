"""A ranked candidate: the equations in the user's units and names, its fit and its criterion."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import sympy as sp

from data_gen.expressions import TIME, leaves, split_constants, to_sympy, var_name
from odeformer import display
from odeformer.metrics import r2_score
from odeformer.search.problem import Problem
from odeformer.search.ranking import at_floor, criterion, instability, start_cost
from odeformer.search.refit import Fit, simulate

#: an answer that reproduces less of the data's variance than this (R², contract 3.2's ``r2``) is flagged
#: ``low_confidence``; the local search climbs on while no candidate reaches it (local.POOR_R2)
LOW_CONFIDENCE_R2 = 0.9


@dataclass(repr=False)
class Candidate:
    names: list[str]  # the user's variable names, in order
    expressions: list[sp.Expr]
    r2: float
    complexity: int
    score: float  # -criterion (ranking.py): higher is better, in nats
    pareto: bool = False
    fit: Fit | None = None  # components and constants in the model's frame
    source: str = ""
    #: it reproduces the data to within the criterion's floor (ranking.at_floor)
    exact: bool = False
    #: nats below the best candidate's score in its result (0 for the best; odeformer/ambiguity.py)
    score_gap: float = 0.0
    #: seconds its refit and ranking took (schedule.py shares out the budget by them)
    seconds: float = 0.0

    @cached_property
    def rhs(self) -> dict[str, str]:
        """``{variable: exact right-hand side}``; written on first read: printing is a twentieth of a fit's
        time, and most candidates are ranked and dropped unread."""
        return {n: display.rhs_string(e) for n, e in zip(self.names, self.expressions)}

    def __repr__(self) -> str:
        return (f"Candidate(rhs={self.rhs!r}, r2={self.r2!r}, complexity={self.complexity!r}, score={self.score!r}, "
                f"pareto={self.pareto!r}, source={self.source!r}, score_gap={self.score_gap!r})")

    def to_dict(self) -> dict:
        return {"rhs": self.rhs, "latex": display.latex_rhs(self.expressions, self.names), "r2": self.r2,
                "complexity": self.complexity, "score": self.score, "pareto": self.pareto,
                "score_gap": self.score_gap}


def evaluate_fit(problem: Problem, fit: Fit, source: str = "") -> Candidate | None:
    """Simulate a fitted system from each trajectory's start, score it, and write it in the user's units
    (None when it cannot be integrated)."""
    # ranked from the initial states fitted with the constants on noisy data (a noisy first point is not
    # the truth; on clean data they are the observed ones); R^2 from the observed first points (contract 3.2)
    preds = [simulate(fit.components, fit.constants, t, fit.start(k, x[0]), problem.deadline)
             for k, (t, x) in enumerate(problem.ndata)]
    observed = preds if fit.x0 is None else [simulate(fit.components, fit.constants, t, x[0], problem.deadline)
                                             for t, x in problem.ndata]
    if any(p is None for p in preds) or any(p is None for p in observed):
        return None
    r2_all = _user_r2(problem, observed)
    if not np.isfinite(r2_all):
        return None
    x_syms = [sp.Symbol(var_name(i)) for i in range(problem.dim)]
    exprs = [to_sympy(comp, cc) for comp, cc in zip(fit.components, split_constants(fit.components, fit.constants))]
    user = problem.norm.invert(exprs, x_syms, sp.Symbol("t"))
    rename = {xs: sp.Symbol(n) for xs, n in zip(x_syms, problem.names)}
    user = [sp.expand(e.xreplace(rename)) if _count_nodes(e) < 60 else e.xreplace(rename) for e in user]
    user = [display.tidy(_floats(e)) for e in user]
    complexity = sum(_count_nodes(e) for e in user)
    time_terms = sum(1 for comp in fit.components for leaf in leaves(comp) if leaf == TIME)
    value = (criterion(problem, preds, len(fit.constants), complexity, time_terms) + instability(problem, fit)
             + start_cost(problem, fit))
    if not np.isfinite(value):
        return None
    return Candidate(list(problem.names), user, float(r2_all), complexity, -value, fit=fit, source=source,
                     exact=at_floor(problem, preds))


def observed_r2(problem: Problem, fit: Fit) -> float:
    """R² (user units) of a fit re-integrated from each trajectory's observed first state over all its
    points: contract 3.2's ``r2`` (-inf where it cannot be integrated)."""
    preds = [simulate(fit.components, fit.constants, t, x[0], problem.deadline) for t, x in problem.ndata]
    return -np.inf if any(p is None for p in preds) else _user_r2(problem, preds)


def _user_r2(problem: Problem, preds: list[np.ndarray]) -> float:
    """R² of predictions at every point of each normalised trajectory, in the user's units."""
    return r2_score(np.concatenate([x for _, x in problem.data]),
                    np.concatenate([p * problem.norm.x_scale for p in preds]))


def _count_nodes(e: sp.Expr) -> int:
    return sum(1 for _ in sp.preorder_traversal(e))


def _floats(e: sp.Expr) -> sp.Expr:
    """Numbers as floats (integer exponents stay integers); no E, pi or I in the output."""
    if isinstance(e, sp.Float):
        return e
    if e.is_Number or isinstance(e, sp.NumberSymbol):
        return sp.Float(float(e))
    if e.is_Pow:
        base, ex = e.args
        return sp.Pow(_floats(base), ex if ex.is_Integer else _floats(ex))
    if e.args:
        return e.func(*[_floats(a) for a in e.args])
    return e


def form(c: Candidate) -> tuple:
    """The candidate's equations up to their constants."""
    return tuple(sp.srepr(e.xreplace({f: sp.Integer(1) for f in e.atoms(sp.Float)})) for e in c.expressions)


def distinct(cands: list[Candidate]) -> list[Candidate]:
    """Drop candidates whose equations have the same form (up to constants) as a better one."""
    seen, out = set(), []
    for c in cands:
        key = form(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def mark_pareto(cands: list[Candidate]) -> None:
    """A candidate is on the front when no other is both simpler (or as simple) and fits better."""
    for c in cands:
        c.pareto = not any(o is not c and o.complexity <= c.complexity and o.r2 > c.r2 for o in cands)
