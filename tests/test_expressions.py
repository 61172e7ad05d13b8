"""Expression trees: prefix and SymPy round trips, and the skeleton simplifier."""

import random

import numpy as np
import pytest
import sympy as sp

from data_gen.expressions import (
    CONST,
    evaluate,
    from_prefix,
    from_sympy,
    python_rhs,
    to_prefix,
    to_sympy,
)
from data_gen.grammar import Grammar, default_grammar
from data_gen.sampler import SkeletonSampler
from data_gen.simplify import key, simplify

X0, X1, T = sp.symbols("x_0 x_1 t")
NAMES = {X0: "x_0", X1: "x_1", T: "t"}


@pytest.mark.parametrize("expr", [
    0.3 - 0.36 * X0,
    0.79 * X0 * (1 - 0.0134 * X0),
    -0.5 + 1 / (1 + 1.6487 * sp.exp(-1.0417 * X0)),
    -0.8 * X0 * (1 - X0) ** sp.Rational(6, 5),
    sp.cos(X0) * sp.cot(X1),
    -0.64 * X1 * sp.Abs(X1) - sp.sin(X0) + 1.67,
    X0 * sp.log(2.29 * X0) + sp.sqrt(X1) / X0**2 + sp.sin(2.0 * T),
])
def test_sympy_tree_round_trip_is_numerically_exact(expr):
    tree, consts = from_sympy(expr, NAMES)
    assert from_prefix(to_prefix(tree)) == tree
    back = to_sympy(tree, consts)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.9, size=(50, 2))
    t = rng.uniform(0, 3, size=50)
    f = sp.lambdify((X0, X1, T), expr, "numpy")
    g = sp.lambdify((X0, X1, T), back, "numpy")
    want = np.broadcast_to(f(x[:, 0], x[:, 1], t), (50,))
    np.testing.assert_allclose(np.broadcast_to(g(x[:, 0], x[:, 1], t), (50,)), want, rtol=1e-10)
    np.testing.assert_allclose(evaluate(tree, x, t, consts), want, rtol=1e-10)
    rhs = python_rhs([tree], consts)
    np.testing.assert_allclose([rhs(t[i], x[i])[0] for i in range(50)], want, rtol=1e-10)


def test_from_prefix_rejects_malformed_sequences():
    with pytest.raises(ValueError, match="ended early"):
        from_prefix(["add", "x_0"])
    with pytest.raises(ValueError, match="trailing"):
        from_prefix(["x_0", "x_1"])
    with pytest.raises(ValueError, match="unknown token"):
        from_prefix(["add", "x_0", "banana"])


@pytest.mark.parametrize("tree, want", [
    (("add", "x_0", "x_0"), ("mul", CONST, "x_0")),
    (("sub", "x_0", "x_0"), CONST),
    (("mul", "x_0", ("mul", CONST, ("mul", CONST, "x_1"))), ("mul", CONST, ("mul", "x_0", "x_1"))),
    (("mul", "x_0", "x_0"), ("pow2", "x_0")),
    (("div", ("mul", "x_0", "x_1"), "x_0"), "x_1"),
    (("log", ("exp", "x_0")), "x_0"),
    (("sin", ("add", CONST, ("mul", CONST, CONST))), CONST),
    (("add", ("mul", CONST, "x_0"), ("add", CONST, CONST)), ("add", ("mul", CONST, "x_0"), CONST)),
    (("mul", CONST, ("add", ("mul", CONST, "x_0"), CONST)), ("add", ("mul", CONST, "x_0"), CONST)),
    (("sqrt", ("pow2", "x_1")), ("abs", "x_1")),
])
def test_simplifier_rules(tree, want):
    assert simplify(tree) == want


def test_simplifier_orders_commutative_operands():
    assert key(simplify(("add", "x_1", ("sin", "x_0")))) == key(simplify(("add", ("sin", "x_0"), "x_1")))
    assert key(simplify(("mul", "x_1", "x_0"))) == key(simplify(("mul", "x_0", "x_1")))


def test_simplifier_preserves_constant_free_expressions():
    """Without constants every rule must keep the function itself (not just its family)."""
    g = Grammar.from_dict({
        "system": {"max_dim": 2, "dim_weights": [0.0, 1.0], "time_share": 0.0},
        "tree": {"leaf_weights": {"variable": 1.0}, "affine_share": 0.0, "ops_per_component": [1, 7]},
        "operators": {"unary": {"sin": 1, "cos": 1, "exp": 0.5, "pow2": 1, "pow3": 0.5, "inv": 1, "neg": 1},
                      "binary": {"add": 3, "sub": 2, "mul": 3, "div": 2}},
    })
    sampler = SkeletonSampler(g, 3)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1.5, size=(40, 2))
    checked = grew = 0
    for _ in range(3000):
        raw = sampler._tree(random.Random(_).randint(1, 7), 2, False, 0)
        simple = simplify(raw)
        if CONST in to_prefix(simple):  # a merged coefficient such as x + x -> C*x
            continue
        np.testing.assert_allclose(evaluate(simple, x, 0.0, []), evaluate(raw, x, 0.0, []), rtol=1e-9, atol=1e-12)
        growth = len(to_prefix(simple)) - len(to_prefix(raw))
        assert growth <= 2, (raw, simple)
        grew += growth > 0
        checked += 1
    assert checked > 1000
    assert grew < 0.05 * checked  # powers distributed over products: (x*y)**2 -> x**2*y**2


def test_sampler_is_deterministic_and_respects_the_grammar():
    g = default_grammar()
    s1, s2 = SkeletonSampler(g, 5), SkeletonSampler(g, 5)
    a = [s1.sample() for _ in range(300)]
    b = [s2.sample() for _ in range(300)]
    assert a == b
    skeletons = [s for s in a if not isinstance(s, str)]
    assert len(skeletons) > 200
    for s in skeletons:
        assert 1 <= s.dim <= g.max_dim
        assert s.n_tokens <= g["tree"]["max_system_tokens"]
        for c in s.components:
            assert not g.missing(c)
            assert len(to_prefix(c)) <= g["tree"]["max_component_tokens"]
