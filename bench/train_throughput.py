"""Trainer throughput: samples/s with the generator feeding it vs the model alone on the same shapes.

    python bench/train_throughput.py --preset tiny --seconds 20 --workers 1     # CPU here
    python bench/train_throughput.py --preset base --seconds 25 --workers 15    # the GPU machine

"Model alone" repeats real batches already in memory (same shapes, no data work); "with generator"
is the training loop fed live by ``--workers`` generator processes. Their ratio says whether data is
the bottleneck (target on the GPU: >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_gen.grammar import default_grammar  # noqa: E402
from odeformer.samples import _batches_job, batch_to, stream_batches  # noqa: E402
from odeformer.tokens import Vocabulary  # noqa: E402
from odeformer.train import build_model, load_config, train_step  # noqa: E402


def _cpu_max() -> str:
    """The container's CPU quota, if any: a GPU machine with 16 visible cores may be allowed fewer."""
    try:
        return Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--derivatives", action="store_true", help="inputs carry dx/dt features (input_derivatives)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    args = p.parse_args()
    cfg = load_config(args.preset, [])
    if args.batch_size:
        cfg["batch_size"] = args.batch_size
    cfg["input_derivatives"] = cfg["input_derivatives"] or args.derivatives
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda"
    grammar = default_grammar()
    vocab = Vocabulary.for_grammar(grammar)
    model = build_model(cfg, grammar, vocab).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = stream_batches(grammar, vocab, 12345, args.workers, cfg["samples_per_system"], model.config.max_out_len,
                          cfg["batch_size"], pin_memory=bf16, derivatives=model.config.input_derivatives)

    def run(next_batch, seconds: float) -> float:
        warm = time.perf_counter()
        while time.perf_counter() - warm < min(5.0, seconds / 4):  # workers started, kernels chosen
            train_step(model, opt, next_batch(), 1.0, bf16)
        if device.type == "cuda":
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            b = next_batch()
            loss = train_step(model, opt, b, 1.0, bf16)[0]
            n += len(b["tokens"])
        loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start)

    def live():
        return batch_to(next(data), device)

    def generator_alone(seconds: float) -> float:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            n += len(next(data)["tokens"])
        return n / (time.perf_counter() - start)

    def one_process(seconds: float) -> float:
        """The generator's own rate in this process: what one worker can give at best."""
        job = (grammar.to_json(), 12345, 10**6, list(vocab.tokens), cfg["samples_per_system"],
               model.config.max_out_len, cfg["batch_size"], model.config.input_derivatives)
        _batches_job(job)  # compiled (or loaded from numba's cache)
        n, start, i = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            n += sum(len(b["tokens"]) for b in _batches_job(job[:2] + (10**6 + i,) + job[3:]))
            i += 1
        return n / (time.perf_counter() - start)

    per_process = one_process(min(5.0, args.seconds / 4))
    gen_only = generator_alone(min(5.0, args.seconds / 4))  # also waits for the workers to start
    gen_only = generator_alone(args.seconds / 2)
    with_gen = run(live, args.seconds)
    cached = [live() for _ in range(8)]
    counter = iter(range(10**12))

    def replay():
        return cached[next(counter) % len(cached)]

    alone = run(replay, args.seconds)
    # the same, cycling through as many distinct live shapes as a real run meets (per-shape costs show here)
    cached = [live() for _ in range(48)]
    alone_shapes = run(replay, args.seconds)
    result = {"preset": args.preset, "input_derivatives": model.config.input_derivatives,
              "device": torch.cuda.get_device_name() if bf16 else "cpu",
              "workers": args.workers, "batch_size": cfg["batch_size"], "params": model.n_params(),
              "model_alone_samples_per_s": round(alone, 1),
              "model_alone_48_shapes_samples_per_s": round(alone_shapes, 1),
              "distinct_shapes_in_48": len({tuple(b["points"].shape) + tuple(b["tokens"].shape) for b in cached}),
              "with_generator_samples_per_s": round(with_gen, 1),
              "generator_alone_samples_per_s": round(gen_only, 1),
              "one_process_generator_samples_per_s": round(per_process, 1), "kernel": platform.release(),
              "cpu_count": os.cpu_count(),
              "cpu_affinity": len(os.sched_getaffinity(0)), "cgroup_cpu_max": _cpu_max(),
              "ratio": round(with_gen / alone, 3)}
    print(json.dumps(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
