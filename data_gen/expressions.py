"""Expression trees: the operator table, prefix tokens, SymPy conversion and numeric evaluation.

A tree is a nested tuple. Leaves are strings: a state variable ``"x_0"``..``"x_5"``, time ``"t"``,
a free constant ``"C"`` (its value lives outside the tree, in prefix order), or a fixed rational
literal such as ``"1/2"`` that only appears as the exponent of ``pow``. Internal nodes are
``(op, child)`` or ``(op, left, right)``. Tuples are hashable and cheap, which keeps the
generator's hot path free of SymPy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction

import numpy as np


class _LazySympy:
    """SymPy, imported on first use: the generator's hot path and its worker processes never need it
    (importing it costs a spawned generator worker ~0.7 s of its start-up)."""

    def __getattr__(self, name: str):
        import sympy

        return getattr(sympy, name)


sp = _LazySympy()

Tree = str | tuple

#: unary operators: name -> (numpy function, sympy builder)
UNARY_OPS: dict = {
    "neg": (np.negative, lambda a: -a),
    "inv": (lambda a: 1.0 / a, lambda a: 1 / a),
    "sqrt": (np.sqrt, lambda a: sp.sqrt(a)),
    "pow2": (np.square, lambda a: a**2),
    "pow3": (lambda a: a * a * a, lambda a: a**3),
    "exp": (np.exp, lambda a: sp.exp(a)),
    "log": (np.log, lambda a: sp.log(a)),
    "sin": (np.sin, lambda a: sp.sin(a)),
    "cos": (np.cos, lambda a: sp.cos(a)),
    "tan": (np.tan, lambda a: sp.tan(a)),
    "tanh": (np.tanh, lambda a: sp.tanh(a)),
    "atan": (np.arctan, lambda a: sp.atan(a)),
    "sinh": (np.sinh, lambda a: sp.sinh(a)),
    "cosh": (np.cosh, lambda a: sp.cosh(a)),
    "abs": (np.abs, lambda a: sp.Abs(a)),
}

#: binary operators: name -> (numpy function, sympy builder)
BINARY_OPS: dict = {
    "add": (np.add, lambda a, b: a + b),
    "sub": (np.subtract, lambda a, b: a - b),
    "mul": (np.multiply, lambda a, b: a * b),
    "div": (np.divide, lambda a, b: a / b),
    "pow": (np.power, lambda a, b: a**b),
}

MAX_DIM_LIMIT = 6
CONST = "C"
TIME = "t"


def var_name(i: int) -> str:
    """Canonical name of the i-th state variable."""
    return f"x_{i}"


def is_var(tok: str) -> bool:
    return tok.startswith("x_")


def is_literal(tok: str) -> bool:
    return tok[0].isdigit() or tok[0] == "-"


def literal_value(tok: str) -> float:
    return float(Fraction(tok))


def arity(tok: str) -> int:
    if tok in BINARY_OPS:
        return 2
    if tok in UNARY_OPS:
        return 1
    return 0


# ----------------------------------------------------------------------------- prefix tokens


def to_prefix(tree: Tree) -> list[str]:
    """Prefix-order token list of a tree."""
    out: list[str] = []

    def walk(node: Tree) -> None:
        if isinstance(node, str):
            out.append(node)
            return
        out.append(node[0])
        for child in node[1:]:
            walk(child)

    walk(tree)
    return out


def from_prefix(tokens: Sequence[str]) -> Tree:
    """Inverse of :func:`to_prefix`; raises ValueError on a malformed sequence."""
    pos = 0

    def build() -> Tree:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("prefix sequence ended early")
        tok = tokens[pos]
        pos += 1
        n = arity(tok)
        if n == 0:
            if not (tok in (CONST, TIME) or is_var(tok) or is_literal(tok)):
                raise ValueError(f"unknown token {tok!r}")
            return tok
        return (tok,) + tuple(build() for _ in range(n))

    tree = build()
    if pos != len(tokens):
        raise ValueError(f"{len(tokens) - pos} trailing tokens after a complete expression")
    return tree


def size(tree: Tree) -> int:
    """Number of nodes."""
    if isinstance(tree, str):
        return 1
    return 1 + sum(size(c) for c in tree[1:])


def leaves(tree: Tree) -> Iterator[str]:
    if isinstance(tree, str):
        yield tree
        return
    for c in tree[1:]:
        yield from leaves(c)


def operators(tree: Tree) -> set[str]:
    """Operators used by a tree."""
    if isinstance(tree, str):
        return set()
    out = {tree[0]}
    for c in tree[1:]:
        out |= operators(c)
    return out


@functools.lru_cache(maxsize=1 << 16)
def n_constants(tree: Tree) -> int:
    # cached: the search splits the same few systems' constants tens of thousands of times per fit
    return sum(1 for leaf in leaves(tree) if leaf == CONST)


def split_constants(components: Sequence[Tree], consts: Sequence[float]) -> list:
    """The constants of each component (they are numbered in prefix order across the components)."""
    out, start = [], 0
    for comp in components:
        k = n_constants(comp)
        out.append(consts[start: start + k])
        start += k
    return out


def variables_used(tree: Tree) -> set[str]:
    return {leaf for leaf in leaves(tree) if is_var(leaf)}


# ----------------------------------------------------------------------------- numeric evaluation


def evaluate(tree: Tree, x: np.ndarray, t: np.ndarray | float, consts: Sequence[float]) -> np.ndarray:
    """Evaluate a tree with numpy. ``x`` has shape (..., dim); constants are taken in prefix order."""
    it = iter(consts)
    with np.errstate(all="ignore"):
        return _evaluate(tree, x, t, it)


def _evaluate(node: Tree, x, t, it):
    if isinstance(node, str):
        if node == CONST:
            return float(next(it))
        if node == TIME:
            return t
        if is_var(node):
            return x[..., int(node[2:])]
        return literal_value(node)
    op = node[0]
    if op in UNARY_OPS:
        return UNARY_OPS[op][0](_evaluate(node[1], x, t, it))
    left = _evaluate(node[1], x, t, it)
    return BINARY_OPS[op][0](left, _evaluate(node[2], x, t, it))


# ----------------------------------------------------------------------------- SymPy conversion


def to_sympy(tree: Tree, consts: Sequence[float] | None = None, symbols: dict | None = None) -> sp.Expr:
    """SymPy expression of a tree. Constants become Floats (or symbols c_0, c_1... when ``consts`` is None)."""
    counter = iter(range(10**9))
    it = iter(consts) if consts is not None else None
    symbols = symbols or {}

    def build(node: Tree) -> sp.Expr:
        if isinstance(node, str):
            if node == CONST:
                if it is None:
                    return sp.Symbol(f"c_{next(counter)}")
                return sp.Float(float(next(it)))
            if node == TIME or is_var(node):
                return symbols.get(node) or sp.Symbol(node)
            return sp.Rational(Fraction(node))
        op = node[0]
        if op in UNARY_OPS:
            return UNARY_OPS[op][1](build(node[1]))
        return BINARY_OPS[op][1](build(node[1]), build(node[2]))

    return build(tree)


class NotExpressible(ValueError):
    """A SymPy expression uses something the operator set cannot write."""


def _rational_token(r: Fraction) -> str:
    return str(r.numerator) if r.denominator == 1 else f"{r.numerator}/{r.denominator}"


def from_sympy(expr: sp.Expr, names: dict[sp.Symbol, str]) -> tuple[Tree, list[float]]:
    """Tree and constants (prefix order) of a SymPy expression.

    ``names`` maps each SymPy symbol to a leaf name (``x_0``.. or ``t``). Every number becomes a free
    constant, except exponents, which become rational literals or the pow2/pow3/sqrt/inv operators.
    ``cot``, ``sec`` and ``csc`` are written with cos/sin.
    """
    consts: list[float] = []

    def const(value: float) -> Tree:
        consts.append(float(value))
        return CONST

    def build(e: sp.Expr) -> Tree:
        if e.is_Symbol:
            if e not in names:
                raise NotExpressible(f"unknown symbol {e}")
            return names[e]
        if e.is_Number:
            if not e.is_real:
                raise NotExpressible(f"non-real number {e}")
            return const(float(e))
        if e in (sp.pi, sp.E):
            return const(float(e))
        if e.is_Add or e.is_Mul:
            op = "add" if e.is_Add else "mul"
            args = list(e.args)
            node = build(args[0])
            for a in args[1:]:
                node = (op, node, build(a))
            return node
        if e.is_Pow:
            base, ex = e.args
            if not ex.is_Rational:
                if ex.is_Number:
                    ex = sp.Rational(Fraction(float(ex)).limit_denominator(1000))
                else:
                    return ("exp", ("mul", build(ex), ("log", build(base))))
            r = Fraction(int(ex.p), int(ex.q))
            b = build(base)
            simple = {Fraction(2): "pow2", Fraction(3): "pow3", Fraction(1, 2): "sqrt", Fraction(-1): "inv"}
            if r in simple:
                return (simple[r], b)
            if r == -2:
                return ("inv", ("pow2", b))
            if r == -3:
                return ("inv", ("pow3", b))
            if r == Fraction(-1, 2):
                return ("inv", ("sqrt", b))
            return ("pow", b, _rational_token(r))
        func = type(e)
        arg = e.args[0] if e.args else None
        mapping = {sp.sin: "sin", sp.cos: "cos", sp.exp: "exp", sp.log: "log", sp.tan: "tan",
                   sp.tanh: "tanh", sp.atan: "atan", sp.sinh: "sinh", sp.cosh: "cosh", sp.Abs: "abs"}
        if func in mapping and len(e.args) == 1:
            return (mapping[func], build(arg))
        if func is sp.cot:
            return ("div", ("cos", build(arg)), ("sin", build(arg)))
        if func is sp.sec:
            return ("inv", ("cos", build(arg)))
        if func is sp.csc:
            return ("inv", ("sin", build(arg)))
        raise NotExpressible(f"unsupported function {func.__name__}")

    tree = build(expr)
    return tree, consts


_PY_UNARY = {
    "neg": "(-{})", "inv": "(1.0/{})", "sqrt": "_np.sqrt({})", "pow2": "({}**2)", "pow3": "({}**3)",
    "exp": "_np.exp({})", "log": "_np.log({})", "sin": "_np.sin({})", "cos": "_np.cos({})", "tan": "_np.tan({})",
    "tanh": "_np.tanh({})", "atan": "_np.arctan({})", "sinh": "_np.sinh({})", "cosh": "_np.cosh({})",
    "abs": "_np.abs({})",
}
_PY_BINARY = {"add": "({} + {})", "sub": "({} - {})", "mul": "({} * {})", "div": "({} / {})",
              "pow": "_np.power({}, {})"}


def python_rhs(components: Sequence[Tree], consts: Sequence[float]):
    """A fast ``f(t, y) -> list`` for scipy's ``solve_ivp``, compiled from our own trees.

    The source is generated from the fixed operator table above (never from user text), so it is safe
    to compile; it avoids per-node interpretation and is the fair baseline for the batched integrator.
    """
    it = iter(consts)

    def src(node: Tree) -> str:
        if isinstance(node, str):
            if node == CONST:
                v = float(next(it))
                return repr(v) if math.isfinite(v) else ("_nan" if v != v else ("_inf" if v > 0 else "(-_inf)"))
            if node == TIME:
                return "t"
            if is_var(node):
                return f"y[{int(node[2:])}]"
            return repr(literal_value(node))
        if node[0] in _PY_UNARY:
            return _PY_UNARY[node[0]].format(src(node[1]))
        return _PY_BINARY[node[0]].format(src(node[1]), src(node[2]))

    body = ", ".join(src(c) for c in components)
    code = compile(f"lambda t, y: [{body}]", "<odeformer rhs>", "eval")
    return eval(code, {"_np": np, "_nan": math.nan, "_inf": math.inf,  # noqa: S307 - our own token table
                       "__builtins__": {}})
