"""The trainer: config, schedule, resume, data-parallel run, and the pinned test checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from odeformer import checkpoint as ckpt
from odeformer.train import load_config, lr_at, train

ROOT = Path(__file__).resolve().parent.parent
TEST_CKPT = ROOT / "tests" / "data" / "test_checkpoint"


def _cfg(tmp_path, name, **over):
    cfg = load_config("test", [])
    cfg.update(out=str(tmp_path / name), workers=0, eval_systems=0, max_steps=6, save_interval_s=1e9, **over)
    return cfg


def test_config_presets_and_overrides():
    cfg = load_config("tiny", ["lr=0.002", "batch_size=8"])
    assert cfg["lr"] == 0.002 and cfg["batch_size"] == 8 and cfg["d_model"] == 128
    with pytest.raises(ValueError, match="unknown config key 'lrr'"):
        load_config("tiny", ["lrr=1"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge", [])


def test_schedule_warms_up_holds_and_decays():
    cfg = load_config("test", ["lr=1.0", "warmup_steps=10", "decay_frac=0.2", "min_lr_frac=0.1"])
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 50, 0.5) == 1.0
    assert lr_at(cfg, 90, 0.9) == pytest.approx(0.55)
    assert lr_at(cfg, 99, 1.0) == pytest.approx(0.1)


def test_resume_continues_the_step_count_and_provenance(tmp_path):
    first = train(_cfg(tmp_path, "a"))
    prov = ckpt.load(first).provenance
    assert prov["steps"] == 6 and prov["samples_seen"] > 0 and len(prov["runs"]) == 1
    assert (tmp_path / "a-predecay" / "config.json").is_file()  # weights before the decay phase
    second = train(_cfg(tmp_path, "b", init=str(first), seed=2))
    prov2 = ckpt.load(second).provenance
    assert prov2["steps"] == 12 and prov2["samples_seen"] > prov["samples_seen"] and len(prov2["runs"]) == 2
    assert prov2["runs"][1]["seed"] == 2


def test_validation_seed_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        train(_cfg(tmp_path, "x", seed=2**31 - 1))
    with pytest.raises(ValueError, match="reserved"):  # the in-distribution benchmark's seed
        train(_cfg(tmp_path, "x", seed=2**31 - 2))


@pytest.mark.timeout(300)
def test_two_process_data_parallel_run_on_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "odeformer.train", "--preset", "test", "--out", str(out), "--set", "max_steps=4",
           "--set", "workers=0", "--set", "eval_systems=0", "--set", "device=cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    prov = ckpt.load(out).provenance
    assert prov["steps"] == 4 and prov["runs"][0]["world"] == 2
    # each rank trains on its own batches (of 4..16 examples): the count covers both ranks
    assert 2 * 4 * 4 <= prov["samples_seen"] <= 2 * 4 * 16


def test_pinned_test_checkpoint_loads():
    c = ckpt.load(TEST_CKPT)
    assert c.model.n_params() < 100_000
    cfg = json.loads((TEST_CKPT / "config.json").read_text())
    assert cfg["provenance"]["steps"] == 400
    assert (TEST_CKPT / "MODEL_CARD.md").is_file()


def test_default_checkpoint_is_found_through_the_environment(monkeypatch):
    monkeypatch.setenv(ckpt.ENV, str(TEST_CKPT))
    assert ckpt.default_path() == TEST_CKPT
    monkeypatch.delenv(ckpt.ENV)
    assert ckpt.default_path() == ROOT / "checkpoints" / "default"


@pytest.mark.timeout(300)
def test_gpu_script_runs_on_cpu_for_a_few_steps(tmp_path):
    """scripts/train_gpu.sh end to end at toy size: probe, timed run, checkpoint and log in $OUT."""
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PRESET="test", SMOKE="0", PROBE_S="2", TRAIN_S="6", WORKERS="1",
               INIT="none", SEED="5", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "scripts/train_gpu.sh"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    probe = json.loads((out / "throughput.json").read_text())
    assert probe["model_alone_samples_per_s"] > 0 and probe["generator_alone_samples_per_s"] > 0
    assert probe["model_alone_48_shapes_samples_per_s"] > 0 and probe["device"] == "cpu"
    c = ckpt.load(out / "base")
    assert c.provenance["runs"][-1]["seed"] == 5 and c.provenance["steps"] > 0
    assert c.model.config.input_derivatives and probe["input_derivatives"]  # DERIVS=1, the default
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["final"] is True
