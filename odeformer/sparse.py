"""Sparse-regression proposals (the hybrid source): STLSQ over a library of candidate terms.

The library is built from the checkpoint's grammar (monomials up to degree 3 in the variables, and
``t`` when the grammar allows it; sin, cos, exp and 1/x of each variable when the grammar has those
operators) and from the transformer's own proposals: every additive term of a decoded equation,
with its decoded inner constants, becomes a column too. Each component is regressed on derivatives
estimated from the smoothed data, for several thresholds; every distinct sparse system becomes a
candidate ``sum_j C_j * term_j`` that is then refitted and ranked with the transformer's.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data_gen.expressions import CONST, TIME, Tree, evaluate, n_constants, split_constants, to_prefix, var_name
from odeformer.derivatives import estimate_derivatives, spline_derivatives
from odeformer.fitting import Trajectory

THRESHOLDS = (0.01, 0.03, 0.1, 0.3)
MAX_TERMS = 8
WINDOWS = (5, 9, 17)


@dataclass(frozen=True)
class Term:
    tree: Tree
    consts: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return " ".join(to_prefix(self.tree)) + repr(tuple(round(c, 4) for c in self.consts))


def grammar_terms(dim: int, operators: set[str], use_time: bool, degree: int = 3) -> list[Term]:
    leaves: list[Tree] = [var_name(i) for i in range(dim)] + ([TIME] if use_time else [])
    out = [Term(leaf) for leaf in leaves]
    if "mul" in operators:
        for a, b in itertools.combinations_with_replacement(range(len(leaves)), 2):
            out.append(Term(("pow2", leaves[a]) if a == b else ("mul", leaves[a], leaves[b])))
        cubes = itertools.combinations_with_replacement(range(len(leaves)), 3) if degree >= 3 else ()
        for a, b, c in cubes:
            if a == b == c:
                out.append(Term(("pow3", leaves[a])))
            elif a == b:
                out.append(Term(("mul", ("pow2", leaves[a]), leaves[c])))
            elif b == c:
                out.append(Term(("mul", leaves[a], ("pow2", leaves[b]))))
            else:
                out.append(Term(("mul", leaves[a], ("mul", leaves[b], leaves[c]))))
    for op in ("sin", "cos", "exp", "inv"):
        if op in operators:
            out += [Term((op, leaf)) for leaf in leaves]
    return out


def additive_terms(tree: Tree, consts: Sequence[float]) -> list[Term]:
    """The terms of a decoded sum with their own constants; a leading constant factor is dropped
    (the regression supplies the coefficient), and so are constant terms."""
    out = []
    for _, node, cs in _signed_terms(tree, list(consts)):
        if not isinstance(node, str) and node[0] == "mul" and node[1] == CONST:
            node, cs = node[2], cs[1:]
        if node != CONST:
            out.append(Term(node, tuple(cs)))
    return out


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


def eliminate(theta: np.ndarray, y: np.ndarray, coef: np.ndarray, aic_per_term: float = 2.0) -> np.ndarray:
    """Backward elimination after STLSQ: drop, one at a time, the term whose removal raises the squared
    error least, while the Akaike criterion (n log SSE + 2 per term) does not get worse. Collinear
    columns over one trajectory (x, x**2, sin x where x barely varies) otherwise share a law's weight."""
    cols = list(np.flatnonzero(coef))
    if len(cols) < 2:
        return coef
    norms = np.linalg.norm(theta, axis=0)
    norms[norms == 0] = 1.0
    a, n = theta / norms, len(y)

    def fit(subset: list[int]) -> tuple[float, np.ndarray]:
        c = np.linalg.lstsq(a[:, subset], y, rcond=None)[0]
        return float(np.sum((a[:, subset] @ c - y) ** 2)), c

    sse, c = fit(cols)
    while len(cols) > 1:
        trials = [(fit([k for k in cols if k != j]), j) for j in cols]
        (sse_new, c_new), j = min(trials, key=lambda r: r[0][0])
        if n * np.log(max(sse_new, 1e-300) / max(sse, 1e-300)) > aic_per_term:
            break
        cols.remove(j)
        sse, c = sse_new, c_new
    out = np.zeros_like(coef)
    out[cols] = c / norms[cols]
    return out


def propose(data: Sequence[Trajectory], operators: set[str], use_time: bool,
            proposals: Sequence[tuple[tuple[Tree, ...], Sequence[float]]] = (),
            max_candidates: int = 8, deadline: float = np.inf) -> list[tuple[tuple[Tree, ...], list[float]]]:
    """Candidate systems (components, constants) from STLSQ over three libraries: polynomials; polynomials
    and the transformer's terms; everything the grammar offers (with ``t`` when it allows)."""
    dim = data[0][1].shape[1]
    poly_ops = operators & {"mul"}
    quadratic = grammar_terms(dim, poly_ops, False, degree=2)
    polynomial = grammar_terms(dim, poly_ops, False)
    theirs = []
    for comps, consts in proposals:
        for comp, cs in zip(comps, split_constants(comps, consts)):
            theirs += additive_terms(comp, cs)
    # quadratic with sines and cosines: PySINDy's polynomial + Fourier library, without the cubes that
    # would otherwise stand in for a sine over one trajectory (and fail on the next)
    trig = grammar_terms(dim, operators & {"mul", "sin", "cos"}, use_time, degree=2)
    libraries = [quadratic, polynomial, trig, quadratic + theirs, grammar_terms(dim, operators, use_time) + theirs]
    ts = np.concatenate([t for t, _ in data])
    xs = np.concatenate([x for _, x in data])
    # several smoothing windows: small ones follow fast clean dynamics, large ones average noise away;
    # and a smoothing spline, which picks its own smoothing (the best of these on noisy data)
    derivatives = [np.concatenate([estimate_derivatives(t, x, w) for t, x in data]) for w in WINDOWS]
    derivatives.append(np.concatenate([spline_derivatives(t, x) for t, x in data]))
    out, seen = [], set()
    for library in libraries:
        if time.monotonic() > deadline:
            break
        terms = list({t.key: t for t in library}.values())
        with np.errstate(all="ignore"):
            cols = [np.broadcast_to(evaluate(term.tree, xs, ts, term.consts), len(ts)) for term in terms]
        theta = np.stack(cols + [np.ones(len(ts))], axis=1)
        ok = np.all(np.isfinite(theta), axis=0) & (np.abs(theta).max(axis=0) < 1e8)
        theta, usable = theta[:, ok], [t for t, keep in zip(terms + [None], ok) if keep]
        for dxs, threshold in itertools.product(derivatives, THRESHOLDS):
            if time.monotonic() > deadline:
                break
            raw = [stlsq(theta, dxs[:, i], threshold) for i in range(dim)]
            variants = [raw]
            if all(0 < np.count_nonzero(c) <= MAX_TERMS for c in raw):
                # the regression's own answer and its backward-eliminated form both compete
                variants.append([eliminate(theta, dxs[:, i], c) for i, c in enumerate(raw)])
            for coefs in variants:
                system = _system(coefs, usable, theta, dxs)
                if system is not None and system[3] not in seen:
                    seen.add(system[3])
                    out.append(system[:3])
    # only the most promising go on to the (costly) refitting and ranking
    out.sort(key=lambda r: -r[0])
    return [(comps, consts) for _, comps, consts in out[:max_candidates]]


def _system(coefs: list[np.ndarray], usable: list, theta: np.ndarray, dxs: np.ndarray):
    """(score, components, constants, key) of one regression result; None when a component is empty
    or too long. The score is the derivative fit less 0.01 per term (derivative estimates are rough)."""
    comps, consts, key, sse, sst, n_terms = [], [], [], 0.0, 0.0, 0
    for i, coef in enumerate(coefs):
        active = np.flatnonzero(coef)
        if len(active) == 0 or len(active) > MAX_TERMS:
            return None
        tree, values = _sum_tree([usable[j] for j in active], coef[active])
        comps.append(tree)
        consts += values
        key.append(tuple(usable[j].key if usable[j] else "1" for j in active))
        sse += float(np.sum((theta @ coef - dxs[:, i]) ** 2))
        sst += float(np.sum((dxs[:, i] - dxs[:, i].mean()) ** 2))
        n_terms += len(active)
    return 1.0 - sse / max(sst, 1e-300) - 0.01 * n_terms, tuple(comps), consts, tuple(key)


def _sum_tree(terms: list, coefs: np.ndarray) -> tuple[Tree, list[float]]:
    node: Tree | None = None
    values: list[float] = []
    for term, c in zip(terms, coefs):
        piece: Tree = CONST if term is None else ("mul", CONST, term.tree)
        values += [float(c)] + ([] if term is None else list(term.consts))
        node = piece if node is None else ("add", node, piece)
    return node, values


def prune_small_terms(components: Sequence[Tree], consts: Sequence[float], data: Sequence[Trajectory],
                      rel: float = 1e-3) -> tuple[tuple[Tree, ...], list[float]] | None:
    """The system without the additive terms that contribute less than ``rel`` of their component's
    largest value on the data (left over from a regression that fitted noise); None if none are."""
    ts = np.concatenate([t for t, _ in data])
    xs = np.concatenate([x for _, x in data])
    new_comps, new_consts, dropped = [], [], False
    for comp, mine in zip(components, split_constants(components, list(consts))):
        pieces = _signed_terms(*_expanded(comp, mine))
        with np.errstate(all="ignore"):
            values = [np.broadcast_to(evaluate(tree, xs, ts, c), len(ts)) * sign for sign, tree, c in pieces]
        total = np.max(np.abs(np.sum(values, axis=0))) if values else 0.0
        keep = [p for p, v in zip(pieces, values) if np.all(np.isfinite(v)) and np.max(np.abs(v)) >= rel * total]
        if not keep or len(keep) == len(pieces):
            new_comps.append(comp)
            new_consts += mine
            continue
        dropped = True
        node: Tree | None = None
        for sign, tree, c in keep:
            node = (tree if sign > 0 else ("neg", tree)) if node is None else ("add" if sign > 0 else "sub", node, tree)
            new_consts += list(c)
        new_comps.append(node)
    return (tuple(new_comps), new_consts) if dropped else None


MAX_EXPANDED_TERMS = 12


def _expanded(tree: Tree, consts: list[float]) -> tuple[Tree, list[float]]:
    """The component multiplied out (``x*(a*x + b)`` -> ``a*x**2 + b*x``) when that gives separate
    terms, so a negligible one inside a product can be pruned; else the component as it is."""
    import sympy as sp

    from data_gen.expressions import NotExpressible, from_sympy, is_var, leaves, to_sympy

    names = {sp.Symbol(leaf): leaf for leaf in leaves(tree) if leaf == TIME or is_var(leaf)}
    try:
        expr = sp.expand(to_sympy(tree, consts))
        terms = sp.Add.make_args(expr)
        if len(terms) <= len(_signed_terms(tree, consts)) or len(terms) > MAX_EXPANDED_TERMS:
            return tree, consts
        new_tree, new_consts = from_sympy(expr, names)
    except (NotExpressible, TypeError, ValueError):
        return tree, consts
    return new_tree, new_consts


def _signed_terms(tree: Tree, consts: list[float]) -> list[tuple[int, Tree, list[float]]]:
    it = iter(consts)
    out = []

    def walk(node: Tree, sign: int) -> None:
        if not isinstance(node, str) and node[0] in ("add", "sub"):
            walk(node[1], sign)
            walk(node[2], sign if node[0] == "add" else -sign)
            return
        out.append((sign, node, [next(it) for _ in range(n_constants(node))]))

    walk(tree, 1)
    return out
