"""Cheap fits of one component: its additive terms' coefficients by linear least squares, against the
derivative estimate on clean data and in integral (weak) form on noisy data (each point weighted by
its noise, ``Problem.point_weights``), scored by a BIC. No
integration: thousands of edited components can be screened in the time one trajectory refit takes."""

from __future__ import annotations

import numpy as np

from data_gen.expressions import CONST
from odeformer.search.library import Term, additive_terms, signed_terms
from odeformer.search.problem import Problem

#: per-term penalty multiple of BIC's log n (regression.PENALTIES): derivative estimates and integrals of
#: smoothed states have correlated errors, so n overstates the evidence
PENALTY = 4.0


def component_terms(tree, consts) -> tuple[Term | None, ...]:
    """A component as its additive terms without their leading coefficients (None: a constant term)."""
    terms: list[Term | None] = list(additive_terms(tree, consts))
    if any(node == CONST for _, node, _ in signed_terms(tree, list(consts))):
        terms.append(None)
    return tuple(terms)


def integrated(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """Columns given on the pooled integration grid, integrated (cumulative Simpson) from each
    trajectory's start to its fitting points and centred per trajectory."""
    from scipy.integrate import cumulative_simpson

    cols, start = [], 0
    for fine, _, at in problem.integration_grid:
        block = cumulative_simpson(theta[start:start + len(fine)], x=fine, axis=0, initial=0.0)[at]
        cols.append(block - block.mean(axis=0))
        start += len(fine)
    return np.concatenate(cols)


class LinearFits:
    """Per-problem screening of components given as term tuples; library columns are cached by term.
    ``states``: on noisy data, the states on the integration grid to regress along (default: the
    smoothing splines'; the local search passes a candidate's simulated trajectory)."""

    def __init__(self, problem: Problem, states: np.ndarray | None = None):
        self.problem = problem
        self.integral = not problem.clean
        if self.integral:
            self.states, self.times = problem.integration_points
            if states is not None:
                self.states = states
            # each point counts by its noise, as in the criterion (Problem.point_weights)
            self.weights = None if problem.fit_weights is None else np.sqrt(np.concatenate(problem.fit_weights))
            self.targets = problem.integration_targets
            if self.weights is not None:
                self.targets = self.targets * self.weights
        else:
            self.times, self.states = problem.fit_points
            est = problem.best_estimator
            self.weights = np.sqrt(problem.derivative_weights[est])
            self.targets = problem.derivatives[est] * self.weights
        self.n = len(self.targets)
        self._columns: dict[str | None, np.ndarray | None] = {}
        self._fits: dict[tuple, tuple[np.ndarray, float] | None] = {}  # the climb asks for one often

    def column(self, term: Term | None, i: int) -> np.ndarray | None:
        """The regression column of ``term`` for component ``i`` (None where it is not finite)."""
        key = None if term is None else term.key
        if key not in self._columns:
            raw = np.ones(len(self.times)) if term is None else term.column(self.states, self.times)
            ok = np.all(np.isfinite(raw)) and np.max(np.abs(raw)) < 1e8
            if ok and self.integral:
                raw = integrated(self.problem, raw[:, None])[:, 0]
            self._columns[key] = raw if ok else None
        col = self._columns[key]
        if col is None or self.weights is None:
            return col
        return col * self.weights[:, i]

    def fit(self, terms: tuple[Term | None, ...], i: int) -> tuple[np.ndarray, float] | None:
        """Least-squares coefficients of ``terms`` for component ``i`` and the component's BIC."""
        if (terms, i) not in self._fits:
            self._fits[terms, i] = self._fit(terms, i)
        return self._fits[terms, i]

    def _fit(self, terms: tuple[Term | None, ...], i: int) -> tuple[np.ndarray, float] | None:
        cols = [self.column(term, i) for term in terms]
        if any(c is None for c in cols):
            return None
        y = self.targets[:, i]
        if cols:
            a = np.stack(cols, axis=1)
            coef, *_ = np.linalg.lstsq(a, y, rcond=None)
            r = y - a @ coef
        else:
            coef, r = np.zeros(0), y
        sse = float(r @ r)
        floor = 1e-24 * max(float(y @ y), 1e-300)
        return coef, float(self.n * np.log(max(sse, floor) / self.n) + PENALTY * len(terms) * np.log(self.n))
