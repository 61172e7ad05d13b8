"""Retraining on a custom grammar: generate -> train --init --grammar -> fit with the new checkpoint."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from odeformer import ODERegressor
from odeformer import checkpoint as ckpt
from odeformer.cli import main

ROOT = Path(__file__).resolve().parent.parent
TEST_CKPT = ROOT / "tests" / "data" / "test_checkpoint"
ATAN = ROOT / "data_gen" / "grammars" / "examples" / "atan.toml"


def test_three_command_workflow_with_a_new_operator(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["generate", "--grammar", str(ATAN), "--n", "300", "--out", str(data), "--seed", "4", "--quiet"]) == 0
    out = tmp_path / "atan_model"
    log = tmp_path / "log.jsonl"
    assert main(["train", "--preset", "test", "--init", str(TEST_CKPT), "--grammar", str(ATAN), "--data", str(data),
                 "--out", str(out), "--set", "max_steps=80", "--set", "eval_interval=40", "--set", "eval_systems=16",
                 "--set", "lr=0.003", "--set", "warmup_steps=5", "--set", f"log={log}"]) == 0
    assert "vocabulary extended with" in capsys.readouterr().out
    new = ckpt.load(out)
    base = ckpt.load(TEST_CKPT)
    assert {"atan", "sinh"} <= set(new.vocab.tokens) and "atan" not in base.vocab.tokens
    assert new.vocab.tokens[: len(base.vocab)] == base.vocab.tokens  # old ids kept
    evals = [r for r in map(json.loads, log.read_text().splitlines()) if "val_loss" in r]
    assert len(evals) >= 3 and evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert new.provenance["steps"] == base.provenance["steps"] + 80
    t = np.linspace(0, 10, 50)
    reg = ODERegressor(out, beam_size=4, time_budget_s=5).fit(t, np.arctan(t)[:, None] + 1.0)
    assert reg.equations_ and np.isfinite(reg.equations_[0].r2)
    # the walkthrough's check runs on the new checkpoint: one line per law, each with a parseable equation
    spec = importlib.util.spec_from_file_location("atan_laws", ROOT / "examples" / "atan_laws.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main([str(out)])
    lines = [line for line in capsys.readouterr().out.splitlines() if "law found:" in line]
    assert len(lines) == len(example.LAWS)
    for line, (text, _, _) in zip(lines, example.LAWS.values()):
        assert f"dx/dt = {text}" in line and ("law found: yes" in line or "law found: no" in line)


def test_derivative_inputs_added_to_a_trained_model_change_nothing_until_trained(tmp_path):
    import torch

    from odeformer.encoding import encode_points
    from odeformer.finetune import add_derivative_inputs
    from odeformer.samples import Example, collate
    from odeformer.train import load_config, train

    base = ckpt.load(TEST_CKPT)
    wide = add_derivative_inputs(base.model, base.grammar.max_dim)
    assert wide.config.input_derivatives and not base.model.config.input_derivatives
    t = np.linspace(0, 5, 40)
    x = np.stack([np.exp(-t), np.sin(t)], axis=1)
    tokens = np.array([1, 2, 3])
    plain = collate([Example(*encode_points([(t, x)], base.grammar.max_dim), tokens)])
    rich = collate([Example(*encode_points([(t, x)], base.grammar.max_dim, derivatives=True), tokens)])
    assert rich["points"].shape[-1] > plain["points"].shape[-1]
    with torch.no_grad():
        before = base.model.eval()(plain["points"], plain["traj"], plain["mask"], plain["tokens"])
        after = wide.eval()(rich["points"], rich["traj"], rich["mask"], rich["tokens"])
    torch.testing.assert_close(before, after)
    cfg = load_config("test", ["add_input_derivatives=true", "max_steps=3", "workers=0", "eval_systems=0"])
    cfg.update(init=str(TEST_CKPT), out=str(tmp_path / "wide"))
    trained = ckpt.load(train(cfg))
    assert trained.model.config.input_derivatives and trained.provenance["steps"] == base.provenance["steps"] + 3
