"""Ambiguity and the suggested experiment (odeformer/ambiguity.py, docs/ambiguity.md): the loop closes.

A first fit of data that cannot decide the law is flagged, with rivals; a second trajectory simulated
from the suggested initial state and fitted jointly with the first makes the true law win and clears
the flag. A well-determined case is not flagged. Pinned test checkpoint, fixed seeds."""

import json
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

from odeformer import ODERegressor
from odeformer.ambiguity import parse_bounds
from odeformer.metrics import r2_score
from odeformer.validation import InputError

CKPT = Path(__file__).resolve().parent / "data" / "test_checkpoint"


def simulate(f, x0, t):
    return solve_ivp(f, (t[0], t[-1]), x0, t_eval=t, method="LSODA", rtol=1e-10, atol=1e-12).y.T


def parsed(reg, k=0):
    table = {n: sp.Symbol(n) for n in [*reg.variables_, "t"]}
    return {n: sp.parse_expr(reg.equations_[k].rhs[n], local_dict=table) for n in reg.variables_}


def close_the_loop(f, x0, t, noise, names=None, seed=0):
    """First fit, the suggested experiment, the second trajectory from it, the joint fit."""
    rng = np.random.default_rng(seed)
    x = simulate(f, x0, t) * (1 + noise * rng.standard_normal((len(t), len(x0))))
    first = ODERegressor(CKPT, time_budget_s=30).fit(t, x, variables=names)
    exp = first.suggest_experiment()
    t2 = np.linspace(exp.t0, exp.t0 + exp.duration, len(t))
    x2 = simulate(f, exp.x0, t2) * (1 + noise * rng.standard_normal((len(t2), len(x0))))
    joint = ODERegressor(CKPT, time_budget_s=30).fit([t, t2], [x, x2], variables=names)
    return first, exp, joint


def check_first_fit(first, exp):
    assert first.ambiguous_ and first.rivals_, str(first)
    gaps = [c.score_gap for c in first.equations_]
    assert gaps[0] == 0.0 and all(g >= 0 for g in gaps)
    for r in first.rivals_:  # rivals lie within the margin and differ in form
        assert 0 < r < len(first.equations_) and gaps[r] <= first.ambiguity_.margin_nats
        assert first.equations_[r].rhs != first.equations_[0].rhs
    assert exp.ambiguous and exp.ranks[0] == 0 and set(first.rivals_) <= set(exp.ranks)
    assert exp.separation > 3 and exp.duration > 0
    assert np.all(exp.bounds[:, 0] <= exp.x0) and np.all(exp.x0 <= exp.bounds[:, 1])
    assert exp.predictions.shape == (len(exp.ranks), len(exp.t), len(first.variables_))
    # the predictions are the candidates' own: the best's matches predict() from the same state
    best = first.predict(exp.t, exp.x0)
    assert np.allclose(exp.predictions[0], best, rtol=1e-3, atol=1e-3 * np.ptp(best))
    d = exp.to_dict(first.variables_)
    json.dumps(d, allow_nan=False)
    assert d["rivals"][0] == 1 and len(d["predictions"]) == len(d["rivals"])


def test_exponential_saturation_over_a_narrow_range_is_decided_by_the_suggested_experiment():
    """dx/dt = 0.5 exp(-0.3 x) seen from x = 1 to 2: straight lines, quadratics and saturations fit
    as well; from the suggested start the exponential law wins."""
    def law(t, y):
        return [0.5 * np.exp(-0.3 * y[0])]

    first, exp, joint = close_the_loop(law, [1.0], np.linspace(0, 3, 80), noise=0.002)
    check_first_fit(first, exp)
    assert not parsed(first)["x_0"].has(sp.exp), str(first)  # the first answer is not the law
    assert parsed(joint)["x_0"].has(sp.exp), str(joint)
    assert not joint.ambiguous_, (str(joint), joint.ambiguity_)
    t = np.linspace(0, 10, 100)
    assert r2_score(simulate(law, [0.2], t), joint.predict(t, [0.2])) > 0.99


def test_pendulum_at_small_amplitude_is_decided_by_the_suggested_experiment():
    """At 0.1 rad, sin(theta) ~ theta: the harmonic oscillator fits as well; the suggested larger swing
    shows the sine."""
    def law(t, y):
        return [y[1], -4.0 * np.sin(y[0])]

    first, exp, joint = close_the_loop(law, [0.1, 0.0], np.linspace(0, 5, 100), noise=0.01,
                                       names=["theta", "omega"])
    check_first_fit(first, exp)
    assert abs(exp.x0[0]) > 0.15 or abs(exp.x0[1]) > 0.3  # a larger swing than observed
    omega = parsed(joint)["omega"]
    assert any(isinstance(a, sp.sin) for a in sp.preorder_traversal(omega)), str(joint)
    assert not joint.ambiguous_, (str(joint), joint.ambiguity_)
    t = np.linspace(0, 5, 100)
    assert r2_score(simulate(law, [1.0, 0.0], t), joint.predict(t, [1.0, 0.0])) > 0.95


@pytest.fixture(scope="module")
def spiral():
    t = np.linspace(0, 10, 100)
    x = simulate(lambda tt, y: [-0.1 * y[0] + y[1], -y[0] - 0.1 * y[1]], [1.0, 0.0], t)
    return ODERegressor(CKPT, time_budget_s=30).fit(t, x, variables=["x", "y"])


def test_a_clean_linear_spiral_is_not_ambiguous(spiral):
    assert not spiral.ambiguous_ and spiral.rivals_ == [], str(spiral)
    assert spiral.equations_[0].to_dict()["score_gap"] == 0.0
    assert all(c.score_gap > spiral.ambiguity_.margin_nats or k not in spiral.ambiguity_.close
               for k, c in enumerate(spiral.equations_[1:], start=1))


def test_experiment_stays_within_the_user_bounds_and_duration(spiral):
    exp = spiral.suggest_experiment(bounds={"x": (-2.0, 3.0), "y": (0.5, 0.5)}, max_duration=7.0)
    assert -2.0 <= exp.x0[0] <= 3.0 and exp.x0[1] == 0.5
    assert 0 < exp.duration <= 7.0 + 1e-9 and exp.t[0] == exp.t0 and abs(exp.t[-1] - exp.t0 - exp.duration) < 1e-9
    assert np.allclose(exp.bounds, [[-2.0, 3.0], [0.5, 0.5]])
    fixed = spiral.suggest_experiment(bounds=[(0.0, 1.0), (-1.0, 1.0)], duration=2.5)
    assert fixed.duration == pytest.approx(2.5) and 0 <= fixed.x0[0] <= 1
    assert not fixed.ambiguous  # not ambiguous: it still separates the best from the next candidates
    # the fit can compute it too (experiment=True), with bounds by name
    assert ODERegressor(CKPT, experiment_max_duration=3.0).experiment_max_duration == 3.0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"bounds": [(0, 1)]}, "shape (1, 2); expected (2, 2)"),
    ({"bounds": [(0, 1, 2), (0, 1, 2)]}, "shape (2, 3)"),
    ({"bounds": [(0, float("nan")), (0, 1)]}, "finite"),
    ({"bounds": {"x": (2, 1)}}, "lower 2.0 is above upper 1.0"),
    ({"bounds": {"z": (0, 1)}}, "unknown variable(s) ['z']"),
    ({"bounds": {"x": "0:1"}}, "expected (lower, upper)"),
    ({"bounds": {"x": "01"}}, "expected (lower, upper)"),
    ({"bounds": [("a", 1), (0, 1)]}, "pair of numbers"),
    ({"max_duration": 0}, "max_duration: must be a finite number > 0"),
    ({"max_duration": -3.0}, "> 0"),
    ({"duration": float("inf")}, "duration: must be a finite number > 0"),
    ({"duration": "long"}, "not a number"),
])
def test_bad_bounds_and_durations_raise_input_error(spiral, kwargs, fragment):
    with pytest.raises(InputError) as e:
        spiral.suggest_experiment(**kwargs)
    assert fragment in str(e.value)


def test_bounds_text_is_read_without_evaluating_it():
    assert parse_bounds("x=0:5, y=-1e-3:2") == {"x": (0.0, 5.0), "y": (-0.001, 2.0)}
    for text, fragment in [("x=0", "NAME=LOWER:UPPER"), ("x=a:1", "must be numbers"), ("x=2:1", "above upper"),
                           ("x=nan:1", "finite"), ("x=0:1,x=0:2", "given twice"), ("", "empty"),
                           ("__import__('os')=0:1", "unknown")]:
        if fragment == "unknown":
            assert list(parse_bounds(text)) == ["__import__('os')"]  # a name, never evaluated
            continue
        with pytest.raises(InputError, match=fragment):
            parse_bounds(text)
