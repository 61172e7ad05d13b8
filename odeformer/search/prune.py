"""Edits that shrink the best candidates: additive terms that contribute almost nothing (left over from
a regression that fitted noise) are dropped, after multiplying products out so that a negligible term
inside a product can go too; a part that is constant on the data (``atan(2e-6*x - 3.3)``, a function
whose argument hardly moves) becomes a constant. The smaller variants compete with the originals in the
ranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_gen.expressions import CONST, TIME, Tree, evaluate, n_constants, split_constants
from odeformer.search.library import signed_terms

Points = tuple[np.ndarray, np.ndarray]  # pooled (t (n,), x (n, d))

#: shares of a component below which a term is dropped; a term's share before the final refit can be
#: off by a few times (the first refit stage fits derivatives), so a bolder cut is tried too
PRUNE_SHARES = (1e-3, 0.05)


def prune_small_terms(components: Sequence[Tree], consts: Sequence[float], points: Points,
                      rel: float = 1e-3) -> tuple[tuple[Tree, ...], list[float]] | None:
    """The system without the additive terms that contribute less than ``rel`` of their component's
    largest value at ``points`` (pooled (t, x), ``Problem.fit_points``: left over from a regression that
    fitted noise); None if none are."""
    ts, xs = points
    new_comps, new_consts, dropped = [], [], False
    for comp, mine in zip(components, split_constants(components, list(consts))):
        pieces = signed_terms(*expanded(comp, mine))
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


#: relative spreads on the data below which a part of an expression counts as a constant; constants are
#: refitted again afterwards (``atan(122*x + 290)`` became ``atan(18579*x + 128520)``), so a bolder one too
CONSTANT_SPREADS = (1e-4, 1e-2)


def fold_constant_parts(components: Sequence[Tree], consts: Sequence[float], points: Points,
                        rel: float = CONSTANT_SPREADS[0]) -> tuple[tuple[Tree, ...], list[float]] | None:
    """The system with each largest part of a component (not the component itself) that is a function of
    the state or time but spreads less than ``rel`` of its magnitude at ``points`` (pooled (t, x))
    replaced by its mean, the products of constants this leaves merged by SymPy; None if no part is
    constant."""
    ts, xs = points
    new_comps, new_consts, folded = [], [], False
    for comp, mine in zip(components, split_constants(components, list(consts))):
        tree, values = _fold(comp, list(mine), xs, ts, rel, root=True)
        if tree is not comp:
            folded = True
            tree, values = _merged(tree, values)
        new_comps.append(tree)
        new_consts += values
    return (tuple(new_comps), new_consts) if folded else None


def _fold(tree: Tree, consts: list[float], xs: np.ndarray, ts: np.ndarray, rel: float,
          root: bool = False) -> tuple[Tree, list[float]]:
    """``tree`` (with its constants in prefix order) with its constant parts folded, outermost first."""
    if isinstance(tree, str):
        return tree, consts
    if not root:
        with np.errstate(all="ignore"):
            value = np.broadcast_to(evaluate(tree, xs, ts, consts), len(ts))
        scale = float(np.max(np.abs(value)))
        if np.isfinite(scale) and scale > 0 and float(np.ptp(value)) <= rel * scale:
            return CONST, [float(np.mean(value))]
    children, out_consts, start, changed = [], [], 0, False
    for child in tree[1:]:
        k = n_constants(child)
        new, values = _fold(child, consts[start:start + k], xs, ts, rel)
        changed |= new is not child
        children.append(new)
        out_consts += values
        start += k
    return ((tree[0], *children), out_consts) if changed else (tree, consts)


def _merged(tree: Tree, consts: list[float]) -> tuple[Tree, list[float]]:
    """The tree through SymPy and back, so that products and sums of constants become one."""
    return _through_sympy(tree, consts, lambda expr: expr) or (tree, consts)


MAX_EXPANDED_TERMS = 12


def expanded(tree: Tree, consts: list[float]) -> tuple[Tree, list[float]]:
    """The component multiplied out (``x*(a*x + b)`` -> ``a*x**2 + b*x``) when that gives separate
    terms, so a negligible one inside a product can be pruned; else the component as it is."""
    import sympy as sp

    def expand(expr):
        out = sp.expand(expr)
        n = len(sp.Add.make_args(out))
        return out if len(signed_terms(tree, consts)) < n <= MAX_EXPANDED_TERMS else None

    return _through_sympy(tree, consts, expand) or (tree, consts)


def _through_sympy(tree: Tree, consts: list[float], change) -> tuple[Tree, list[float]] | None:
    """``tree`` as a SymPy expression, ``change``d, and back (SymPy merges constants on the way); None
    where ``change`` declines (returns None) or the result cannot be written in the grammar's tokens."""
    import sympy as sp

    from data_gen.expressions import NotExpressible, from_sympy, is_var, leaves, to_sympy

    names = {sp.Symbol(leaf): leaf for leaf in leaves(tree) if leaf == TIME or is_var(leaf)}
    try:
        expr = change(to_sympy(tree, consts))
        return None if expr is None else from_sympy(expr, names)
    except (NotExpressible, TypeError, ValueError):
        return None
