"""Candidate terms for sparse regression: a term is an expression tree with its own inner constants
(``x/(K + x)`` holds K), evaluated as one column of the regression matrix. Builders here make the
polynomial, trigonometric and grammar libraries; the saturating and forcing sources add their own."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data_gen.expressions import CONST, TIME, Tree, evaluate, n_constants, operators, to_prefix, var_name


@dataclass(frozen=True)
class Term:
    tree: Tree
    consts: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        """Identity of the term with its inner constants (two scan values of K are two columns)."""
        return " ".join(to_prefix(self.tree)) + repr(tuple(round(c, 4) for c in self.consts))

    @property
    def form(self) -> str:
        """Identity up to inner constants: the structure the refit will tune."""
        return " ".join(to_prefix(self.tree))

    def uses_only(self, ops: set[str]) -> bool:
        return operators(self.tree) <= ops

    def column(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(evaluate(self.tree, x, t, self.consts), dtype=np.float64), len(t))


def square(leaf: Tree, ops: set[str]) -> Tree | None:
    if "pow2" in ops:
        return ("pow2", leaf)
    return ("mul", leaf, leaf) if "mul" in ops else None


def power(leaf: Tree, n: int, ops: set[str]) -> Tree | None:
    """``leaf**n`` for n = 1..4 with the operators at hand (None if they cannot write it)."""
    if n == 1:
        return leaf
    if n == 2:
        return square(leaf, ops)
    if n == 3:
        if "pow3" in ops:
            return ("pow3", leaf)
        sq = square(leaf, ops)
        return ("mul", sq, leaf) if sq is not None and "mul" in ops else None
    if n == 4:
        sq = square(leaf, ops)
        return square(sq, ops) if sq is not None else None
    return None


def polynomial_terms(dim: int, ops: set[str], use_time: bool, degree: int = 3) -> list[Term]:
    """Monomials up to ``degree`` in the variables (and ``t`` when allowed)."""
    leaves: list[Tree] = [var_name(i) for i in range(dim)] + ([TIME] if use_time else [])
    out = [Term(leaf) for leaf in leaves]
    if "mul" not in ops:
        return out
    for d in range(2, degree + 1):
        for combo in itertools.combinations_with_replacement(range(len(leaves)), d):
            counts = {i: combo.count(i) for i in dict.fromkeys(combo)}
            factors = [power(leaves[i], k, ops) for i, k in counts.items()]
            if any(f is None for f in factors):
                continue
            node = factors[0]
            for f in factors[1:]:
                node = ("mul", node, f)
            out.append(Term(node))
    return out


def grammar_terms(dim: int, operators_: set[str], use_time: bool, degree: int = 3) -> list[Term]:
    """Polynomial terms of the variables, and sin, cos, exp and 1/x of each variable (and of ``t`` when
    allowed, with ``t`` itself) when the operators have them. No powers of ``t``: over one trajectory a
    polynomial in time imitates anything and predicts nothing."""
    leaves: list[Tree] = [var_name(i) for i in range(dim)] + ([TIME] if use_time else [])
    out = polynomial_terms(dim, operators_ & {"mul", "pow2", "pow3"}, False, degree)
    out += [Term(TIME)] if use_time else []
    for op in ("sin", "cos", "exp", "inv"):
        if op in operators_:
            out += [Term((op, leaf)) for leaf in leaves]
    return out


#: unary operators whose products with a variable or with each other make the product library
PRODUCT_UNARIES = ("sin", "cos", "exp", "log", "inv")


def product_terms(dim: int, ops: set[str]) -> list[Term]:
    """Products of two factors, each a variable or sin, cos, exp, log or 1/x of one, at least one of
    them not a variable (the polynomial libraries hold those): ``x*log(x)``, ``sin(y)*cos(x)``,
    ``cos(y)/x`` (PySINDy's tensored libraries, limited to pairs)."""
    if "mul" not in ops:
        return []
    variables = [var_name(i) for i in range(dim)]
    unary = [(op, v) for op in PRODUCT_UNARIES if op in ops for v in variables]
    factors: list[Tree] = [*variables, *unary]
    out = []
    for a, b in itertools.combinations_with_replacement(range(len(factors)), 2):
        if b < len(variables):
            continue  # both variables: a monomial
        out.append(Term(("mul", factors[a], factors[b])))
    return out


def additive_terms(tree: Tree, consts: Sequence[float]) -> list[Term]:
    """The terms of a sum with their own constants; a leading constant factor is dropped (the
    regression supplies the coefficient), and so are constant terms."""
    out = []
    for _, node, cs in signed_terms(tree, list(consts)):
        if not isinstance(node, str) and node[0] == "mul" and node[1] == CONST:
            node, cs = node[2], cs[1:]
        if node != CONST:
            out.append(Term(node, tuple(cs)))
    return out


def signed_terms(tree: Tree, consts: list[float]) -> list[tuple[int, Tree, list[float]]]:
    """(sign, term, its constants) for each additive term of a sum."""
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


def unique(terms: Sequence[Term], ops: set[str]) -> list[Term]:
    """Terms the operators can write, each once."""
    return list({t.key: t for t in terms if t.uses_only(ops)}.values())


def sum_tree(terms: Sequence[Term | None], coefs: Sequence[float]) -> tuple[Tree, list[float]]:
    """``sum_j C_j * term_j`` (None: the constant term) and its constants in prefix order."""
    node: Tree | None = None
    values: list[float] = []
    for term, c in zip(terms, coefs):
        piece: Tree = CONST if term is None else ("mul", CONST, term.tree)
        values += [float(c)] + ([] if term is None else list(term.consts))
        node = piece if node is None else ("add", node, piece)
    return node, values
