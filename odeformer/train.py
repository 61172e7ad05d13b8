"""Training: ``odeformer train --preset tiny --out checkpoints/mine [--set key=value ...]``.

One screen of config (:data:`DEFAULTS`), presets in ``odeformer/presets/*.toml``, flags override. The
loop: stream examples from generator workers, AdamW with a warmup-stable-decay schedule (restarts
only need a new warmup; the weights saved just before the decay are kept as ``<out>-predecay``),
gradient clipping, bf16 autocast on CUDA, periodic validation, tqdm progress and a JSON-lines log.
Multi-GPU with ``torchrun --nproc_per_node N -m odeformer.train ...`` (data parallel). Imports only
what the GPU machine has: numpy, scipy, sympy, torch, safetensors, tqdm, numba.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from data_gen.grammar import Grammar, default_grammar
from odeformer import checkpoint as ckpt
from odeformer.encoding import n_features
from odeformer.model import ModelConfig, ODEFormer
from odeformer.samples import (
    IN_DISTRIBUTION_SEED,
    VALIDATION_SEED,
    batch_to,
    collate,
    shard_batches,
    stream_batches,
    validation_set,
)
from odeformer.tokens import Vocabulary

PRESETS = Path(__file__).resolve().parent / "presets"

DEFAULTS = dict(
    # model (ignored when --init gives a checkpoint: its architecture wins; add_input_derivatives widens it)
    d_model=128, n_heads=4, n_enc=3, n_dec=3, d_ff=512, dropout=0.0, max_out_len=192,
    input_derivatives=False, add_input_derivatives=False,
    # data
    grammar="", data="", seed=1, workers=1, samples_per_system=4, batch_size=32,
    # optimisation: warmup-stable-decay; the run ends at max_steps or max_time_s, whichever comes first
    lr=1e-3, min_lr_frac=0.05, weight_decay=0.01, warmup_steps=100, decay_frac=0.2, grad_clip=1.0,
    max_steps=1000, max_time_s=0.0,
    # run
    out="", init="", device="auto", dtype_save="float32", eval_interval=200, eval_systems=100,
    save_interval_s=120.0, log="", name="", hardware="",
)


def load_config(preset: str | None, overrides: list[str]) -> dict:
    cfg = dict(DEFAULTS)
    if preset:
        path = Path(preset) if preset.endswith(".toml") else PRESETS / f"{preset}.toml"
        if not path.is_file():
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(p.stem for p in PRESETS.glob('*.toml'))})")
        for k, v in tomllib.loads(path.read_text()).items():
            _set(cfg, k, v, f"{path.name}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        _set(cfg, k.strip(), _parse(v.strip(), cfg.get(k.strip())), "--set")
    return cfg


def _parse(text: str, current):
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(current, int):
        return int(float(text))
    if isinstance(current, float):
        return float(text)
    return text


def _set(cfg: dict, key: str, value, where: str) -> None:
    if key not in DEFAULTS:
        raise ValueError(f"{where}: unknown config key {key!r}")
    cfg[key] = value


def lr_at(cfg: dict, step: int, progress: float) -> float:
    """Warmup-stable-decay: linear warmup, flat, then linear decay over the last ``decay_frac``."""
    if step < cfg["warmup_steps"]:
        return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
    start = 1.0 - cfg["decay_frac"]
    if progress < start:
        return cfg["lr"]
    frac = min(1.0, (progress - start) / max(cfg["decay_frac"], 1e-9))
    return cfg["lr"] * (1.0 - (1.0 - cfg["min_lr_frac"]) * frac)


def masked_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of next-token prediction; also (correct, counted) tokens for accuracy."""
    tokens = batch["tokens"]
    logits = model(batch["points"], batch["traj"], batch["mask"], tokens[:, :-1])
    target = tokens[:, 1:]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=0)
    valid = target != 0
    correct = ((logits.argmax(-1) == target) & valid).sum()
    return loss, correct, valid.sum()


# cuDNN attention is left out: it builds a plan for every new input shape, and batches of generated
# systems come in many shapes (bucketed, see samples.POINT_BUCKET, but still several dozen)
_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def train_step(model, opt, batch: dict, grad_clip: float, bf16: bool):
    """One optimisation step; returns (loss, correct tokens, counted tokens, gradient norm). A step whose
    loss or gradient is not finite is skipped, so one bad batch cannot poison the weights."""
    device_type = batch["tokens"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16), sdpa_kernel(_SDPA_BACKENDS):
        loss, correct, count = masked_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if torch.isfinite(grad_norm):  # a NaN loss gives a NaN norm too
        opt.step()
    return loss, correct, count, grad_norm


def build_model(cfg: dict, grammar: Grammar, vocab: Vocabulary) -> ODEFormer:
    names = {f.name for f in fields(ModelConfig)}
    arch = {k: cfg[k] for k in names if k in cfg}
    return ODEFormer(ModelConfig(n_features=n_features(grammar.max_dim, cfg["input_derivatives"]),
                                 vocab_size=len(vocab), **arch))


@torch.no_grad()
def evaluate(model, vocab: Vocabulary, val_examples: list, val_systems: list, device, batch_size: int = 64) -> dict:
    """Validation loss, token accuracy, and the share of systems whose greedy decoding, integrated from
    the true initial condition, reaches R^2 > 0.9 on the clean trajectory (no constant refitting)."""
    from odeformer.decoding import greedy
    from odeformer.metrics import integrate_candidates, r2_score

    model.eval()
    losses, correct, count, hits = [], 0, 0, 0
    for i in range(0, len(val_examples), batch_size):
        chunk = val_examples[i: i + batch_size]
        systems = val_systems[i: i + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        loss, c, n = masked_loss(model, batch)
        losses.append(loss.item() * len(chunk))
        correct += c.item()
        count += n.item()
        dims = torch.tensor([s.skeleton.dim for s in systems])
        seqs = greedy(model, vocab, batch["points"], batch["traj"], batch["mask"], dims)
        decoded = []
        for seq in seqs:
            try:
                decoded.append(vocab.decode(seq))
            except ValueError:
                decoded.append(None)
        preds = integrate_candidates(decoded, [(s.t_end, s.x0[0], s.x.shape[1]) for s in systems])
        hits += sum(p is not None and r2_score(s.x[0], p) > 0.9 for p, s in zip(preds, systems))
    model.train()
    n = len(val_examples)
    return {"val_loss": sum(losses) / n, "val_token_acc": correct / max(count, 1), "val_r2_acc": hits / n}


def train(cfg: dict) -> Path:
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if cfg["device"] == "auto":
        cfg["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if ddp:
        torch.distributed.init_process_group(backend="nccl" if cfg["device"] == "cuda" else "gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if cfg["device"] == "cuda":
            cfg["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(cfg["device"])
    device = torch.device(cfg["device"])
    if cfg["seed"] in (VALIDATION_SEED, IN_DISTRIBUTION_SEED):
        raise ValueError(f"seed {cfg['seed']} is reserved for the validation and in-distribution benchmark sets")
    torch.manual_seed(cfg["seed"] * 1000 + rank)

    provenance = {"samples_seen": 0, "steps": 0, "gpu_minutes": 0.0, "cpu_minutes": 0.0, "runs": []}
    if cfg["init"]:
        init = ckpt.load(cfg["init"], device)
        model, vocab, grammar = init.model, init.vocab, init.grammar
        provenance.update({k: init.provenance.get(k, provenance[k]) for k in provenance})
        if cfg["grammar"]:
            from odeformer.finetune import extend_for_grammar

            grammar = Grammar.from_file(cfg["grammar"])
            model, vocab, added = extend_for_grammar(model, vocab, init.grammar, grammar)
            if added and rank == 0:
                print(f"vocabulary extended with {added}")
        if cfg["add_input_derivatives"] and not model.config.input_derivatives:
            from odeformer.finetune import add_derivative_inputs

            model = add_derivative_inputs(model, grammar.max_dim)
            if rank == 0:
                print("input layer widened for dx/dt features")
    else:
        grammar = Grammar.from_file(cfg["grammar"]) if cfg["grammar"] else default_grammar()
        vocab = Vocabulary.for_grammar(grammar)
        model = build_model(cfg, grammar, vocab)
    model.to(device).train()
    raw_model = model
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(raw_model.parameters(), lr=cfg["lr"], betas=(0.9, 0.98), weight_decay=cfg["weight_decay"])
    use_bf16 = device.type == "cuda"
    max_len = raw_model.config.max_out_len

    out = Path(cfg["out"] or "checkpoints/run")
    log = open(cfg["log"], "a") if cfg["log"] and rank == 0 else None
    derivs = raw_model.config.input_derivatives
    val = (validation_set(grammar, vocab, cfg["eval_systems"], max_len, derivs)
           if rank == 0 and cfg["eval_systems"] else None)
    if cfg["data"]:  # systems generated beforehand by `odeformer generate`, corrupted afresh every epoch
        data = shard_batches(cfg["data"], grammar, vocab, cfg["samples_per_system"], max_len, cfg["batch_size"],
                             seed=cfg["seed"] * 1000 + rank, derivatives=derivs)
    else:
        data = stream_batches(grammar, vocab, cfg["seed"], cfg["workers"], cfg["samples_per_system"], max_len,
                              cfg["batch_size"], start=rank, step=world, pin_memory=device.type == "cuda",
                              derivatives=derivs)

    start_steps = provenance["steps"]
    t0 = time.time()
    last_save = t0
    samples = 0
    predecay_saved = False
    run = {"seed": cfg["seed"], "device": str(device), "world": world, "hardware": cfg["hardware"] or _hardware(device),
           "grammar": grammar.source, "grammar_sha256": grammar.sha256(), "init": cfg["init"], "data": cfg["data"]}
    last_eval: dict = {}

    def save(path: Path, steps_done: int, status: str = "saved during the run") -> None:
        minutes = (time.time() - t0) / 60 * world
        prov = dict(provenance, samples_seen=provenance["samples_seen"] + samples * world,
                    steps=start_steps + steps_done,
                    gpu_minutes=provenance["gpu_minutes"] + (minutes if device.type == "cuda" else 0.0),
                    cpu_minutes=provenance["cpu_minutes"] + (0.0 if device.type == "cuda" else minutes),
                    runs=provenance["runs"] + [dict(run, steps=steps_done, samples=samples * world,
                                                    minutes=round(minutes, 2))],
                    git_commit=ckpt.git_commit(), validation_seed=VALIDATION_SEED)
        card = {"command": cfg.get("_command") or command_of(cfg), "init": cfg["init"], "data": cfg["data"],
                "grammar_source": grammar.source, "validation": dict(last_eval), "out": str(path),
                "status": f"{status}, after {steps_done:,} steps of this run"}
        ckpt.save(path, raw_model, vocab, grammar, prov, name=cfg["name"] or out.name,
                  dtype=getattr(torch, cfg["dtype_save"]), card=card)

    if rank == 0 and val and cfg["eval_interval"] and cfg["init"]:  # where a continued run starts from
        ev = evaluate(raw_model, vocab, *val, device)
        last_eval.update(ev)
        if log:
            log.write(json.dumps({"step": start_steps, **ev}) + "\n")
        tqdm.write(f"step {start_steps} (start): " + ", ".join(f"{k} {v:.4f}" for k, v in ev.items()))
    # with max_time_s the bar's total is the number of steps the time allows at the pace so far
    bar = tqdm(total=progress_total(cfg, 0, 0.0), desc="train", disable=rank != 0, unit="step")
    step = 0
    skipped = torch.zeros((), dtype=torch.long, device=device)
    while step < cfg["max_steps"]:
        elapsed = time.time() - t0
        progress = step / cfg["max_steps"]
        if cfg["max_time_s"] > 0:
            progress = max(progress, elapsed / cfg["max_time_s"])
        if progress >= 1.0:
            break
        if rank == 0 and not predecay_saved and progress >= 1.0 - cfg["decay_frac"] and step > 0:
            save(out.with_name(out.name + "-predecay"), step,
                 "pre-decay: the weights before the decay phase, where the next run continues")
            predecay_saved = True
        lr = lr_at(cfg, step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = batch_to(next(data), device)
        loss, correct, count, grad_norm = train_step(model, opt, batch, cfg["grad_clip"], use_bf16)
        skipped += ~torch.isfinite(grad_norm)
        step += 1
        samples += len(batch["tokens"])
        if cfg["max_time_s"] > 0 and (step % 5 == 0 or step < 5):
            total = progress_total(cfg, step, time.time() - t0)
            if total != bar.total:
                bar.total = total
                bar.refresh()
        bar.update(1)
        if rank == 0 and (step % 10 == 0 or step == 1):
            metrics = {"step": start_steps + step, "loss": round(loss.item(), 4), "lr": lr,
                       "grad_norm": round(float(grad_norm), 3), "token_acc": round(correct.item() / count.item(), 4),
                       "samples_per_s": round(samples * world / max(time.time() - t0, 1e-9), 1),
                       "elapsed_s": round(time.time() - t0, 1), "skipped_steps": int(skipped)}
            bar.set_postfix(loss=metrics["loss"], acc=metrics["token_acc"], sps=metrics["samples_per_s"])
            if log:
                log.write(json.dumps(metrics) + "\n")
                log.flush()
        if rank == 0 and val and cfg["eval_interval"] and step % cfg["eval_interval"] == 0:
            ev = evaluate(raw_model, vocab, *val, device)
            last_eval.update(ev)
            if log:
                log.write(json.dumps({"step": start_steps + step, **ev}) + "\n")
                log.flush()
            tqdm.write(f"step {start_steps + step}: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.items()))
        if rank == 0 and time.time() - last_save > cfg["save_interval_s"]:
            save(out, step)
            last_save = time.time()
    if bar.total != step and not bar.disable:  # the run ended at its time limit: the bar ends full
        bar.total = step
        bar.refresh()
    bar.close()
    if rank == 0:
        final = evaluate(raw_model, vocab, *val, device) if val else {}
        last_eval.update(final)
        save(out, step, "final")
        summary = {"final": True, "steps": start_steps + step, "samples_per_s": round(samples * world /
                   max(time.time() - t0, 1e-9), 1), "minutes": round((time.time() - t0) / 60, 2), **final}
        if log:
            log.write(json.dumps(summary) + "\n")
            log.close()
        print("training done: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    if ddp:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out


def progress_total(cfg: dict, step: int, elapsed: float) -> int | None:
    """The progress bar's total: ``max_steps``, or with ``max_time_s`` the steps the time allows at the
    pace so far (never more than ``max_steps``; None, no ETA, until a step has been timed)."""
    if cfg["max_time_s"] <= 0:
        return cfg["max_steps"]
    if step == 0 or elapsed <= 0:
        return None
    return max(step, min(cfg["max_steps"], int(round(step * cfg["max_time_s"] / elapsed))))


def command_of(cfg: dict) -> str:
    """A command line that reproduces ``cfg`` (every key that differs from :data:`DEFAULTS`)."""
    parts = ["odeformer train", "--preset", "''"]
    for key in ("out", "init", "grammar", "data"):
        if cfg.get(key):
            parts += [f"--{key}", str(cfg[key])]
    parts += [f"--set {k}={cfg[k]}" for k in DEFAULTS
              if k not in ("out", "init", "grammar", "data") and cfg.get(k) != DEFAULTS[k]]
    return " ".join(parts)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{os.cpu_count()}"


def config_from_args(args) -> dict:
    """The run's config: preset, then ``--set`` overrides, then the path flags."""
    import shlex

    cfg = load_config(args.preset, args.set)
    for key in ("out", "init", "grammar", "data"):
        if getattr(args, key, None):
            cfg[key] = getattr(args, key)
    words = ["odeformer", "train", "--preset", args.preset]
    for key in ("out", "init", "grammar", "data"):
        if getattr(args, key, None):
            words += [f"--{key}", str(getattr(args, key))]
    for item in args.set:
        words += ["--set", item]
    cfg["_command"] = shlex.join(words)  # for the model card
    return cfg


def main(argv: list[str] | None = None) -> int:
    """``python -m odeformer.train ARGS`` is ``odeformer train ARGS``."""
    import sys

    from odeformer.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
