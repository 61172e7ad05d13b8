"""Generation pipeline: determinism, filters, shards, corruption, the generate command, import guard."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_gen.corrupt import corrupt
from data_gen.expressions import to_prefix
from data_gen.grammar import Grammar, default_grammar
from data_gen.pipeline import generate_chunk, stream_chunks
from data_gen.shards import read_shard, write_shard
from odeformer.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _same(a, b):
    assert len(a.systems) == len(b.systems)
    for s, t in zip(a.systems, b.systems):
        assert s.skeleton == t.skeleton
        np.testing.assert_array_equal(s.constants, t.constants)
        np.testing.assert_array_equal(s.x, t.x)


def test_chunks_are_deterministic_per_seed():
    g = default_grammar()
    _same(generate_chunk(g, 7, 3), generate_chunk(g, 7, 3))
    other = generate_chunk(g, 8, 3)
    assert [s.skeleton for s in other.systems] != [s.skeleton for s in generate_chunk(g, 7, 3).systems]


@pytest.mark.timeout(120)
def test_stream_is_the_same_for_any_number_of_workers():
    g = default_grammar()
    serial = list(stream_chunks(g, 5, workers=1, stop=3))
    parallel = list(stream_chunks(g, 5, workers=2, stop=3))
    for a, b in zip(serial, parallel):
        _same(a, b)


def test_accepted_systems_pass_every_filter():
    g = default_grammar()
    chunk = generate_chunk(g, 11, 0)
    assert chunk.systems
    bound = g["integration"]["bound"]
    keys = {}
    for s in chunk.systems:
        assert np.all(np.isfinite(s.x)) and np.abs(s.x).max() <= bound
        assert s.x.shape[1:] == (g["time"]["grid_points"], s.skeleton.dim)
        np.testing.assert_allclose(s.x[:, 0], s.x0, rtol=1e-6)
        spread = s.x.max(axis=1) - s.x.min(axis=1)
        assert np.all(spread > 1e-3 * np.abs(s.x).max(axis=1))  # no flat component
        keys.setdefault(s.skeleton.key, 0)
        keys[s.skeleton.key] += 1
    # instances of one skeleton share a key; a chunk draws no skeleton twice
    assert max(keys.values()) <= g["tree"]["instances_per_skeleton"]
    # every kept trajectory is counted as ok, and every integrated trajectory is counted once
    assert chunk.rejections["traj_ok"] == sum(s.x.shape[0] for s in chunk.systems)
    n_integrated = sum(v for k, v in chunk.rejections.items() if k.startswith("traj_"))
    skeletons = chunk.skeleton_draws - sum(chunk.rejections[k] for k in
                                           ("constant", "unused_variable", "time_unused", "too_long", "duplicate"))
    per = g["tree"]["instances_per_skeleton"] * g["initial_conditions"]["per_system"]
    assert n_integrated == skeletons * per


def test_time_share_makes_forced_systems():
    g = Grammar.from_dict({"system": {"time_share": 1.0, "max_dim": 2, "dim_weights": [1.0, 1.0]}})
    chunk = generate_chunk(g, 2, 0)
    assert chunk.systems and all(s.skeleton.uses_time for s in chunk.systems)


def test_six_variables_when_the_grammar_asks():
    g = Grammar.from_dict({"system": {"min_dim": 6, "max_dim": 6, "dim_weights": [1.0]},
                           "tree": {"ops_per_component": [1, 3]}})
    systems = [s for i in range(6) for s in generate_chunk(g, 3, i).systems]
    assert systems and all(s.skeleton.dim == 6 and s.x.shape[2] == 6 for s in systems)


def test_shard_round_trip(tmp_path):
    systems = generate_chunk(default_grammar(), 4, 0).systems
    path = tmp_path / "s.safetensors"
    write_shard(path, systems)
    assert not list(tmp_path.glob("*.tmp"))
    back = read_shard(path)
    assert len(back) == len(systems)
    for a, b in zip(systems, back):
        assert a.skeleton == b.skeleton
        # float16 fractions of each trajectory component's largest magnitude (format 2)
        assert a.x.shape == b.x.shape and b.x.dtype == np.float32
        scale = np.abs(a.x).max(axis=1, keepdims=True)
        assert np.all(np.abs(a.x - b.x) <= 2.0**-11 * scale * 1.01 + 1e-30)
        np.testing.assert_allclose(a.constants, b.constants, rtol=1e-7)
        np.testing.assert_allclose(a.x0, b.x0, rtol=1e-3)
        assert abs(a.t_end - b.t_end) <= 1e-6 * a.t_end


def test_old_shards_still_read_and_unknown_formats_are_named(tmp_path):
    from safetensors.numpy import save_file

    systems = generate_chunk(default_grammar(), 4, 0).systems[:3]
    toks = [[tok for c in s.skeleton.components for tok in ["|"] + to_prefix(c)][1:] for s in systems]
    vocab = sorted({t for ts in toks for t in ts})
    ptr = lambda ls: np.concatenate([[0], np.cumsum(ls)]).astype(np.int64)  # noqa: E731
    v1 = {
        "x": np.concatenate([s.x.ravel() for s in systems]).astype(np.float32),
        "x_ptr": ptr([s.x.size for s in systems]),
        "x0": np.concatenate([s.x0.ravel() for s in systems]),
        "n_traj": np.array([s.x.shape[0] for s in systems], dtype=np.int64),
        "dim": np.array([s.skeleton.dim for s in systems], dtype=np.int64),
        "t_end": np.array([s.t_end for s in systems]),
        "tokens": np.array([vocab.index(t) for ts in toks for t in ts], dtype=np.int16),
        "token_ptr": ptr([len(ts) for ts in toks]),
        "consts": np.concatenate([s.constants for s in systems]),
        "const_ptr": ptr([len(s.constants) for s in systems]),
    }
    path = tmp_path / "v1.safetensors"
    save_file(v1, str(path), metadata={"format": "odeformer-shard-1", "vocabulary": json.dumps(vocab),
                                       "grid_points": str(systems[0].x.shape[1])})
    for a, b in zip(systems, read_shard(path)):
        assert a.skeleton == b.skeleton and a.t_end == b.t_end
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.x0, b.x0)
    save_file({"x": np.zeros(1)}, str(tmp_path / "v9.safetensors"), metadata={"format": "odeformer-shard-9"})
    with pytest.raises(ValueError, match="format 'odeformer-shard-9'.*regenerate"):
        read_shard(tmp_path / "v9.safetensors")


def test_shards_take_at_most_2_5_kb_per_system(tmp_path):
    out = tmp_path / "data"
    assert main(["generate", "--n", "400", "--out", str(out), "--seed", "2", "--quiet"]) == 0
    size = sum(p.stat().st_size for p in out.glob("shard_*.safetensors"))
    assert size / 400 <= 2500, size / 400


def test_corruption_keeps_order_and_respects_ranges():
    g = default_grammar()
    cfg = g["corruption"]
    rng = np.random.default_rng(0)
    systems = generate_chunk(g, 9, 0).systems
    grid = g["time"]["grid_points"]
    for i in range(400):
        s = systems[i % len(systems)]
        sample = corrupt(s, cfg, rng)
        assert cfg["trajectories"][0] <= len(sample.trajectories) <= min(cfg["trajectories"][1], s.x.shape[0])
        assert cfg["noise_multiplicative"][0] <= sample.noise_multiplicative <= cfg["noise_multiplicative"][1]
        assert cfg["noise_additive"][0] <= sample.noise_additive <= cfg["noise_additive"][1]
        for t, x in sample.trajectories:
            assert x.shape == (len(t), s.skeleton.dim)
            assert len(t) >= 5 and len(t) <= cfg["points"][1]
            assert np.all(np.diff(t) > 0) and t[0] >= 0 and t[-1] <= s.t_end * (1 + 1e-12)
            span = (t[-1] - t[0]) / s.t_end
            assert span <= 1.0
            idx = np.rint(t / s.t_end * (grid - 1)).astype(int)
            if sample.noise_multiplicative == 0 and sample.noise_additive == 0:
                assert any(np.array_equal(x, s.x[j, idx]) for j in range(s.x.shape[0]))
    # noise-free corruption keeps values exactly
    clean = dict(cfg, noise_multiplicative=[0.0, 0.0], noise_additive=[0.0, 0.0], drop=[0.5, 0.5])
    sample = corrupt(systems[0], clean, rng)
    t, x = sample.trajectories[0]
    idx = np.rint(t / systems[0].t_end * (grid - 1)).astype(int)
    assert any(np.allclose(x, systems[0].x[j, idx]) for j in range(systems[0].x.shape[0]))


def test_generate_command_writes_shards_and_manifest(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["generate", "--n", "120", "--out", str(out), "--shard-size", "50", "--seed", "3", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["systems"] == 120 and manifest["seed"] == 3
    assert manifest["grammar_sha256"] == default_grammar().sha256()
    assert [s["systems"] for s in manifest["shards"]] == [50, 50, 20]
    assert "traj_ok" in manifest["rejections"]
    total = sum(len(read_shard(out / s["file"])) for s in manifest["shards"])
    assert total == 120
    assert "systems/s" in capsys.readouterr().out


def test_generate_command_bad_grammar_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[operators]\nunary = { sine = 1.0 }\n")
    out = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "odeformer.cli", "generate", "--grammar", str(bad), "--n", "5",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "operators.unary.sine" in lines[0]
    assert not out.exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep")
    assert main(["generate", "--n", "5", "--out", str(full)]) == 2
    assert [p.name for p in full.iterdir()] == ["x"]


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'pydantic', 'fastapi', 'uvicorn', 'starlette'}:
            raise ImportError('blocked web package: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_training_path_imports_without_web_packages():
    modules = ["data_gen.grammar", "data_gen.expressions", "odeformer.cli", "data_gen.sampler",
               "data_gen.simplify", "data_gen.integrate", "data_gen.program", "data_gen.pipeline",
               "data_gen.corrupt", "data_gen.shards", "data_gen.generate", "odeformer.tokens", "odeformer.encoding",
               "odeformer.model", "odeformer.samples", "odeformer.checkpoint", "odeformer.decoding",
               "odeformer.metrics", "odeformer.train"]
    code = BLOCKER + "\n".join(f"import {m}" for m in modules) + "\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
