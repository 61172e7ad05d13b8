"""The ODEBench harness: scorer, skeleton matcher, and an end-to-end run on three systems."""

import sys
from pathlib import Path

import numpy as np
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
