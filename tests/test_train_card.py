"""Issue 15: the progress bar honours max_time_s, and every checkpoint the trainer writes has a model card."""

import re

from odeformer import checkpoint as ckpt
from odeformer.cli import main
from odeformer.train import load_config, progress_total


def test_progress_total_follows_the_time_limit():
    cfg = load_config("test", ["max_time_s=60", "max_steps=1000"])
    assert progress_total(cfg, 0, 0.0) is None  # no ETA until a step is timed
    assert progress_total(cfg, 10, 6.0) == 100  # 0.6 s a step: 100 steps fit in 60 s, not 1000
    assert progress_total(cfg, 10, 0.1) == 1000  # never more than max_steps
    assert progress_total(cfg, 50, 70.0) == 50  # past the limit: what was done
    assert progress_total(load_config("test", ["max_steps=1000"]), 10, 6.0) == 1000


def test_time_limited_run_shows_its_real_total_and_writes_model_cards(tmp_path, capsys):
    out = tmp_path / "mine"
    assert main(["train", "--preset", "test", "--out", str(out), "--set", "max_time_s=6", "--set", "max_steps=100000",
                 "--set", "workers=0", "--set", "eval_systems=4", "--set", "eval_interval=0"]) == 0
    err = capsys.readouterr().err
    assert "/100000" not in err
    done = ckpt.load(out).provenance["steps"]
    assert re.search(rf"{done}/{done} ", err), err[-400:]  # the bar ends full at the steps done
    # the pre-decay weights too, when the run got that far (on a loaded machine 4 s may be one step)
    for path in [out] + ([tmp_path / "mine-predecay"] if (tmp_path / "mine-predecay").exists() else []):
        card = (path / "MODEL_CARD.md").read_text()
        config = ckpt.load(path).config
        assert ckpt.GENERATED_CARD in card
        assert config["grammar_sha256"] in card and "default.toml" in card
        assert "init checkpoint: `none (trained from scratch)`" in card
        assert "odeformer train --preset test --out" in card and "max_time_s=6" in card
        assert "steps" in card and "samples" in card and "minutes on cpu" in card
    final = (out / "MODEL_CARD.md").read_text()
    assert "Checkpoint final" in final and "token accuracy" in final


def test_data_and_new_checkpoints_are_ignored_but_shipped_ones_are_not():
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        import pytest

        pytest.skip("not a git checkout")

    def ignored(*paths):
        proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
        return set(proc.stdout.split())

    new = ["data/train/shard_00000.safetensors", "checkpoints/mine/model.safetensors", "checkpoints/mine-predecay"]
    assert ignored(*new) == set(new)
    listing = subprocess.run(["git", "ls-files", "checkpoints"], cwd=root, capture_output=True, text=True)
    shipped = listing.stdout.split()
    assert {"checkpoints/default/model.safetensors", "checkpoints/tiny/model.safetensors"} <= set(shipped)
    assert ignored(*shipped) == set()
