"""The problem's noise level, derivative weights and integral form (odeformer/search/problem.py,
sparse.integral_form): the numbers every later stage of the search leans on."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.interpolate import make_smoothing_spline

from odeformer.derivatives import gcv_penalty, smoothing_spline
from odeformer.search.library import polynomial_terms, unique
from odeformer.search.problem import Problem
from odeformer.search.ranking import at_floor, floors
from odeformer.search.regression import component_path
from odeformer.search.sparse import integral_form

OPS = {"add", "mul", "sub"}


def _problem(t, x):
    return Problem([(t, x)], [f"x_{i}" for i in range(x.shape[1])], OPS, True, 30.0)


def _lotka_volterra(t):
    f = lambda _, y: [y[0] * (1.1 - 0.9 * y[1]), -y[1] * (2.0 - 1.3 * y[0])]  # noqa: E731
    return solve_ivp(f, (t[0], t[-1]), [1.2, 0.7], t_eval=t, rtol=1e-10, atol=1e-12).y.T


@pytest.mark.parametrize("n", [6, 40, 200])
def test_the_smoothing_spline_is_scipys_gcv_spline(n):
    # the penalty is searched on the same criterion as scipy's own search, from an eigendecomposition
    rng = np.random.default_rng(n)
    t = np.sort(rng.uniform(0, 10, n))
    y = 3 * np.sin(t) + 0.05 * t**2 + rng.normal(0, 0.2, n)
    ours, scipys = smoothing_spline(t, y), make_smoothing_spline(t, y)
    assert np.max(np.abs(ours(t) - scipys(t))) < 1e-3 * np.ptp(y)
    assert np.max(np.abs(ours.derivative()(t) - scipys.derivative()(t))) < 1e-2 * np.ptp(y)
    assert 0 < gcv_penalty(t, y) < n


def test_a_smoothing_spline_needs_increasing_times():
    with pytest.raises(ValueError, match="strictly increasing"):
        smoothing_spline(np.array([0.0, 1.0, 1.0, 2.0, 3.0]), np.arange(5.0))


def test_a_clean_fast_coarsely_sampled_curve_counts_as_clean():
    # 12 points per period: a cubic through neighbours is off by ~1% of the spread, a degree-7 fit is not
    t = np.linspace(0, 10, 150)
    x = np.stack([np.sin(9 * t) + 0.3 * np.cos(4 * t), np.cos(9 * t)], axis=1)
    p = _problem(t, x)
    assert p.clean, np.sqrt(p.noise_var) / p.scale


def test_the_noise_level_is_found_on_noisy_data():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 10, 150))
    clean = _lotka_volterra(t)
    sigma = 0.02 * clean.std(axis=0)
    p = _problem(t, clean + sigma * rng.standard_normal(clean.shape))
    assert not p.clean
    ratio = np.sqrt(p.noise_var) / sigma
    assert np.all((ratio > 0.6) & (ratio < 1.5)), ratio


def test_interpolating_spline_weights_distrust_a_fast_start():
    # a transient over the first few points: the quintic spline's derivative is off there, not inside
    t = np.linspace(0, 10, 150)
    x = np.stack([np.exp(-6 * t) + 0.5 * np.sin(t), np.cos(0.7 * t)], axis=1)
    p = _problem(t, x)
    w = p.derivative_weights["interp"]
    assert np.allclose(w.mean(axis=0), 1.0)
    assert w[0, 0] < 0.01 * np.median(w[:, 0]), w[:3, 0]
    assert np.all(p.derivative_weights["spline"] == 1.0)


def test_integral_form_recovers_lotka_volterra_on_clean_data():
    t = np.linspace(0, 10, 150)
    p = _problem(t, _lotka_volterra(t))
    theta, targets, terms = integral_form(p, unique(polynomial_terms(2, OPS, False, degree=2), OPS))
    want = [{"x_0": 1.1, "mul x_0 x_1": -0.9}, {"x_1": -2.0, "mul x_0 x_1": 1.3}]
    for i in range(2):
        # the path's best pair of terms is the law, its coefficients to 1e-4
        pair = next(m for m in component_path(theta, targets[:, i], 6) if len(m.support) == 2)
        got = {"1" if terms[j] is None else terms[j].form: pair.coef[j] for j in pair.support}
        assert set(got) == set(want[i]), got
        for form, value in want[i].items():
            assert abs(got[form] / value - 1) < 1e-4, got


def test_point_weights_follow_noise_that_grows_with_the_signal():
    # a logistic curve from 0.5 to 10: with 5% proportional noise the first points' noise is a tenth of
    # the last points' (their weights tens of times larger); with noise of one size everywhere the
    # weights scatter around 1 (15 residuals estimate each point's noise); clean data have none
    rng = np.random.default_rng(8)
    t = np.linspace(0, 10, 150)
    x = 10 / (1 + 19 * np.exp(-t))
    w = _problem(t, (x * (1 + 0.05 * rng.standard_normal(150)))[:, None]).point_weights[0][:, 0]
    assert np.isclose(w.mean(), 1.0)
    assert w[:15].mean() > 20 * w[-15:].mean(), (w[:15].mean(), w[-15:].mean())
    # the derivative regressions weigh the fitting points alike
    noisy = _problem(t, (x * (1 + 0.05 * rng.standard_normal(150)))[:, None])
    assert np.array_equal(noisy.derivative_weights["spline"], np.concatenate(noisy.fit_weights))
    uniform = _problem(t, (x + 0.3 * rng.standard_normal(150))[:, None]).point_weights[0][:, 0]
    spread = np.percentile(uniform, 90) / np.percentile(uniform, 10)
    assert 0.75 < np.median(uniform) < 1.33 and spread < 3.5, (np.median(uniform), spread)
    assert _problem(t, x[:, None]).point_weights is None


def test_point_weights_average_one_in_each_trajectory():
    # a swing four times larger than another, both with 1% proportional noise: within each the weights
    # follow the noise, and neither trajectory outweighs the other by its scale
    rng = np.random.default_rng(3)
    t = np.linspace(0, 10, 120)
    runs = [(t, (a * np.cos(t) + 0.2 * a)[:, None] * (1 + 0.01 * rng.standard_normal((120, 1)))) for a in (1, 4)]
    w = Problem(runs, ["x_0"], OPS, True, 30.0).point_weights
    assert [round(float(v.mean()), 9) for v in w] == [1.0, 1.0]
    assert all(v.max() > 5 * v.min() for v in w), [(v.min(), v.max()) for v in w]


def test_the_truth_under_proportional_noise_is_not_at_the_criterion_floor():
    # the floor is a tenth of the noise in the weighted residuals' units: the clean curve itself misses
    # the noisy points by the noise, so it is not "exact" (that would stop the search before its climb)
    rng = np.random.default_rng(5)
    t = np.linspace(0, 10, 100)
    x = (0.2 + 2.8 * np.exp(-0.5 * t))[:, None]
    problem = _problem(t, x * (1 + 0.05 * rng.standard_normal(x.shape)))
    truth = problem.norm.apply(t, x)[1]
    plain = np.mean((problem.observed - truth) ** 2, axis=0)
    assert 0.05 < problem.weighted_share[0] < 0.5, problem.weighted_share
    assert np.all(floors(problem) < 0.2 * problem.weighted_share * plain)
    assert not at_floor(problem, [truth])
