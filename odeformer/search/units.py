"""Unit coefficients: laws written in the user's units often carry coefficients of exactly 1 or -1
(``x' = y``, ``y' = x - x**3 - c*y``). A fitted candidate has a free constant for each, 0.9885 on noisy
data, and pays for it in the criterion. This edit writes every additive term's coefficient that lies
within a tolerance of +-1 *in the user's units* as that exact number — a fixed literal in the model's
frame, where the normalisation makes it ``+-x_scale_j / (x_scale_i * t_scale)`` for a linear term — and
leaves the other constants free to be refitted. The engine keeps the variant only where the criterion
prefers it, on noisy data by the evidence margin (``MARGIN_NATS``): one constant fewer saves about
``log N`` nats, so a variant wins only where fixing the coefficients costs the fit next to nothing."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import sympy as sp

from data_gen.expressions import (
    CONST,
    TIME,
    NotExpressible,
    Tree,
    from_sympy,
    is_var,
    leaves,
    operators,
    split_constants,
    to_sympy,
)
from odeformer.encoding import Normalization

#: a coefficient this close to +-1 in the user's units is tried at exactly +-1, all such at once; the
#: tightest first (a clean fit puts a unit coefficient within 1e-6 of it, a noisy one within a few
#: percent), so that a coefficient that only looks like 1 (a damping of 0.9) does not spoil the others
UNIT_TOLERANCES = (0.02, 0.1, 0.25)
#: components with more terms than this once multiplied out are left as they are (SymPy's cost)
MAX_TERMS = 12


def unit_coefficients(components: Sequence[Tree], consts: Sequence[float], norm: Normalization,
                      tol: float = UNIT_TOLERANCES[0],
                      allowed: set[str] | None = None) -> tuple[tuple[Tree, ...], list[float]] | None:
    """The system (model frame) with each additive term's coefficient that is within ``tol`` of +-1 in the
    user's units fixed at exactly that value, the other constants as they were; None where none is. A
    component that multiplied out needs an operator outside ``allowed`` (``x*x`` becomes ``pow2``) stays
    as it is."""
    new_comps, new_consts, fixed = [], [], 0
    for i, (comp, mine) in enumerate(zip(components, split_constants(components, list(consts)))):
        try:
            tree, values, n = _component(comp, list(mine), i, norm, tol)
        except (NotExpressible, TypeError, ValueError):
            tree, values, n = comp, list(mine), 0
        if n and allowed is not None and not operators(tree) <= allowed:
            tree, values, n = comp, list(mine), 0
        new_comps.append(tree)
        new_consts += values
        fixed += n
    return (tuple(new_comps), new_consts) if fixed else None


def _component(tree: Tree, consts: list[float], i: int, norm: Normalization,
               tol: float) -> tuple[Tree, list[float], int]:
    """One component multiplied out, its near-unit coefficients fixed: (tree, constants, how many)."""
    terms = _terms(tree, tuple(consts), i, tuple(float(s) for s in norm.x_scale), float(norm.t_scale))
    if terms is None:
        return tree, consts, 0
    node: Tree | None = None
    values: list[float] = []
    fixed = 0
    for coeff, inner, inner_consts, unit in terms:
        if inner is None:  # a constant term: no unit to speak of
            piece, own = CONST, [coeff]
        elif unit is not None and round(unit) in (1, -1) and abs(unit - round(unit)) <= tol:
            literal = coeff * round(unit) / unit  # exactly +-1 once in the user's units
            piece, own = ("mul", repr(literal), inner), list(inner_consts)
            fixed += 1
        else:
            piece, own = ("mul", CONST, inner), [coeff, *inner_consts]
        node = piece if node is None else ("add", node, piece)
        values += own
    return (node, values, fixed) if fixed else (tree, consts, 0)


@lru_cache(maxsize=64)
def _terms(tree: Tree, consts: tuple[float, ...], i: int, x_scale: tuple[float, ...],
           t_scale: float) -> tuple | None:
    """Component ``i`` multiplied out, once for every tolerance: per additive term its coefficient, the
    rest as a tree with its constants (None for a constant term) and the coefficient in the user's units
    (None where it has none); None for a component of more than ``MAX_TERMS`` terms."""
    symbols = {leaf: sp.Symbol(leaf) for leaf in leaves(tree) if leaf == TIME or is_var(leaf)}
    names = {s: leaf for leaf, s in symbols.items()}
    terms = sp.Add.make_args(sp.expand(to_sympy(tree, list(consts))))
    if len(terms) > MAX_TERMS:
        return None
    # a term c*R(x) of component i reads x_scale_i * t_scale * c * R(x / x_scale) in the user's units
    to_user = {s: s / x_scale[int(leaf[2:])] for leaf, s in symbols.items() if is_var(leaf)}
    outer = x_scale[i] * t_scale
    out = []
    for term in terms:
        coeff, rest = term.as_coeff_Mul()
        if rest == 1:
            out.append((float(coeff), None, (), None))
        else:
            inner, inner_consts = from_sympy(rest, names)
            unit = _user_coefficient(float(coeff), rest, to_user, outer)
            out.append((float(coeff), inner, tuple(inner_consts), unit))
    return tuple(out)


def _user_coefficient(coeff: float, rest: sp.Expr, to_user: dict, outer: float) -> float | None:
    """The coefficient of the term ``coeff * rest`` in the user's units; None for a term in ``t`` (the time
    shift makes it a sum) or one that the rescaling splits."""
    if sp.Symbol(TIME) in rest.free_symbols:
        return None
    user = sp.expand(outer * coeff * rest.xreplace(to_user))
    if len(sp.Add.make_args(user)) != 1:
        return None
    value = float(user.as_coeff_Mul()[0])
    return value if value != 0 else None
