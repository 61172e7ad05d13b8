"""The ODEBench harness: scorer, skeleton matcher, and an end-to-end run on three systems."""

import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import odebench as ob  # noqa: E402

X0, X1 = sp.symbols("x_0 x_1")


def test_scorer_perfect_wrong_and_failing_candidates():
    f = ob.lambdify_system(["-0.5*x_0"], 1)
    clean = ob.integrate(f, [2.0])
    assert ob.r2(clean, ob.integrate(f, [2.0])) == 1.0
    wrong = ob.integrate(ob.lambdify_system(["-0.1*x_0"], 1), [2.0])
    assert ob.r2(clean, wrong) < 0.9
    blowup = ob.integrate(ob.lambdify_system(["x_0**2"], 1), [2.0], max_seconds=2.0)  # singular at t = 0.5
    assert blowup is None and ob.r2(clean, blowup) == -np.inf


def test_skeleton_matcher_on_known_pairs():
    same = ([0.3 - 0.36 * X0], [1.2 - 7.0 * X0])
    assert ob.skeleton_key(same[0], 1) == ob.skeleton_key(same[1], 1)
    logistic = ([0.79 * X0 * (1 - 0.0134 * X0)], [2.0 * X0 * (1 - 3.0 * X0)])
    assert ob.skeleton_key(logistic[0], 1) == ob.skeleton_key(logistic[1], 1)
    assert ob.skeleton_key([X1, -2.1 * X0], 2) == ob.skeleton_key([X1, -7 * X0], 2)
    assert ob.skeleton_key([0.5 * X0], 1) != ob.skeleton_key([0.5 * X0**2], 1)
    assert ob.skeleton_key([sp.sin(X0)], 1) != ob.skeleton_key([sp.cos(X0)], 1)


def test_corruption_is_seeded_and_drops_points():
    x = np.ones((150, 2))
    t1, x1 = ob.corrupt(x, 0.05, 0.5, seed=3)
    t2, x2 = ob.corrupt(x, 0.05, 0.5, seed=3)
    assert len(t1) == 75 and np.array_equal(x1, x2) and np.all(np.diff(t1) > 0)
    assert 0.0 < np.std(x1) < 0.2


def test_harness_end_to_end_on_three_systems():
    systems = [s for s in ob.load_systems(False) if s["id"] in (2, 24, 52)]
    ckpt = str(ROOT / "tests" / "data" / "test_checkpoint")
    rows = [ob.run_one({"system": s, "sigma": 0.01, "drop": 0.5, "checkpoint": ckpt, "variant": "hybrid",
                        "options": {"beam_size": 4, "time_budget_s": 4}}) for s in systems]
    assert [r["dim"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert "error" not in r, r
        assert isinstance(r["r2_recon"], float) and isinstance(r["structure"], bool)
    summary = ob.summarise(rows)
    table = ob.markdown(summary)
    assert "| hybrid | 0.01 | 0.5 |" in table
    assert set(summary["hybrid sigma=0.01 drop=0.5"]) == {"all", "dim1", "dim2", "dim3"}
    assert "| hybrid | 0.01 | 0.5 | " in ob.markdown_by_dim(summary) and "(1) |" in ob.markdown_by_dim(summary)
    for r in rows:  # each rival re-integrated from the second initial condition
        assert len(r["r2_gen_rivals"]) == len(r["rivals"]) and all(isinstance(v, float) for v in r["r2_gen_rivals"])


def test_the_answer_or_a_rival_generalising_counts_once_per_system():
    rows = [{"ambiguous": True, "r2_gen": 0.2, "r2_gen_rivals": [0.5, 0.95]},  # a rival holds the law
            {"ambiguous": True, "r2_gen": -np.inf, "r2_gen_rivals": [-np.inf]},
            {"ambiguous": False, "r2_gen": 0.99, "r2_gen_rivals": []},
            {"ambiguous": False, "r2_gen": 0.5, "r2_gen_rivals": []}]
    a = ob.ambiguity(rows)
    assert a["gen_acc_best_or_rival"] == 0.5
    assert a["gen_acc_flagged"] == 0.0 and a["gen_acc_unflagged"] == 0.5
    table = ob.markdown_ambiguity({"hybrid sigma=0.05 drop=0.5": {"all": a}})
    assert table.splitlines()[-1].endswith("| 0.50 |")


def test_sindy_feature_names_parse_to_sympy():
    import sindy_baseline as sb

    table = {n: sp.Symbol(n) for n in ("x_0", "x_1", "t")}
    assert sb.feature_expr("1", table) == 1
    assert sb.feature_expr("x_0^2 x_1", table) == X0**2 * X1
    assert sb.feature_expr("sin(2 x_1)", table) == sp.sin(2 * X1)
    assert sb.feature_expr("x_0 t", table) == X0 * sp.Symbol("t")
    with pytest.raises(ValueError):
        sb.feature_expr("__import__('os')", table)


@pytest.mark.parametrize("derivative", ["fd", "spline"])
def test_sindy_baseline_recovers_a_linear_oscillator(derivative):
    import sindy_baseline as sb

    t = np.linspace(0, 10, 150)
    x = np.stack([np.cos(1.5 * t), -3.0 * np.sin(1.5 * t)], axis=1)  # x_0' = 0.5 x_1, x_1' = -4.5 x_0
    exprs = sb.fit_sindy(t, x, derivative)
    pred = sb.simulate(exprs, x[0], t)
    assert ob.r2(x, pred) > 0.99
    if derivative == "spline":  # finite differences leave small spurious terms that still simulate well
        assert ob.skeleton_key(exprs, 2) == ob.skeleton_key([0.5 * X1, -4.5 * X0], 2)


def test_baseline_and_ours_on_a_forced_system_end_to_end():
    system = next(s for s in ob.load_systems(False, "forced") if s["id"] == 107)
    ckpt = str(ROOT / "tests" / "data" / "test_checkpoint")
    rows = [ob.run_one({"system": system, "sigma": 0.0, "drop": 0.0, "checkpoint": ckpt, "variant": v,
                        "options": {"beam_size": 4, "time_budget_s": 4}}) for v in ("hybrid", "pysindy-spline")]
    for r in rows:
        assert "error" not in r, r
        assert r["r2_recon"] == -np.inf or isinstance(r["r2_recon"], float)
    assert rows[1]["r2_recon"] > 0.9  # t is in SINDy's library: a forced linear oscillator is in reach
    summary = ob.summarise(rows)
    assert "ours/pysindy-spline recon" in ob.ratios(summary)


def test_every_odebench_system_parses_and_integrates():
    for s in ob.load_systems(False):
        exprs = ob.parse_system(s["substituted"][0], s["dim"])
        assert {str(v) for e in exprs for v in e.free_symbols} <= {f"x_{i}" for i in range(s["dim"])}, s["id"]


def test_benchmark_sets_parse_with_the_explicit_symbol_table():
    forced = ob.load_systems(False, "forced")
    assert len(forced) >= 10
    assert all(any(sp.Symbol("t") in e.free_symbols for e in ob.parse_system(s["substituted"][0], s["dim"]))
               for s in forced)
    indist = ob.load_systems(False, "indist")
    assert len(indist) == 500 and len(ob.load_systems(True, "indist")) == ob.INDIST_QUICK
    for s in indist[:100]:
        exprs = ob.parse_system(s["substituted"][0], s["dim"])
        assert len(exprs) == s["dim"] and len(s["init"]) == 2
        assert {str(v) for e in exprs for v in e.free_symbols} <= {f"x_{i}" for i in range(s["dim"])} | {"t"}
