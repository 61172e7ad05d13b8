"""Equations for people: tidy SymPy expressions, round their constants, typeset them (LaTeX, MathML).

* :func:`tidy` removes the artefacts of decoding and refitting without changing the value:
  ``1.0*x`` -> ``x``, ``-1.0*x`` -> ``-x``, ``x**1.0`` -> ``x``, ``x**2.0`` -> ``x**2``,
  ``x**0.666666666666667`` -> ``x**(2/3)``, ``x + 0.0`` -> ``x``, ``sin(1.0*x)`` -> ``sin(x)``. Constants
  stay floats: nothing is turned into ``E``, ``pi`` or ``I``.
* :func:`rounded` rounds every constant to a number of significant digits (4 by default) for display;
  the exact strings (``Candidate.rhs``) keep full precision.
* :func:`latex_rhs` and :func:`mathml_rhs` give ``{variable: text}`` keyed like ``rhs``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

import sympy as sp

__all__ = ["tidy", "rounded", "rhs_string", "latex_rhs", "mathml_rhs", "mathml_equation", "round_rhs_string"]


def _is_float_value(e: sp.Basic, value: float) -> bool:
    # a coefficient fixed at +-1 in the user's units (search/units.py) comes back through the
    # normalisation's arithmetic as 0.9999999999999998
    return isinstance(e, sp.Float) and abs(float(e) - value) <= 1e-12 * abs(value)


def tidy(expr: sp.Expr) -> sp.Expr:
    """The same expression without ``1.0*`` factors, ``**1.0`` powers or ``+ 0.0`` terms."""
    expr = sp.sympify(expr)
    if expr.is_Atom:
        return expr
    args = [tidy(a) for a in expr.args]
    if isinstance(expr, sp.Mul):
        kept = []
        for a in args:
            if _is_float_value(a, 1.0):
                continue
            kept.append(sp.S.NegativeOne if _is_float_value(a, -1.0) else a)
        return sp.Mul(*kept)
    if isinstance(expr, sp.Add):
        kept = [a for a in args if not _is_float_value(a, 0.0)]
        return sp.Add(*kept) if kept else sp.Float(0.0)
    if isinstance(expr, sp.Pow):
        base, exp = args
        if isinstance(exp, sp.Float) and abs(float(exp)) <= 64:
            # exponents are the grammar's rational literals; SymPy turns them into floats on the way
            r = Fraction(float(exp)).limit_denominator(12)
            if abs(float(r) - float(exp)) <= 1e-12 * max(1.0, abs(float(exp))):
                exp = sp.Rational(r.numerator, r.denominator)
        if exp == 1:
            return base
        return sp.Pow(base, exp)
    return expr.func(*args)


def _round_float(f: sp.Float, digits: int) -> sp.Float:
    v = float(f)
    if v == 0.0:
        return sp.Float(0.0, digits)
    return sp.Float(f"{v:.{digits - 1}e}", digits)


def rounded(expr: sp.Expr, digits: int = 4) -> sp.Expr:
    """Every float constant rounded to ``digits`` significant digits (then tidied: 1.00003*x -> x)."""
    expr = tidy(expr)
    floats = {f: _round_float(f, digits) for f in expr.atoms(sp.Float)}
    return tidy(expr.xreplace(floats)) if floats else expr


def _display(expr: sp.Expr, digits: int | None) -> sp.Expr:
    return tidy(expr) if digits is None else rounded(expr, digits)


def rhs_string(expr: sp.Expr, digits: int | None = None) -> str:
    """A string that ``sympy.parse_expr`` reads back: tidy, full precision (``digits=None``) or rounded."""
    return sp.sstr(_display(expr, digits), full_prec=False)


def _symbols(variables: Sequence[str]) -> dict[str, sp.Symbol]:
    return {v: sp.Symbol(v) for v in [*variables, "t"]}


def round_rhs_string(rhs: str, variables: Sequence[str], digits: int = 4) -> str:
    """A right-hand side string of our own output (3.2 ``rhs``) with its constants rounded; the string
    itself when it cannot be read (never raises)."""
    try:
        expr = sp.parse_expr(rhs, local_dict=_symbols(variables))
    except Exception:  # noqa: BLE001 - display only: fall back to the exact text
        return rhs
    return rhs_string(expr, digits)


def latex_rhs(expressions: Sequence[sp.Expr], variables: Sequence[str], digits: int | None = 4) -> dict[str, str]:
    """``{variable: LaTeX of its right-hand side}`` keyed like ``rhs``; constants to ``digits`` significant
    digits (``None``: full precision)."""
    return {v: sp.latex(_display(e, digits)) for v, e in zip(variables, expressions)}


def mathml_rhs(expressions: Sequence[sp.Expr], variables: Sequence[str], digits: int | None = 4) -> dict[str, str]:
    """``{variable: presentation MathML of its right-hand side}`` (the inner ``<mrow>``, no ``<math>``)."""
    return {v: sp.mathml(_display(e, digits), printer="presentation") for v, e in zip(variables, expressions)}


def mathml_equation(variable: str, expr: sp.Expr, digits: int | None = 4) -> str:
    """A complete ``<math display="block">`` element for dvariable/dt = expr, ready for a web page."""
    lhs = sp.mathml(sp.Symbol(variable), printer="presentation")
    rhs = sp.mathml(_display(expr, digits), printer="presentation")
    # a real minus sign, also in front of negative numbers (SymPy writes <mn>-0.5</mn>)
    rhs = re.sub(r"<mn>-([^<]*)</mn>", rf"<mrow><mo>{_MINUS}</mo><mn>\1</mn></mrow>",
                 rhs.replace("<mo>-</mo>", f"<mo>{_MINUS}</mo>"))
    d = '<mi mathvariant="normal">d</mi>'
    return ('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block"><mrow>'
            f"<mfrac><mrow>{d}{lhs}</mrow><mrow>{d}<mi>t</mi></mrow></mfrac>"
            f"<mo>=</mo>{rhs}</mrow></math>")


_MINUS = "&#x2212;"
