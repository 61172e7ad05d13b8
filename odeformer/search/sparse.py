"""Proposal source: sparse regression of derivative estimates on term libraries (as SINDy), over the
whole sparsity path.

``LibrarySource`` is the machinery every library-based source shares: regress each component on each
library with each derivative estimate, assemble systems from the paths (``regression.py``), and pass
on the most promising. ``SparseRegression`` uses the polynomial and trigonometric libraries, the
grammar's unary terms, and the additive terms of the transformer's own proposals.
"""

from __future__ import annotations

import itertools

import numpy as np

from data_gen.expressions import evaluate, split_constants
from odeformer.search.library import (
    Term,
    additive_terms,
    grammar_terms,
    polynomial_terms,
    product_terms,
    unique,
)
from odeformer.search.linear import component_terms, integrated
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal, best_of_each_first
from odeformer.search.refit import fit_derivatives
from odeformer.search.regression import assemble, component_path, library_matrix

MAX_TERMS = 8
#: per-constant penalty multiple when library proposals are compared with each other (regression.PENALTIES)
REFERENCE_PENALTY = 4.0
#: share of the time budget after which no further library is regressed
REGRESSIONS_UNTIL = 0.6
#: systems of scanned terms with at most this many constants get their inner constants tuned before
#: they are compared
MAX_POLISHED = 6
#: the product library (pairs of variables and unary terms) grows with the square of the variables:
#: used up to this many
MAX_PRODUCT_DIM = 2


class LibrarySource:
    """Base of the library sources; subclasses say which libraries to regress on."""

    name = "library"
    #: proposals passed on at most (the engine refits at most 8 of all sources' on clean data, 24 on noisy)
    max_candidates = 16
    #: its terms hold inner constants from a scanned grid
    scanned = False

    def libraries(self, problem: Problem, earlier: list[Proposal]) -> dict[str, list[Term]]:
        raise NotImplementedError

    def estimators(self, problem: Problem) -> list[str]:
        # the interpolating spline is exact on clean data; on noisy data the integral form averages the
        # noise instead of differentiating it, the smoothing spline picks its own smoothing and the wider
        # Savitzky-Golay windows average noise away
        return ["interp", "spline", "savgol5"] if problem.clean else ["integral", "spline", "savgol9", "savgol17"]

    def propose(self, problem: Problem, earlier: list[Proposal]) -> list[Proposal]:
        t, x = problem.fit_points
        derivs = problem.derivatives
        reference = derivs[problem.best_estimator]
        reference_w = problem.derivative_weights[problem.best_estimator]
        found: dict[tuple, tuple[float, str, object]] = {}
        matrices: dict[str, tuple] = {}  # a library's columns do not depend on the derivative estimate
        libraries = self.libraries(problem, earlier)
        # every library with the most trusted estimate first: when time is short, breadth matters more
        for est, (name, terms) in itertools.product(self.estimators(problem), libraries.items()):
            if problem.expired(REGRESSIONS_UNTIL):
                break
            if est == "integral":
                theta, targets, usable = integral_form(problem, unique(terms, problem.operators))
                paths = [component_path(theta, targets[:, i], MAX_TERMS) for i in range(problem.dim)]
            else:
                if name not in matrices:
                    matrices[name] = library_matrix(unique(terms, problem.operators), x, t)
                theta, usable = matrices[name]
                root_w = np.sqrt(problem.derivative_weights[est])
                paths = [component_path(theta * root_w[:, i:i + 1], derivs[est][:, i] * root_w[:, i], MAX_TERMS)
                         for i in range(problem.dim)]
            for system in assemble(paths, usable, len(t)):
                if self.scanned and len(system.constants) <= MAX_POLISHED and not problem.expired(REGRESSIONS_UNTIL):
                    # inner constants sit on a coarse grid (c = -0.59 where the law has -0.6), which
                    # hides a one-term law behind many-term approximants: tune them first
                    tuned = fit_derivatives(system.components, system.constants, t, x, reference, problem.deadline,
                                            evaluations=200, weights=reference_w)
                    if tuned is not None:
                        system.constants = list(tuned)
                score = (_reference_bic(system.components, system.constants, x, t, reference, reference_w,
                                        REFERENCE_PENALTY) if problem.clean else
                         _integral_bic(system.components, system.constants, problem, REFERENCE_PENALTY))
                if system.key not in found or score < found[system.key][0]:
                    found[system.key] = (score, name, system)
        # the best system of each library first (they fail differently), then the rest by BIC against
        # one common derivative estimate
        order = best_of_each_first(list(found.values()), lambda r: r[1], lambda r: r[0])
        return [Proposal(s.components, list(s.constants), self.name, prior=score, tuned=self.scanned)
                for score, _, s in order[: self.max_candidates]]


def _reference_bic(components, constants, x: np.ndarray, t: np.ndarray, dxs: np.ndarray, weights: np.ndarray,
                   mult: float) -> float:
    """BIC of a system's (weighted) fit to one common derivative estimate, with ``mult`` times the usual
    penalty: comparable across libraries, estimators and library sources."""
    n = len(t)
    total, k = 0.0, len(constants)
    for i, (comp, cs) in enumerate(zip(components, split_constants(components, constants))):
        pred = np.broadcast_to(evaluate(comp, x, t, cs), n)
        sse = float(np.sum(weights[:, i] * (pred - dxs[:, i]) ** 2))
        if not np.isfinite(sse):
            return np.inf
        total += n * np.log(max(sse, 1e-300) / n)
    return total + mult * k * np.log(n)


def integral_form(problem: Problem, terms: list[Term]) -> tuple[np.ndarray, np.ndarray, list[Term | None]]:
    """The regression in integral form (as integral SINDy): each library column integrated from a
    trajectory's start along the smoothing splines' states, against the observed states, both centred
    per trajectory (the unknown starting values); the noise stays the measurement's own instead of being
    divided by a time step. Returns (columns, targets (n, d), the terms of the columns)."""
    theta, usable = library_matrix(terms, *problem.integration_points)
    return integrated(problem, theta), problem.integration_targets, usable


def _integral_bic(components, constants, problem: Problem, mult: float) -> float:
    """BIC of a system in integral (weak) form, for noisy data: each component's additive terms
    integrated along the smoothing splines' states, their coefficients refitted by least squares
    against the observed states (with a starting value per trajectory), ``mult`` times the usual
    penalty. A derivative estimate divides the noise by the time step, and coefficients fitted to one
    are biased by its smoothing; an integral averages the noise, so this ranks proposals by how well
    their terms explain the data."""
    states, times = problem.integration_points
    targets = problem.integration_targets
    n = len(targets)
    total = 0.0
    for i, (comp, cs) in enumerate(zip(components, split_constants(components, constants))):
        terms = [np.ones(len(times)) if term is None else term.column(states, times)
                 for term in component_terms(comp, cs)]
        y = targets[:, i]
        if terms:
            theta = np.stack(terms, axis=1)
            if not np.all(np.isfinite(theta)):
                return np.inf
            a = integrated(problem, theta)
            coef, *_ = np.linalg.lstsq(a, y, rcond=None)
            y = y - a @ coef
        total += n * np.log(max(float(y @ y), 1e-300) / n)
    return float(total + mult * len(constants) * np.log(n))


class SparseRegression(LibrarySource):
    """Polynomial (degree 2 and 3), quadratic with sines and cosines (PySINDy's polynomial + Fourier,
    without the cubes that would stand in for a sine over one trajectory and fail on the next), the
    transformer's terms, and the grammar's unary terms."""

    name = "sparse"

    def libraries(self, problem: Problem, earlier: list[Proposal]) -> dict[str, list[Term]]:
        ops, d = problem.operators, problem.dim
        quadratic = polynomial_terms(d, ops, False, degree=2)
        theirs = [term for p in earlier if p.source == "transformer"
                  for comp, cs in zip(p.components, split_constants(p.components, p.constants))
                  for term in additive_terms(comp, cs)]
        libs = {"quadratic": quadratic, "cubic": polynomial_terms(d, ops, False, degree=3),
                "trig": quadratic + [Term((op, f"x_{i}")) for op in ("sin", "cos") for i in range(d)]
                + ([Term("t")] + [Term((op, "t")) for op in ("sin", "cos")] if problem.use_time else [])}
        if theirs:
            libs["transformer terms"] = quadratic + theirs
        # the grammar's unary terms of the state only: exp(t) and the like imitate any trend over one
        # trajectory; time enters through the trigonometric library and the forcing source
        libs["grammar"] = grammar_terms(d, ops, False) + theirs
        # products of unary terms imitate anything over one noisy trajectory (log(x)*sin(x) won at 5% noise
        # where a polynomial law had), so they are offered on clean data only
        if d <= MAX_PRODUCT_DIM and problem.clean:
            libs["products"] = quadratic + grammar_terms(d, ops, False, degree=1) + product_terms(d, ops)
        return libs
