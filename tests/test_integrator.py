"""The batched integrator: analytic solutions, agreement with LSODA, and rejection of bad trajectories."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from data_gen.expressions import python_rhs
from data_gen.grammar import default_grammar
from data_gen.integrate import (
    STATUS_BLOWUP,
    STATUS_FLAT,
    STATUS_INACCURATE,
    STATUS_NAN,
    STATUS_OK,
    STATUS_STIFF,
    solve_batch,
)
from data_gen.pipeline import generate_chunk
from data_gen.program import build_batch, compile_system

GRID = 201


def solve(components, consts, x0, t_end=10.0, max_steps=5000, rtol=1e-8, verify=100.0):
    prog = compile_system(components)
    batch = build_batch([prog], [np.array([consts], dtype=float).reshape(1, prog.n_free)], np.array([t_end]))
    sol = solve_batch(batch, np.array([x0], dtype=float), np.array([0]), GRID, rtol, rtol * 1e-2, max_steps, 1e3,
                      verify_factor=verify)
    return sol.status[0], sol.x[0, :, :len(components)], np.linspace(0, t_end, GRID)


def test_exponential_decay():
    status, x, t = solve([("mul", "C", "x_0")], [-0.7], [3.0])
    assert status == STATUS_OK
    np.testing.assert_allclose(x[:, 0], 3.0 * np.exp(-0.7 * t), atol=1e-6)


def test_logistic_growth():
    r, k = 0.9, 5.0
    status, x, t = solve([("mul", "C", ("mul", "x_0", ("sub", "C", "x_0")))], [r / k, k], [0.2])
    assert status == STATUS_OK
    want = k / (1 + (k / 0.2 - 1) * np.exp(-r * t))
    np.testing.assert_allclose(x[:, 0], want, atol=1e-5)


def test_harmonic_oscillator():
    w = 2.0
    status, x, t = solve([("x_1"), ("mul", "C", "x_0")], [-(w**2)], [1.0, 0.0])
    assert status == STATUS_OK
    np.testing.assert_allclose(x[:, 0], np.cos(w * t), atol=1e-5)
    np.testing.assert_allclose(x[:, 1], -w * np.sin(w * t), atol=1e-5)


def test_forced_oscillator_uses_time():
    # x'' = -x + sin(2t): particular + homogeneous solution from x(0)=0, x'(0)=0
    status, x, t = solve([("x_1"), ("add", ("neg", "x_0"), ("sin", ("mul", "C", "t")))], [2.0], [0.0, 0.0])
    assert status == STATUS_OK
    want = (2 * np.sin(t) - np.sin(2 * t)) / 3
    np.testing.assert_allclose(x[:, 0], want, atol=1e-5)


@pytest.mark.parametrize("components, consts, x0, want", [
    ([("pow2", "x_0")], [], [1.0], STATUS_BLOWUP),  # finite-time singularity at t = 1
    ([("log", "x_0")], [], [-1.0], STATUS_NAN),
    ([("mul", "C", ("sub", "x_0", ("cos", "t")))], [-2e3], [0.0], STATUS_STIFF),
    ([("mul", "C", "x_0")], [1e-9], [1.0], STATUS_FLAT),
])
def test_bad_trajectories_are_rejected(components, consts, x0, want):
    status, _, _ = solve(components, consts, x0, max_steps=2000)
    assert status == want


def test_chaotic_system_fails_verification_instead_of_being_kept_wrong():
    # Lorenz over a long span: any two solvers part ways, so the double solve must flag it
    lorenz = [("mul", "C", ("sub", "x_1", "x_0")),
              ("sub", ("mul", "x_0", ("sub", "C", "x_2")), "x_1"),
              ("sub", ("mul", "x_0", "x_1"), ("mul", "C", "x_2"))]
    status, _, _ = solve(lorenz, [10.0, 28.0, 8 / 3], [1.0, 1.0, 1.0], t_end=60.0, max_steps=20000, rtol=1e-7)
    assert status == STATUS_INACCURATE


def test_agrees_with_lsoda_on_sampled_systems():
    """>=200 accepted systems: max error <= 1e-3 * range + 1e-6 on >= 95% of them."""
    g = default_grammar()
    systems = []
    index = 0
    while len(systems) < 220:
        chunk = generate_chunk(g, seed=1234, index=index, n_skeletons=64)
        # one instance per skeleton keeps the sample diverse
        seen = set()
        for s in chunk.systems:
            if s.skeleton.key not in seen:
                seen.add(s.skeleton.key)
                systems.append(s)
        index += 1
    good = 0
    for s in systems[:220]:
        rhs = python_rhs(s.skeleton.components, s.constants)
        t = np.linspace(0, s.t_end, s.x.shape[1])
        with np.errstate(all="ignore"):
            ref = solve_ivp(rhs, (0, s.t_end), s.x0[0], method="LSODA", t_eval=t, rtol=1e-10, atol=1e-12)
        if not ref.success or ref.y.shape[1] != len(t):
            continue  # the reference itself failed: not counted for or against
        ref_x = ref.y.T
        tol = 1e-3 * (ref_x.max(axis=0) - ref_x.min(axis=0)) + 1e-6
        good += bool(np.all(np.abs(s.x[0] - ref_x) <= tol))
    assert good >= 0.95 * 220, good
