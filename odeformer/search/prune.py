"""Edits that shrink the best candidates: additive terms that contribute almost nothing (left over from
a regression that fitted noise) are dropped, after multiplying products out so that a negligible term
inside a product can go too. The smaller variants compete with the originals in the ranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_gen.expressions import TIME, Tree, evaluate, split_constants
from odeformer.search.library import signed_terms
from odeformer.search.problem import Trajectory

#: shares of a component below which a term is dropped; a term's share before the final refit can be
#: off by a few times (the first refit stage fits derivatives), so a bolder cut is tried too
PRUNE_SHARES = (1e-3, 0.05)


def prune_small_terms(components: Sequence[Tree], consts: Sequence[float], data: Sequence[Trajectory],
                      rel: float = 1e-3) -> tuple[tuple[Tree, ...], list[float]] | None:
    """The system without the additive terms that contribute less than ``rel`` of their component's
    largest value on the data (left over from a regression that fitted noise); None if none are."""
    ts = np.concatenate([t for t, _ in data])
    xs = np.concatenate([x for _, x in data])
    new_comps, new_consts, dropped = [], [], False
    for comp, mine in zip(components, split_constants(components, list(consts))):
        pieces = signed_terms(*_expanded(comp, mine))
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
        if len(terms) <= len(signed_terms(tree, consts)) or len(terms) > MAX_EXPANDED_TERMS:
            return tree, consts
        new_tree, new_consts = from_sympy(expr, names)
    except (NotExpressible, TypeError, ValueError):
        return tree, consts
    return new_tree, new_consts
