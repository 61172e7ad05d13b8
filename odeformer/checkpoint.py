"""Checkpoints (DESIGN.md 3.4): safetensors weights in shards of <= 15 MiB, ``config.json``, model card.

``config.json`` holds the architecture, the vocabulary, the full grammar, the input encoding and the
training provenance (cumulative samples, steps, GPU minutes, hardware, data seeds, git commit) and the
sha256 of every weight file. :func:`load` checks hashes, file list and shapes, and fails with a
:class:`CheckpointError` that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from data_gen.grammar import Grammar
from odeformer.model import ModelConfig, ODEFormer
from odeformer.tokens import Vocabulary

FORMAT = "odeformer-checkpoint-1"
SHARD_BYTES = 15 * 2**20
MAX_TOTAL_BYTES = 30 * 2**20
ENV = "ODEFORMER_CHECKPOINT"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or does not match its config."""


@dataclass
class Checkpoint:
    model: ODEFormer
    vocab: Vocabulary
    grammar: Grammar
    config: dict
    path: Path | None = None

    @property
    def provenance(self) -> dict:
        return self.config.get("provenance", {})

    @property
    def name(self) -> str:
        return self.config.get("name", self.path.name if self.path else "unnamed")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str:
    """The code's commit: ``$ODEFORMER_GIT_COMMIT`` (set by scripts that run on a copy without .git), else git."""
    env = os.environ.get("ODEFORMER_GIT_COMMIT", "")
    if len(env) == 40:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        commit = out.stdout.strip()
        return commit if out.returncode == 0 and len(commit) == 40 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save(path: str | Path, model: ODEFormer, vocab: Vocabulary, grammar: Grammar, provenance: dict,
         name: str | None = None, dtype: torch.dtype = torch.float32, extra: dict | None = None,
         card: dict | None = None) -> Path:
    """Write a checkpoint directory atomically (a temporary sibling, then a rename).

    ``card``: facts of the training run (see :func:`model_card`); the checkpoint then gets a
    ``MODEL_CARD.md`` made from them and its config. Without it an existing card is kept."""
    path = Path(path)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in _unwrap(model).state_dict().items()}
    total = sum(t.numel() * t.element_size() for t in state.values())
    if total > MAX_TOTAL_BYTES:
        raise CheckpointError(f"weights take {total / 2**20:.1f} MiB, over the "
                              f"{MAX_TOTAL_BYTES / 2**20:.0f} MiB budget")
    shards: list[dict] = [{}]
    size = 0
    for k, t in state.items():
        nbytes = t.numel() * t.element_size()
        if size + nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    tmp.chmod(0o755)
    files = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for fname, shard in zip(files, shards):
        save_file(shard, str(tmp / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    if len(files) > 1:
        (tmp / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=1))
    config = {
        "format": FORMAT,
        "name": name or path.name,
        "architecture": _unwrap(model).config.to_dict(),
        "dtype": str(dtype).replace("torch.", ""),
        "vocabulary": list(vocab.tokens),
        "grammar": grammar.data,
        "grammar_sha256": grammar.sha256(),
        "encoding": {"module": "odeformer.encoding", "max_dim": grammar.max_dim, "t_ref": 10.0,
                     "derivatives": _unwrap(model).config.input_derivatives},
        "provenance": provenance,
        "weights": {f: sha256_file(tmp / f) for f in files},
        **(extra or {}),
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    old_card = path / "MODEL_CARD.md"
    if card is not None:
        n_params = sum(t.numel() for t in state.values())
        (tmp / "MODEL_CARD.md").write_text(model_card(config, dict(card, parameters=n_params, weight_bytes=total)))
    elif old_card.exists():
        shutil.copy(old_card, tmp / "MODEL_CARD.md")
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


GENERATED_CARD = "<!-- written by odeformer train from config.json; edit freely, the next run rewrites it -->"


def model_card(config: dict, run: dict) -> str:
    """``MODEL_CARD.md`` of a checkpoint that ``odeformer train`` wrote: what it is, how it was trained
    (grammar and its sha256, init checkpoint, data, samples, steps, minutes, device), validation figures.

    ``config``: the checkpoint's config.json; ``run``: this run's facts (``command``, ``init``,
    ``grammar_source``, ``data``, ``validation`` figures, ``status``, ``parameters``, ``weight_bytes``)."""
    arch = config["architecture"]
    prov = config.get("provenance", {})
    motifs = config["grammar"].get("motifs", {})
    runs = prov.get("runs", [])
    this = runs[-1] if runs else {}
    val = run.get("validation") or {}
    lines = [
        GENERATED_CARD,
        f"# {config['name']}",
        "",
        f"**What it is.** An encoder-decoder transformer of {run.get('parameters', 0) / 1e6:.2f}M parameters "
        f"(d_model {arch.get('d_model')}, {arch.get('n_heads')} heads, {arch.get('n_enc')} encoder + "
        f"{arch.get('n_dec')} decoder layers, d_ff {arch.get('d_ff')}), weights in {config.get('dtype')} "
        f"({run.get('weight_bytes', 0) / 2**20:.1f} MiB), {len(config['vocabulary'])} output tokens; derivative "
        f"input features {'on' if config.get('encoding', {}).get('derivatives') else 'off'}. Checkpoint "
        f"{run.get('status', 'final')}.",
        "",
        "**What it was trained on.**",
        "",
        f"- grammar: `{run.get('grammar_source') or 'the init checkpoint grammar'}`, "
        f"sha256 `{config.get('grammar_sha256')}`"
        + (f", with {len(motifs)} motifs (tree.motif_share {config['grammar']['tree'].get('motif_share', 0)})"
           if motifs else ""),
        f"- init checkpoint: `{run.get('init') or 'none (trained from scratch)'}`",
        f"- data: {'shards in `' + run['data'] + '`' if run.get('data') else 'systems generated on the fly'}, "
        f"seed {this.get('seed')}, corrupted afresh for every sample",
        f"- this run: {this.get('steps', 0):,} steps, {this.get('samples', 0):,} samples, "
        f"{this.get('minutes', 0):.1f} minutes on {this.get('device')} ({this.get('hardware')})",
        f"- in all (every run since the first weights): {prov.get('steps', 0):,} steps, "
        f"{prov.get('samples_seen', 0):,} samples, {prov.get('gpu_minutes', 0):.1f} GPU minutes, "
        f"{prov.get('cpu_minutes', 0):.1f} CPU minutes, {len(runs)} run(s)",
        f"- code: commit `{prov.get('git_commit', 'unknown')}`",
        "",
        "```bash",
        run.get("command", "odeformer train ..."),
        "```",
        "",
        "**Validation** (fixed generated systems of its grammar, reserved seed "
        f"{prov.get('validation_seed', '')}): "
        + (f"loss {val['val_loss']:.3f}, token accuracy {val['val_token_acc']:.3f}, greedy decoding without "
           f"refitting reaches R² > 0.9 on {val['val_r2_acc']:.0%} of them." if val else "not run (eval_systems=0)."),
        "",
        "**How good it is.** Not benchmarked by the trainer. Measure it with "
        f"`python bench/odebench.py --quick --ablation --checkpoint {run.get('out', '<this directory>')}` "
        "(transformer+refit rows: the model's own proposals) and add the table here.",
        "",
    ]
    return "\n".join(lines)


def load(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a checkpoint directory; a bare name (``tiny``) that is not a directory here
    names one of the packaged checkpoints."""
    path = resolve(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: no config.json (not a checkpoint directory)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    for key in ("architecture", "vocabulary", "grammar", "weights"):
        if key not in config:
            raise CheckpointError(f"{cfg_path}: missing {key!r}")
    state: dict = {}
    for fname, digest in config["weights"].items():
        f = path / fname
        if not f.is_file():
            raise CheckpointError(f"{path}: weight file {fname} listed in config.json is missing")
        actual = sha256_file(f)
        if actual != digest:
            raise CheckpointError(f"{f}: sha256 {actual[:12]}... does not match config.json ({digest[:12]}...): "
                                  "the file is corrupted or belongs to another checkpoint")
        state.update(load_file(str(f)))
    try:
        grammar = Grammar.from_dict(config["grammar"], f"{path}/config.json")
        arch = ModelConfig(**config["architecture"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: bad architecture or grammar ({e})") from None
    vocab = Vocabulary(tuple(config["vocabulary"]))
    if arch.vocab_size != len(vocab):
        raise CheckpointError(f"{cfg_path}: vocab_size {arch.vocab_size} but {len(vocab)} tokens listed")
    model = ODEFormer(arch)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the architecture "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, t in state.items():
        if t.shape != expected[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(t.shape)}, the config says {tuple(expected[k].shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.to(device).eval()
    return Checkpoint(model, vocab, grammar, config, path)


def default_path() -> Path:
    """The default checkpoint: ``$ODEFORMER_CHECKPOINT``, else the packaged ``checkpoints/default``."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    return packaged_dir() / "default"


def resolve(path: str | Path) -> Path:
    """``path`` itself, or for a bare name that is not a directory here, the packaged checkpoint of
    that name when there is one."""
    path = Path(path)
    if not path.exists() and len(path.parts) == 1 and (packaged_dir() / path).is_dir():
        return packaged_dir() / path
    return path


def packaged_dir() -> Path:
    """Where the checkpoints shipped with the package are (``default``, ``tiny``)."""
    import checkpoints

    return Path(checkpoints.__file__).resolve().parent


def _unwrap(model):
    return model.module if hasattr(model, "module") else model
