"""Equations for people: tidy, rounded, LaTeX and MathML (odeformer/display.py)."""

import sympy as sp

from odeformer import display

F = sp.Float
x, y, omega, theta, t = sp.symbols("x y omega theta t")


def test_tidy_drops_unit_factors_and_powers_keeping_floats():
    e = F(0.960533834769782) * omega + sp.sin(F(1.0) * theta) ** F(2.0) + F(-1.0) * x ** F(1.0) + F(0.0)
    out = display.tidy(e)
    assert out == F(0.960533834769782) * omega + sp.sin(theta) ** 2 - x
    text = sp.sstr(out, full_prec=False)
    assert "1.0" not in text and "0.960533834769782" in text
    assert display.tidy(F(2.718281828459045) * x + F(3.141592653589793)).atoms(sp.Float) == {
        F(2.718281828459045), F(3.141592653589793)}  # no E, no pi
    assert not display.tidy(F(2.718281828459045) * x).has(sp.E, sp.pi, sp.I)


def test_rational_exponents_come_back_from_floats():
    e = F(1.2) * x ** F(0.666666666666667) - F(0.5) * x + y ** F(1.5) + x ** F(0.7071)
    out = display.tidy(e)
    assert out == F(1.2) * x ** sp.Rational(2, 3) - F(0.5) * x + y ** sp.Rational(3, 2) + x ** F(0.7071)
    assert sp.sstr(out, full_prec=False) == "1.2*x**(2/3) + x**0.7071 - 0.5*x + y**(3/2)"


def test_rounded_to_four_significant_digits():
    e = F(0.960533834769782) * omega - F(12345.678) * x + F(1.00003) * y
    assert sp.sstr(display.rounded(e), full_prec=False) == "0.9605*omega - 1.235e+4*x + y"
    assert display.rhs_string(e, 3) == "0.961*omega - 1.23e+4*x + y"
    assert display.round_rhs_string("0.960533834769782*omega - 1.0*sin(1.0*theta)", ["omega", "theta"]) == \
        "0.9605*omega - sin(theta)"
    assert display.round_rhs_string("not ( valid", ["x"]) == "not ( valid"


def test_rhs_strings_parse_back():
    e = F(-0.5) * x * y + sp.exp(F(-1.0) * t) * F(1.0)
    for digits in (None, 4):
        s = display.rhs_string(e, digits)
        back = sp.parse_expr(s, local_dict={"x": x, "y": y, "t": t})
        assert back.free_symbols <= {x, y, t}
    assert display.rhs_string(e) == "-0.5*x*y + exp(-t)"


def test_latex_and_mathml_keyed_like_rhs():
    exprs = [F(0.960533834769782) * omega, -F(9.81) * sp.sin(F(1.0) * theta)]
    tex = display.latex_rhs(exprs, ["theta", "omega"])
    assert tex == {"theta": r"0.9605 \omega", "omega": r"- 9.81 \sin{\left(\theta \right)}"}
    assert display.latex_rhs(exprs, ["theta", "omega"], digits=None)["theta"] == r"0.960533834769782 \omega"
    ml = display.mathml_rhs(exprs, ["theta", "omega"])
    assert set(ml) == {"theta", "omega"} and "<mn>0.9605</mn>" in ml["theta"]
    eq = display.mathml_equation("theta", exprs[0])
    assert eq.startswith("<math") and "<mfrac>" in eq and "0.9605" in eq and "0.96053" not in eq
