"""Training examples: generated systems -> corrupted observations -> (features, tokens), and batches.

Workers run the whole per-sample path (generate a chunk, corrupt each system several times, encode
points, tokenize equations), so the trainer's process only collates tensors. Seeds: training streams
use ``(seed, chunk index)``; the validation set uses :data:`VALIDATION_SEED`, which no training run
may take (``odeformer train`` refuses it), so the two never share a system.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from data_gen.corrupt import corrupt
from data_gen.grammar import Grammar
from data_gen.pipeline import System, generate_chunk, single_threaded_children
from odeformer.encoding import encode_points
from odeformer.tokens import Vocabulary

VALIDATION_SEED = 2**31 - 1
IN_DISTRIBUTION_SEED = 2**31 - 2  # bench/make_indist.py; no training run may take it either
POINT_BUCKET, TOKEN_BUCKET = 32, 16  # training batches are padded to multiples of these


@dataclass
class Example:
    points: np.ndarray  # (n, n_features) float32
    traj: np.ndarray  # (n,) int64
    tokens: np.ndarray  # (length,) int64, <bos> ... <eos>


def examples_from_systems(systems: list[System], grammar: Grammar, vocab: Vocabulary, per_system: int,
                          rng: np.random.Generator, max_len: int, derivatives: bool = False) -> list[Example]:
    out = []
    for s in systems:
        try:
            tokens = np.array(vocab.encode(s.skeleton.components, s.constants), dtype=np.int64)
        except KeyError:  # an operator outside the vocabulary (a grammar changed under a checkpoint)
            continue
        if len(tokens) > max_len:
            continue
        for _ in range(per_system):
            sample = corrupt(s, grammar["corruption"], rng)
            points, traj = encode_points(sample.trajectories, vocab.max_dim, derivatives)
            out.append(Example(points, traj, tokens))
    return out


def _batches_job(args) -> list[dict]:
    """One chunk's examples, shuffled and collated into batches in the worker: the trainer's process
    then only receives a few large arrays per batch instead of unpickling and padding many small ones."""
    grammar_json, seed, index, vocab_tokens, per_system, max_len, batch_size, derivatives = args
    grammar = Grammar.from_dict(json.loads(grammar_json))
    chunk = generate_chunk(grammar, seed, index)
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 1]))
    examples = examples_from_systems(chunk.systems, grammar, Vocabulary(tuple(vocab_tokens)), per_system, rng,
                                     max_len, derivatives)
    order = rng.permutation(len(examples))  # interleave systems within the chunk
    out = []
    for i in range(0, len(order), batch_size):
        part = order[i: i + batch_size]
        if len(part) >= batch_size // 4:  # a small remainder is dropped rather than sent as a tiny batch
            out.append(collate_numpy([examples[j] for j in part], compact=True))
    return out


class ChunkBatches(torch.utils.data.IterableDataset):
    """Endless training batches: chunk indices ``start + step * (w + n * k)`` for ``k = 0, 1, ...`` in
    loader worker ``w`` of ``n`` (one worker: every chunk in turn). The loader interleaves its workers
    round-robin, so the stream is the same from run to run for a given number of workers."""

    def __init__(self, grammar: Grammar, vocab: Vocabulary, seed: int, per_system: int, max_len: int,
                 batch_size: int, start: int = 0, step: int = 1, derivatives: bool = False):
        super().__init__()
        self.job = (grammar.to_json(), seed, list(vocab.tokens), per_system, max_len, batch_size, derivatives)
        self.start, self.step = start, step

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        grammar_json, seed, *rest = self.job
        for k in itertools.count():
            index = self.start + self.step * (w + n * k)
            for batch in _batches_job((grammar_json, seed, index, *rest)):
                yield {key: torch.from_numpy(v) for key, v in batch.items()}


def _init_loader_worker(_: int) -> None:
    torch.set_num_threads(1)  # one core per generator process: there are as many processes as cores


def stream_batches(grammar: Grammar, vocab: Vocabulary, seed: int, workers: int, per_system: int, max_len: int,
                   batch_size: int, start: int = 0, step: int = 1,
                   pin_memory: bool = False, derivatives: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches made by ``workers`` processes (0: in this process), compact dtypes
    (see :func:`batch_to`). A ``torch.utils.data.DataLoader`` moves them: the workers' tensors travel
    through shared memory rather than being pickled through a pipe, and are pinned for the GPU."""
    data = ChunkBatches(grammar, vocab, seed, per_system, max_len, batch_size, start, step, derivatives)
    kwargs = dict(multiprocessing_context="spawn", worker_init_fn=_init_loader_worker, prefetch_factor=4) \
        if workers > 0 else {}
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                                         **kwargs)
    with single_threaded_children():
        it = iter(loader)
    return it


def batch_to(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """A batch on ``device`` in the dtypes the model takes (streams carry float16 points and small
    integers to halve what crosses between processes; bf16 autocast rounds the points harder anyway)."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["points"] = out["points"].float()
    out["traj"] = out["traj"].long()
    out["tokens"] = out["tokens"].long()
    return out


def shard_batches(data_dir: str, grammar: Grammar, vocab: Vocabulary, per_system: int, max_len: int,
                  batch_size: int, seed: int, derivatives: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches from the shards of ``odeformer generate``: every epoch reshuffles the systems
    and corrupts them afresh."""
    from pathlib import Path

    from data_gen.shards import read_shard

    root = Path(data_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    systems = [s for entry in manifest["shards"] for s in read_shard(root / entry["file"])]
    if not systems:
        raise ValueError(f"{data_dir}: no systems")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(systems))
        pending: list[Example] = []
        produced = 0
        for i in order:
            pending += examples_from_systems([systems[i]], grammar, vocab, per_system, rng, max_len, derivatives)
            while len(pending) >= batch_size:
                yield collate(pending[:batch_size])
                produced += 1
                pending = pending[batch_size:]
        if pending:
            yield collate(pending)
        elif not produced:
            raise ValueError(f"{data_dir}: no system fits the model's vocabulary and length limit")


def validation_set(grammar: Grammar, vocab: Vocabulary, n: int, max_len: int,
                   derivatives: bool = False) -> tuple[list[Example], list[System]]:
    """``n`` fixed examples (one per system, one system per skeleton) and their systems."""
    examples, systems = [], []
    rng = np.random.default_rng(VALIDATION_SEED)
    for index in itertools.count():
        chunk = generate_chunk(grammar, VALIDATION_SEED, index)
        seen = set()
        for s in chunk.systems:
            if s.skeleton.key in seen:
                continue
            seen.add(s.skeleton.key)
            ex = examples_from_systems([s], grammar, vocab, 1, rng, max_len, derivatives)
            if ex:
                examples.append(ex[0])
                systems.append(s)
            if len(examples) == n:
                return examples, systems
    raise AssertionError("unreachable")


def collate(examples: list[Example]) -> dict[str, torch.Tensor]:
    """Tensors padded to the longest point set and token sequence of the batch."""
    return {k: torch.from_numpy(v) for k, v in collate_numpy(examples).items()}


def collate_numpy(examples: list[Example], compact: bool = False) -> dict[str, np.ndarray]:
    """Pad to the longest point set and token sequence of the batch; ``compact``: float16 points and
    small integer types, for moving between processes (:func:`batch_to` restores the model's)."""
    b = len(examples)
    n = max(len(e.points) for e in examples)
    length = max(len(e.tokens) for e in examples)
    if compact:  # a few bucketed shapes rather than a new one per batch: CUDA attention plans are per shape
        n, length = -(-n // POINT_BUCKET) * POINT_BUCKET, -(-length // TOKEN_BUCKET) * TOKEN_BUCKET
    f = examples[0].points.shape[1]
    points = np.zeros((b, n, f), dtype=np.float16 if compact else np.float32)
    traj = np.zeros((b, n), dtype=np.int8 if compact else np.int64)
    mask = np.zeros((b, n), dtype=bool)
    tokens = np.zeros((b, length), dtype=np.int16 if compact else np.int64)  # 0 is <pad>
    for i, e in enumerate(examples):
        k = len(e.points)
        points[i, :k] = e.points
        traj[i, :k] = e.traj
        mask[i, :k] = True
        tokens[i, : len(e.tokens)] = e.tokens
    return {"points": points, "traj": traj, "mask": mask, "tokens": tokens}
