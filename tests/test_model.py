"""Tokens, input encoding, model, decoding mask, checkpoints."""

import json
import math

import numpy as np
import pytest
import sympy as sp
import torch

from data_gen.expressions import to_sympy, variables_used
from data_gen.grammar import default_grammar
from data_gen.pipeline import generate_chunk
from odeformer import checkpoint as ckpt
from odeformer.decoding import greedy
from odeformer.encoding import Normalization, encode_points, n_features
from odeformer.model import ModelConfig, ODEFormer
from odeformer.samples import collate, examples_from_systems
from odeformer.tokens import Vocabulary, decode_constant, encode_constant

G = default_grammar()
V = Vocabulary.for_grammar(G)


@pytest.mark.parametrize("v", [1.0, -1.0, 0.0123, 9.96, -9.94, 123.4, 2.5e-7, -3e9, 0.05])
def test_constant_tokens_keep_two_significant_digits(v):
    m, e = encode_constant(v)
    back = decode_constant(m, e)
    if 1e-4 <= abs(v) < 1e5:
        assert math.isclose(back, v, rel_tol=0.06)
    assert math.copysign(1, back) == math.copysign(1, v) or v == 0


def test_systems_round_trip_through_tokens():
    systems = [s for i in range(3) for s in generate_chunk(G, 21, i).systems]
    assert any(s.skeleton.dim > 1 for s in systems)
    for s in systems:
        ids = V.encode(s.skeleton.components, s.constants)
        assert ids[0] == V.bos_id and ids[-1] == V.eos_id
        comps, consts = V.decode(ids)
        assert comps == s.skeleton.components
        np.testing.assert_allclose(consts, s.constants, rtol=0.06)
        assert [str(to_sympy(c)) for c in comps]  # SymPy accepts every decoded tree


def test_decode_rejects_broken_sequences():
    idx = V.index
    with pytest.raises(ValueError):
        V.decode([V.bos_id, idx["add"], idx["x_0"]])  # no <eos>
    with pytest.raises(ValueError):
        V.decode([V.bos_id, idx["add"], idx["x_0"], V.eos_id])  # incomplete tree
    with pytest.raises(ValueError):
        V.decode([V.bos_id, idx["+1.0"], idx["x_0"], V.eos_id])  # mantissa without exponent


def test_max_output_length_covers_long_systems():
    assert ModelConfig(n_features=1, vocab_size=1).max_out_len >= 128


def test_encoding_pools_trajectories_and_marks_unused_variables():
    t = np.linspace(0, 5, 30)
    x = np.stack([np.exp(-t), np.cos(t)], axis=1)
    feats, ids = encode_points([(t, x), (t[:10], x[:10])], max_dim=4)
    assert feats.shape == (40, n_features(4)) and feats.dtype == np.float32
    assert list(np.unique(ids)) == [0, 1] and (ids == 1).sum() == 10
    presence = feats[:, 2 + 12: 2 + 16]
    assert np.all(presence[:, :2] == 1) and np.all(presence[:, 2:] == 0)
    with pytest.raises(ValueError, match="at most 1"):
        encode_points([(t, x)], max_dim=1)


def test_derivative_features_estimate_the_rate_of_change():
    """The optional dx/dt inputs: asinh of the estimate and of the estimate over the variable's scale."""
    t = np.sort(np.random.default_rng(0).uniform(0, 5, 80))
    x = np.stack([3.0 * np.exp(-0.5 * t), np.sin(t)], axis=1)
    plain, _ = encode_points([(t, x)], max_dim=2)
    feats, _ = encode_points([(t, x), (t[:3], x[:3])], max_dim=2, derivatives=True)
    assert feats.shape == (83, n_features(2, derivatives=True)) == (83, 2 + 6 * 2)
    np.testing.assert_array_equal(feats[:80, : n_features(2)], plain)  # the plain features come first
    dx = np.sinh(feats[:80, 10:12])
    inner = slice(5, 75)  # Savitzky-Golay is less exact at the window's ends
    np.testing.assert_allclose(dx[inner, 0], -0.5 * x[inner, 0], atol=0.05)  # linear resampling across gaps
    np.testing.assert_allclose(dx[inner, 1], np.cos(t[inner]), atol=0.05)
    np.testing.assert_allclose(np.sinh(feats[:80, 12]), dx[:, 0] / np.abs(x[:, 0]).max(), rtol=1e-4)
    assert np.all(np.isfinite(feats))  # a three-point trajectory and repeated times give finite features
    repeated, _ = encode_points([(np.zeros(6), np.ones((6, 1)))], max_dim=1, derivatives=True)
    assert np.all(np.isfinite(repeated))


def test_the_derivative_switch_travels_with_the_checkpoint(tmp_path):
    cfg = ModelConfig(n_features=n_features(G.max_dim, True), vocab_size=len(V), d_model=32, n_heads=2, n_enc=1,
                      n_dec=1, d_ff=64, input_derivatives=True)
    path = ckpt.save(tmp_path / "d", ODEFormer(cfg), V, G, {"samples_seen": 1})
    loaded = ckpt.load(path)
    assert loaded.model.config.input_derivatives and loaded.model.config.n_features == 2 + 6 * G.max_dim
    assert json.loads((path / "config.json").read_text())["encoding"]["derivatives"] is True
    # checkpoints written before the switch existed read as without it
    assert ModelConfig(**{k: v for k, v in cfg.to_dict().items() if k != "input_derivatives"}).input_derivatives \
        is False


def test_normalization_inverse_gives_user_units():
    """Fit data in a scaled frame, map the frame's equation back: it must reproduce the user's law."""
    x, tt = sp.symbols("x t")
    t = np.linspace(100.0, 300.0, 50)
    xs = 2000.0 * np.exp(-0.01 * (t - 100.0))
    norm = Normalization.fit([(t, xs[:, None])])
    tn, xn = norm.apply(t, xs[:, None])
    assert abs(tn[0]) < 1e-12 and abs(tn[-1] - 10.0) < 1e-9 and np.abs(xn).max() < 500
    # in the normalised frame the law is dx'/dt' = -(0.01 / t_scale) x'
    g = -0.01 / norm.t_scale * x
    (f,) = norm.invert([g], [x], tt)
    assert abs(float(f.subs(x, 1.0)) + 0.01) < 1e-12


def _tiny_model(d_model=32, layers=1):
    torch.manual_seed(0)
    return ODEFormer(ModelConfig(n_features=n_features(G.max_dim), vocab_size=len(V), d_model=d_model, n_heads=2,
                                 n_enc=layers, n_dec=layers, d_ff=2 * d_model))


def _examples(n_systems=6, per=2, seed=3):
    systems = generate_chunk(G, seed, 0).systems[:n_systems]
    return examples_from_systems(systems, G, V, per, np.random.default_rng(0), 192), systems


def test_forward_shapes_and_padding_does_not_leak():
    model = _tiny_model().eval()
    examples, _ = _examples()
    batch = collate(examples)
    logits = model(batch["points"], batch["traj"], batch["mask"], batch["tokens"][:, :-1])
    assert logits.shape == (len(examples), batch["tokens"].shape[1] - 1, len(V))
    # the same example alone (no padding) gives the same logits
    single = collate([examples[0]])
    alone = model(single["points"], single["traj"], single["mask"], single["tokens"][:, :-1])
    n = single["tokens"].shape[1] - 1
    torch.testing.assert_close(alone[0], logits[0, :n], atol=1e-5, rtol=1e-4)


def test_overfit_a_handful_of_systems():
    from odeformer.train import masked_loss

    model = _tiny_model(d_model=64, layers=2)
    examples, _ = _examples(n_systems=4, per=1)
    batch = collate(examples)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        loss, _, _ = masked_loss(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10, (first, loss.item())


def test_greedy_decoding_always_yields_valid_systems_of_the_right_dimension():
    model = _tiny_model().eval()
    examples, systems = _examples(n_systems=8, per=1, seed=5)
    batch = collate(examples)
    dims = torch.tensor([s.skeleton.dim for s in systems])
    for seq, d in zip(greedy(model, V, batch["points"], batch["traj"], batch["mask"], dims, max_len=192), dims):
        if V.eos_id in seq:
            comps, consts = V.decode(seq)
            assert len(comps) == d
            assert all(int(v[2:]) < d for c in comps for v in variables_used(c))  # no variable beyond the data


def test_checkpoint_round_trip_and_rejections(tmp_path):
    model = _tiny_model()
    path = ckpt.save(tmp_path / "m", model, V, G, {"steps": 5, "samples_seen": 80})
    loaded = ckpt.load(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    assert loaded.vocab == V and loaded.grammar.sha256() == G.sha256()
    cfg = json.loads((path / "config.json").read_text())
    assert set(cfg["weights"]) == {"model.safetensors"}
    # a flipped byte in the weights
    w = path / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="sha256"):
        ckpt.load(path)
    # a config that does not match the weights
    path2 = ckpt.save(tmp_path / "m2", model, V, G, {})
    cfg = json.loads((path2 / "config.json").read_text())
    cfg["architecture"]["d_ff"] = 128
    (path2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="shape"):
        ckpt.load(path2)
    with pytest.raises(ckpt.CheckpointError, match="no config.json"):
        ckpt.load(tmp_path)


def test_large_checkpoints_are_sharded_under_15_mib(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "SHARD_BYTES", 50_000)
    model = _tiny_model()
    path = ckpt.save(tmp_path / "big", model, V, G, {})
    cfg = json.loads((path / "config.json").read_text())
    assert len(cfg["weights"]) > 1 and (path / "model.safetensors.index.json").is_file()
    assert all((path / f).stat().st_size <= 50_000 + 20_000 for f in cfg["weights"])
    ckpt.load(path)


def test_incremental_decoding_matches_full_decoding():
    model = _tiny_model(d_model=64, layers=2).eval()
    examples, _ = _examples(n_systems=2, per=1)
    b = collate(examples)
    with torch.no_grad():
        mem = model.encode(b["points"], b["traj"], b["mask"])
        cache = model.cross_cache(mem)
        seq = b["tokens"][:, :8]
        full = model.decode(seq, mem, b["mask"])
        pasts = [{} for _ in model.decoder]
        for i in range(seq.shape[1]):
            torch.testing.assert_close(model.decode_step(seq[:, : i + 1], b["mask"], cache, pasts), full[:, i],
                                       atol=1e-5, rtol=1e-4)
