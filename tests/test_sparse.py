"""The sparse-regression proposal source."""

import numpy as np
from scipy.integrate import solve_ivp

from data_gen.expressions import to_sympy
from odeformer.search.library import additive_terms, grammar_terms
from odeformer.search.prune import fold_constant_parts, prune_small_terms
from odeformer.search.regression import stlsq


def test_stlsq_recovers_a_sparse_linear_model():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(200, 12))
    coef = np.zeros(12)
    coef[[2, 7]] = [1.5, -0.7]
    y = theta @ coef + 1e-4 * rng.normal(size=200)
    est = stlsq(theta, y, threshold=0.05)
    assert set(np.flatnonzero(est)) == {2, 7}
    np.testing.assert_allclose(est[[2, 7]], [1.5, -0.7], rtol=1e-3)


def test_library_and_transformer_terms():
    assert len(grammar_terms(2, {"mul"}, False, degree=2)) == 2 + 3
    assert len(grammar_terms(2, {"mul"}, False)) == 2 + 3 + 4
    # x, x**2, t, sin x, sin t: no powers of t (over one trajectory they imitate anything)
    assert len(grammar_terms(1, {"mul", "sin"}, True, degree=2)) == 5
    terms = additive_terms(("add", ("mul", "C", "x_0"), ("sin", ("mul", "C", "x_1"))), [2.0, 3.0])
    assert [str(to_sympy(t.tree, t.consts)) for t in terms] == ["x_0", "sin(3.0*x_1)"]


def test_sparse_source_alone_recovers_lotka_volterra():
    from pathlib import Path

    from odeformer import ODERegressor

    t = np.linspace(0, 10, 80)
    x = solve_ivp(lambda _, y: [y[0] * (1.84 - 1.45 * y[1]), -y[1] * (3.0 - 1.62 * y[0])], (0, 10), [1.5, 0.8],
                  t_eval=t, rtol=1e-10, atol=1e-12).y.T
    ckpt = Path(__file__).resolve().parent / "data" / "test_checkpoint"
    reg = ODERegressor(ckpt, sources=("sparse",), time_budget_s=30).fit(t, x, variables=["u", "v"])
    best = reg.equations_[0]
    assert best.r2 > 0.9999
    import sympy as sp

    u, v = sp.symbols("u v")
    got = [sp.Poly(sp.parse_expr(best.rhs[n], local_dict={"u": u, "v": v}), u, v) for n in ("u", "v")]
    assert set(got[0].monoms()) == {(1, 0), (1, 1)} and set(got[1].monoms()) == {(0, 1), (1, 1)}, best.rhs
    np.testing.assert_allclose(float(got[0].coeff_monomial(u * v)), -1.45, rtol=1e-3)


def test_forced_system_gets_a_time_dependent_law():
    """x' = -0.5 x + sin(t): candidates may use t and are integrated as non-autonomous systems."""
    from pathlib import Path

    import sympy as sp

    from odeformer import ODERegressor

    t = np.linspace(0, 10, 120)
    x = solve_ivp(lambda tt, y: [-0.5 * y[0] + np.sin(tt)], (0, 10), [1.0], t_eval=t, rtol=1e-10, atol=1e-12).y.T
    ckpt = Path(__file__).resolve().parent.parent / "checkpoints" / "default"
    reg = ODERegressor(ckpt, sources=("sparse",), time_budget_s=30).fit(t + 100.0, x)  # and a shifted clock
    best = reg.equations_[0]
    assert best.r2 > 0.999, reg
    expr = sp.parse_expr(best.rhs["x_0"], local_dict={"x_0": sp.Symbol("x_0"), "t": sp.Symbol("t")})
    assert sp.Symbol("t") in expr.free_symbols
    pred = reg.predict(t + 100.0, x[0])
    assert np.abs(pred - x).max() < 0.05


def test_pruning_multiplies_out_before_dropping_negligible_terms():
    """x*(a*x + b) with a tiny a is the law b*x: the product is expanded so the x**2 term can go."""
    t = np.linspace(0, 10, 100)
    data = (t, 3.0 * np.exp(-0.5 * t)[:, None])
    product = ("mul", "x_0", ("add", ("mul", "C", "x_0"), "C"))
    (comp,), consts = prune_small_terms([product], [1.45e-5, -0.5], data)
    assert comp == ("mul", "C", "x_0") and consts == [-0.5]
    assert prune_small_terms([product], [0.2, -0.5], data) is None  # a real quadratic term stays
    # a term worth ~1% goes only at the bolder share, which the regressor tries as a competing variant
    assert prune_small_terms([product], [1.5e-3, -0.5], data) is None
    assert prune_small_terms([product], [1.5e-3, -0.5], data, rel=0.05)[0] == (("mul", "C", "x_0"),)


def test_a_part_constant_on_the_data_is_folded_into_one_constant():
    """c*atan(a*x)*atan(b*x + d) where b*x + d stays near -12 over the data is the law c'*atan(a*x)."""
    t = np.linspace(0, 10, 100)
    x = np.linspace(0.5, 3.0, 100)[:, None]
    comp = ("mul", "C", ("mul", ("atan", ("mul", "C", "x_0")), ("atan", ("add", ("mul", "C", "x_0"), "C"))))
    (folded,), consts = fold_constant_parts([comp], [1.0, 2.0, 1e-4, -12.24], (t, x))
    assert folded == ("mul", "C", ("atan", ("mul", "C", "x_0")))
    assert np.allclose(consts, [np.arctan(-12.24 + 1e-4 * 1.75), 2.0], rtol=1e-5)
    # an argument that moves over the data is a part of the law and stays
    assert fold_constant_parts([comp], [1.0, 2.0, 0.5, -1.0], (t, x)) is None
    # a whole component is never folded, even where its state hardly moves
    assert fold_constant_parts([("mul", "C", "x_0")], [0.3], (t, 5.0 + 1e-9 * x)) is None


def test_tuned_terms_find_a_saturation_constant_between_the_grid_values():
    from odeformer.search.library import Term, polynomial_terms
    from odeformer.search.saturating import saturating_terms, tuned_terms

    ops = {"add", "mul", "div", "inv", "pow2", "exp", "tanh"}
    t = np.linspace(0.0, 5.0, 80)
    x = (0.2 + 2.0 * t / 5.0)[:, None]
    k_true = 0.83
    y = (1.5 - 0.4 * x[:, 0] + 2.0 / (k_true + x[:, 0] ** 2))[:, None]
    grid = saturating_terms(x, ops)
    hill = Term(("inv", ("add", "C", ("pow2", "x_0"))), (k_true,)).form
    grid_k = sorted(term.consts[0] for term in grid if term.form == hill)
    assert min(abs(k / k_true - 1) for k in grid_k) > 0.1  # the grid alone misses it
    tuned = tuned_terms(grid, [polynomial_terms(1, ops, False, 1)], x, t, y, np.ones_like(y))
    found = [term.consts[0] for term in tuned if term.form == hill]
    assert min(abs(k / k_true - 1) for k in found) < 1e-4, found
