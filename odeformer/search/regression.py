"""Sparse regression of derivative estimates on a term library: the whole sparsity path per component
(the best support of every size, not one threshold), and systems assembled from the paths.

Each component ``dx_i/dt`` is regressed on the library columns independently. For every support size
the path keeps the support with the least squared error among three searches: forward stepwise
selection (exact, by Gram-Schmidt updates), backward elimination from the full least-squares fit
(by the inverse Gram matrix), and the supports STLSQ (as SINDy) finds at several thresholds. Members of
the path are compared by BIC on the derivatives; the best few combinations become candidate systems.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from odeformer.search.library import Term, sum_tree

STLSQ_THRESHOLDS = (0.01, 0.03, 0.1, 0.3)
#: libraries with more columns than this get backward elimination from the forward path's support of
#: this size instead of from the full fit, and no STLSQ
BACKWARD_FROM = 40
#: pairs of columns, the best of all, from which a forward path is grown besides the greedy one
BEST_PAIRS = 3


@dataclass
class Member:
    """One support of the path of one component: column indices, coefficients, squared error, BIC."""

    support: tuple[int, ...]
    coef: np.ndarray
    sse: float
    bic: float


def stlsq(theta: np.ndarray, y: np.ndarray, threshold: float, alpha: float = 0.05, iterations: int = 10) -> np.ndarray:
    """Sequentially thresholded ridge regression (as SINDy's STLSQ) on unit-norm columns; the ridge term
    keeps correlated columns (x, sin x, x**3...) from trading huge cancelling coefficients. Returns
    coefficients on the original scale."""
    norms = np.linalg.norm(theta, axis=0)
    norms[norms == 0] = 1.0
    a = theta / norms
    scale = np.linalg.norm(y) or 1.0

    def ridge(cols: np.ndarray) -> np.ndarray:
        sub = a[:, cols]
        return np.linalg.solve(sub.T @ sub + alpha * np.eye(sub.shape[1]), sub.T @ y)

    active = np.ones(a.shape[1], dtype=bool)
    coef = np.zeros(a.shape[1])
    for _ in range(iterations):
        coef[:] = 0.0
        coef[active] = ridge(active)
        keep = np.abs(coef) >= threshold * scale
        if not keep.any():
            return np.zeros(a.shape[1])
        if np.array_equal(keep, active):
            break
        active = keep
    coef[:] = 0.0
    coef[active] = np.linalg.lstsq(a[:, active], y, rcond=None)[0]  # unbiased final values
    return coef / norms


def _forward(a: np.ndarray, y: np.ndarray, max_terms: int, start: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Forward stepwise selection: at each step the column that lowers the squared error most, found
    exactly by keeping every column orthogonalised against the chosen ones; from the columns ``start``
    (whose support is the first of the path) if given."""
    q = a.copy()
    r = y.copy()
    chosen: list[int] = []
    out = []
    col_norm0 = np.einsum("ij,ij->j", a, a)
    for step in range(min(max_terms, a.shape[1])):
        norms = np.einsum("ij,ij->j", q, q)
        usable = norms > 1e-10 * np.maximum(col_norm0, 1e-300)
        usable[chosen] = False
        if not usable.any():
            break
        if step < len(start):
            j = start[step]
            if not usable[j]:
                return out
        else:
            gain = np.where(usable, (q.T @ r) ** 2 / np.where(usable, norms, 1.0), -1.0)
            j = int(np.argmax(gain))
        unit = q[:, j] / np.sqrt(norms[j])
        r = r - unit * (unit @ r)
        q = q - np.outer(unit, unit @ q)
        chosen.append(j)
        if len(chosen) >= len(start):
            out.append(tuple(sorted(chosen)))
    return out


def _best_pairs(a: np.ndarray, y: np.ndarray, top: int) -> list[tuple[int, int]]:
    """The ``top`` pairs of (unit-norm) columns that explain the most of ``y``, all pairs compared
    exactly: greedy forward selection misses a two-term law whose terms are each a poor fit alone."""
    m = a.shape[1]
    if m < 2:
        return []
    g = a.T @ a
    b = a.T @ y
    det = 1.0 - g**2
    with np.errstate(all="ignore"):
        explained = (b[:, None] ** 2 + b[None, :] ** 2 - 2.0 * g * b[:, None] * b[None, :]) / det
    explained[~np.triu(det > 1e-8, k=1)] = -np.inf
    flat = np.argsort(explained, axis=None)[::-1][:top]
    return [tuple(int(v) for v in np.unravel_index(k, (m, m))) for k in flat if np.isfinite(explained.flat[k])]


def _backward(a: np.ndarray, y: np.ndarray, max_terms: int) -> list[tuple[int, ...]]:
    """Backward elimination from the full least-squares fit: drop the column whose removal raises the
    squared error least (coef_j**2 / [G^-1]_jj), down to one column."""
    m = a.shape[1]
    if m >= a.shape[0]:
        return []
    cols = list(range(m))
    out = []
    while len(cols) > 1:
        sub = a[:, cols]
        gram = sub.T @ sub
        gram += 1e-10 * np.trace(gram) / len(cols) * np.eye(len(cols))
        try:
            inv = np.linalg.inv(gram)
        except np.linalg.LinAlgError:
            return out
        coef = inv @ (sub.T @ y)
        drop = int(np.argmin(coef**2 / np.maximum(np.diag(inv), 1e-300)))
        cols.pop(drop)
        if len(cols) <= max_terms:
            out.append(tuple(cols))
    return out


def component_path(theta: np.ndarray, y: np.ndarray, max_terms: int = 8) -> list[Member]:
    """The best support found for each size 1..max_terms, with least-squares coefficients (original
    scale) and BIC = n log(SSE/n) + k log n; sorted by BIC."""
    n = len(y)
    norms = np.linalg.norm(theta, axis=0)
    norms[norms == 0] = 1.0
    a = theta / norms
    forward = _forward(a, y, max(max_terms, BACKWARD_FROM if a.shape[1] > BACKWARD_FROM else max_terms))
    supports = {s for s in forward if len(s) <= max_terms}
    # every pair compared exactly, the best few grown forward: the greedy path's first pick can be a
    # term that no sparse law holds
    for pair in _best_pairs(a, y, BEST_PAIRS):
        supports |= set(_forward(a, y, max_terms, start=pair))
    if a.shape[1] <= BACKWARD_FROM:
        supports |= set(_backward(a, y, max_terms))
        for threshold in STLSQ_THRESHOLDS:
            active = np.flatnonzero(stlsq(theta, y, threshold))
            if 0 < len(active) <= max_terms:
                supports.add(tuple(active))
    elif forward:
        # a large library (the scanned nonlinear terms): eliminate backwards from the forward path's
        # largest support rather than from all columns, which would cost a matrix inverse per column
        start = list(forward[-1])
        sub = _backward(a[:, start], y, max_terms)
        supports |= {tuple(sorted(start[j] for j in s)) for s in sub}
    best: dict[int, Member] = {}
    floor = 1e-24 * max(float(y @ y), 1e-300)
    for support in supports:
        sub = a[:, list(support)]
        c, *_ = np.linalg.lstsq(sub, y, rcond=None)
        sse = float(np.sum((sub @ c - y) ** 2))
        size = len(support)
        if size not in best or sse < best[size].sse:
            coef = np.zeros(a.shape[1])
            coef[list(support)] = c / norms[list(support)]
            bic = n * np.log(max(sse, floor) / n) + size * np.log(n)
            best[size] = Member(support, coef, sse, float(bic))
    return sorted(best.values(), key=lambda m: m.bic)


@dataclass
class SparseSystem:
    components: tuple
    constants: list[float]
    bic: float
    key: tuple


#: per-term penalties, in multiples of BIC's log n: derivative estimates have smooth, correlated errors,
#: so n overstates the evidence and plain BIC keeps spurious terms on noisy data; each multiple picks
#: its own system and all of them compete in the held-out ranking
PENALTIES = (1.0, 4.0, 16.0, 64.0)


def assemble(paths: list[list[Member]], terms: list[Term | None], n: int,
             penalties: tuple[float, ...] = PENALTIES) -> list[SparseSystem]:
    """For each penalty multiple, the system whose components each minimise n log(SSE/n) + mult * k log n
    (the components' regressions are independent, so their criteria add up)."""
    if any(not p for p in paths):
        return []
    out, seen = [], set()
    for mult in penalties:
        members = [min(p, key=lambda m, mult=mult: m.bic + (mult - 1.0) * len(m.support) * np.log(n)) for p in paths]
        comps, consts, key = [], [], []
        for m in members:
            active = list(m.support)
            tree, values = sum_tree([terms[j] for j in active], m.coef[active])
            comps.append(tree)
            consts += values
            key.append(tuple(sorted("1" if terms[j] is None else terms[j].form for j in active)))
        if tuple(key) not in seen:
            seen.add(tuple(key))
            out.append(SparseSystem(tuple(comps), consts, float(sum(m.bic for m in members)), tuple(key)))
    return out


def library_matrix(terms: list[Term], x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, list[Term | None]]:
    """Columns of the usable terms (finite, not huge) and a constant column; the terms in column order
    (None for the constant)."""
    cols = [term.column(x, t) for term in terms] + [np.ones(len(t))]
    theta = np.stack(cols, axis=1)
    ok = np.all(np.isfinite(theta), axis=0) & (np.abs(theta).max(axis=0) < 1e8) & (np.ptp(theta, axis=0) > 0)
    ok[-1] = True
    return theta[:, ok], [tm for tm, keep in zip([*terms, None], ok) if keep]
