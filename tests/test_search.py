"""Beam search and constant refitting (the pieces the shipped-model check and inference build on)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from data_gen.expressions import operators
from odeformer import checkpoint as ckpt
from odeformer.decoding import beam_search, sample
from odeformer.derivatives import estimate_derivatives
from odeformer.encoding import encode_points
from odeformer.samples import Example, collate
from odeformer.search.refit import refit, trajectory_r2

TEST_CKPT = Path(__file__).resolve().parent / "data" / "test_checkpoint"
#: dx/dt = c (x - cos t): stiff for c ~ -1e4, where the compiled integrator runs out of steps over a few
#: time units and LSODA takes over
STIFF = (("mul", "C", ("sub", "x_0", ("cos", "t"))),)


def _batch(c, trajectories):
    pts, tr = encode_points(trajectories, c.grammar.max_dim)
    return collate([Example(pts, tr, np.array([1, 2]))])


def test_beam_search_returns_valid_ranked_systems_of_the_right_dimension():
    c = ckpt.load(TEST_CKPT)
    t = np.linspace(0, 10, 60)
    x = np.stack([np.cos(t), -np.sin(t)], axis=1)
    b = _batch(c, [(t, x)])
    results = beam_search(c.model, c.vocab, b["points"], b["traj"], b["mask"], torch.tensor([2]), beam_size=6,
                          max_len=60)[0]
    assert 0 < len(results) <= 6
    scores = [s for s, _ in results]
    assert scores == sorted(scores, reverse=True)
    for _, seq in results:
        comps, consts = c.vocab.decode(seq)
        assert len(comps) == 2


def test_beams_differ_in_structure_not_only_in_constants():
    """structure_only (the default) spends the beam on different equations; without it, beams that differ
    only in a constant's digits crowd the results."""
    c = ckpt.load(TEST_CKPT)
    t = np.linspace(0, 10, 60)
    b = _batch(c, [(t, 3.0 * np.exp(-0.5 * t)[:, None])])

    def forms(**kw):
        res = beam_search(c.model, c.vocab, b["points"], b["traj"], b["mask"], torch.tensor([1]), beam_size=8,
                          max_len=40, **kw)[0]
        return [c.vocab.decode(seq)[0] for _, seq in res]

    diverse, plain = forms(), forms(structure_only=False)
    assert len(diverse) == 8 and len(set(diverse)) == len(diverse)
    assert len(set(plain)) < len(plain)
    assert len(set(diverse)) > len(set(plain))


def test_allowed_operators_mask_the_vocabulary():
    c = ckpt.load(TEST_CKPT)
    t = np.linspace(0, 10, 40)
    b = _batch(c, [(t, np.exp(-0.3 * t)[:, None])])
    allowed_ops = {"add", "mul"}
    allowed = torch.tensor([tok not in c.grammar.output_operators or tok in allowed_ops for tok in c.vocab.tokens])
    results = beam_search(c.model, c.vocab, b["points"], b["traj"], b["mask"], torch.tensor([1]), beam_size=8,
                          max_len=40, allowed=allowed)[0]
    assert results
    for _, seq in results:
        comps, _ = c.vocab.decode(seq)
        assert operators(comps[0]) <= allowed_ops


def test_refitting_recovers_perturbed_constants():
    t = np.linspace(0, 10, 80)
    x = (5 / (1 + (5 / 0.2 - 1) * np.exp(-0.9 * t)))[:, None]
    logistic = (("mul", "C", ("mul", "x_0", ("sub", "C", "x_0"))),)  # r/K * x * (K - x)
    true = np.array([0.18, 5.0])
    start = true * np.array([1.4, 0.7])
    before = trajectory_r2(logistic, start, [(t, x)])
    fit = refit(logistic, start, [(t, x)])
    assert fit.r2 > 0.9999 > before
    np.testing.assert_allclose(fit.constants, true, rtol=1e-3)


def test_derivative_estimate_on_irregular_samples():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 6, 120))
    x = np.sin(t)[:, None]
    dx = estimate_derivatives(t, x)
    assert np.abs(dx[5:-5, 0] - np.cos(t[5:-5])).max() < 0.05


def test_temperature_sampling_gives_valid_seeded_and_diverse_systems():
    c = ckpt.load(TEST_CKPT)
    t = np.linspace(0, 10, 60)
    b = _batch(c, [(t, np.stack([np.cos(t), -np.sin(t)], axis=1))])
    allowed_ops = {"add", "mul", "sin"}
    allowed = torch.tensor([tok not in c.grammar.output_operators or tok in allowed_ops for tok in c.vocab.tokens])

    def draw(seed, temperature=1.0):
        return sample(c.model, c.vocab, b["points"], b["traj"], b["mask"], torch.tensor([2]), n_samples=12,
                      temperature=temperature, max_len=60, allowed=allowed, seed=seed)[0]

    results = draw(0)
    assert 0 < len(results) <= 12 and [s for s, _ in results] == sorted((s for s, _ in results), reverse=True)
    for _, seq in results:
        comps, _ = c.vocab.decode(seq)
        assert len(comps) == 2 and all(operators(cp) <= allowed_ops for cp in comps)
    assert draw(0) == results and draw(1) != results  # seeded
    assert len({tuple(seq) for _, seq in results}) > 1  # not one sequence twelve times
    with pytest.raises(ValueError, match="temperature"):
        draw(0, temperature=0.0)


def test_compiled_simulation_matches_lsoda_for_time_dependent_systems_starting_late():
    from odeformer.search.refit import _simulate_scipy, simulate_many

    t = np.sort(np.random.default_rng(0).uniform(2.0, 9.0, 70))  # irregular, starting at t = 2
    forced = (("add", ("mul", "C", "x_0"), ("sin", ("mul", "C", "t"))),)  # dx/dt = a x + sin(w t)
    rows = np.array([[-0.5, 1.3], [-0.8, 2.0]])
    compiled = simulate_many(forced, rows, t, np.array([1.0]))
    for row, pred in zip(rows, compiled):
        ref = _simulate_scipy(forced, row, t, np.array([1.0]))
        assert pred is not None and np.abs(pred - ref).max() < 3e-4  # LSODA at rtol 1e-6 drifts ~6e-5
    out = simulate_many(STIFF, np.array([[-1e4]]), t, np.array([0.0]))[0]
    assert out is not None and np.allclose(out[1:, 0], np.cos(t[1:]), atol=1e-3)  # past the initial layer


def test_lsoda_fallback_stops_at_the_first_failure_among_a_jacobians_rows(monkeypatch):
    """Rows of one Jacobian (``alike``) stop falling back to LSODA once it fails on one of them; where it
    gets through, every row is tried, and rows that are not alike are all tried either way."""
    import odeformer.search.refit as rf

    t = np.linspace(0.0, 7.0, 40)
    rows = np.array([[-1e4], [-1.0001e4], [-1.0002e4]])  # one system's Jacobian rows
    calls = []
    real = rf._simulate_scipy

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rf, "_simulate_scipy", counted)
    out = rf.simulate_many(STIFF, rows, t, np.array([0.0]), alike=True)
    assert len(calls) == 3 and all(o is not None for o in out)  # LSODA gets through: every row is tried

    monkeypatch.setattr(rf, "_simulate_scipy", lambda *args, **kwargs: calls.append(1))  # LSODA fails
    for alike, tried in ((True, 1), (False, 3)):  # other rows (the instability check's starts) are all tried
        calls.clear()
        assert rf.simulate_many(STIFF, rows, t, np.array([0.0]), alike=alike) == [None] * 3 and len(calls) == tried

