"""The Python API: input checks, output format, prediction (with the pinned test checkpoint)."""

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from odeformer import ODERegressor
from odeformer.validation import InputError, check_variable_names

TEST_CKPT = Path(__file__).resolve().parent / "data" / "test_checkpoint"
T = np.linspace(0, 10, 60)


@pytest.fixture(scope="module")
def model():
    return ODERegressor(TEST_CKPT, beam_size=4, top_k=3, time_budget_s=5)


@pytest.mark.parametrize("t, x, fragment", [
    (T[:4], np.ones(4), "at least 5"),
    (np.r_[T[:10], T[9]], np.ones(11), "duplicate time"),
    (T, np.r_[np.ones(59), np.nan], "x[59, 0] is not finite"),
    (np.r_[T[:59], np.inf], np.ones(60), "is not finite"),
    (T, np.ones((60, 7)), "at most 4"),
    (T, np.ones((30, 1)), "x must have shape"),
    (T, np.array(["a"] * 60), "numeric"),
])
def test_bad_inputs_raise_input_error(model, t, x, fragment):
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        model.fit(t, x)


@pytest.mark.parametrize("names, fragment", [
    (["lambda"], "keyword"), (["sin"], "SymPy function"), (["t"], "reserved"), (["x y"], "identifier"),
    (["exp"], "SymPy function"), (["a", "a"], "twice"), (["Abs"], "SymPy function"),
])
def test_bad_variable_names(names, fragment):
    with pytest.raises(InputError, match=fragment):
        check_variable_names(names)


def test_special_names_are_fine_and_round_trip(model):
    names = ["S", "I", "E", "N"]
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.uniform(0.1, 1.0, size=(60, 4)), axis=0)
    model.fit(T, x, variables=names)
    check_variable_names(["beta", "gamma", "lambda_", "Q"])
    for cand in model.equations_:
        assert set(cand.rhs) == set(names)
        assert np.isfinite(cand.r2)
        for rhs in cand.rhs.values():
            expr = sp.parse_expr(rhs, local_dict={n: sp.Symbol(n) for n in names + ["t"]})
            assert expr.free_symbols <= {sp.Symbol(n) for n in names + ["t"]}
            assert not expr.atoms(sp.NumberSymbol) and sp.I not in expr.atoms()


def test_unsorted_times_and_several_trajectories(model):
    order = np.random.default_rng(1).permutation(len(T))
    x = np.exp(-0.3 * T)
    model.fit(T[order], x[order])
    assert model.equations_
    model.fit([T, T[:30]], [x, 2 * x[:30]])
    assert model.equations_
    with pytest.raises(InputError, match="different numbers of variables"):
        model.fit([T, T], [x, np.stack([x, x], 1)])


def test_predict_and_printing(model):
    model.fit(T, np.exp(-0.3 * T))
    y = model.predict(T, [1.0])
    assert y.shape == (len(T), 1) and np.all(np.isfinite(y))
    assert "d x_0/dt" not in str(model) and "dx_0/dt" in str(model)
    assert "\\dot" in model.latex()
    assert isinstance(model.sympy()[0], sp.Expr)


def test_allowed_operators_are_respected(model):
    model.allowed_operators = ["add", "mul"]
    try:
        model.fit(T, np.exp(-0.3 * T))
        for cand in model.equations_:
            for e in cand.expressions:
                assert not e.atoms(sp.Function)
        model.allowed_operators = ["frobnicate"]
        with pytest.raises(InputError, match="unknown"):
            model.fit(T, np.exp(-0.3 * T))
    finally:
        model.allowed_operators = None


def test_a_restricted_grammar_restricts_decoding(tmp_path):
    from data_gen.grammar import Grammar
    from odeformer import checkpoint as ckpt

    base = ckpt.load(TEST_CKPT)
    poly = Grammar.from_file(Path(__file__).resolve().parent.parent / "data_gen" / "grammars" / "examples"
                             / "polynomial.toml")
    path = ckpt.save(tmp_path / "poly", base.model, base.vocab, poly, base.provenance)
    reg = ODERegressor(path, beam_size=6, time_budget_s=5).fit(T, np.exp(-0.3 * T))
    assert reg.equations_
    for cand in reg.equations_:
        for e in cand.expressions:
            assert not e.atoms(sp.Function)
            assert all(p.exp.is_Integer and p.exp > 0 for p in e.atoms(sp.Pow))


@pytest.mark.parametrize("seed", [0, 1])
def test_time_budget_holds_on_pathological_inputs(seed):
    """Noise, huge magnitudes, three variables: the fit returns within the budget (+1 s)."""
    import time

    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 100, 400))
    x = rng.standard_normal((400, 3)) * np.array([1e-6, 1.0, 1e6])
    reg = ODERegressor(TEST_CKPT, beam_size=16, time_budget_s=2.0)
    reg.fit(T, np.exp(-T))  # load and warm up, as the server does at start-up
    start = time.monotonic()
    reg.fit(t, x)
    assert time.monotonic() - start < 3.0
    for cand in reg.equations_:
        assert np.isfinite(cand.r2)


def _allee(noise: float, seed: int):
    """A population with an Allee effect, x' = 0.2 x (1 - x/50) (x/3 - 1), noisy, every other point kept."""
    from scipy.integrate import solve_ivp

    t = np.linspace(0, 10, 150)
    x = solve_ivp(lambda _, y: 0.2 * y * (1 - y / 50) * (y / 3 - 1), (0, 10), [4.0], t_eval=t, rtol=1e-10).y.T
    rng = np.random.default_rng(seed)
    return t[::2], (x * (1 + noise * rng.standard_normal(x.shape)))[::2]


def _pendulum():
    """A damped pendulum, clean, 200 points."""
    from scipy.integrate import solve_ivp

    t = np.linspace(0, 10, 200)
    return t, solve_ivp(lambda _, y: [y[1], -0.2 * y[1] - 9.81 * np.sin(y[0])], (0, 10), [2.0, 0.0], t_eval=t,
                        rtol=1e-10).y.T


@pytest.mark.parametrize("data", [lambda: _allee(0.05, 1), lambda: _allee(0.05, 2), _pendulum])
def test_a_fit_prints_no_warnings(data):
    """Candidates that diverge (noisy Allee-effect data), stiff ones LSODA gives up on, splines FITPACK
    cannot smooth exactly (a clean damped pendulum): the search reads each failure from its result, and
    none of the numerical libraries' warnings reach the user's console."""
    import warnings

    t, x = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = ODERegressor(TEST_CKPT, beam_size=4).fit(t, x)
    assert reg.equations_
    assert not caught, [f"{w.category.__name__} {w.filename}:{w.lineno} {w.message}" for w in caught]
