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
from data_gen.pipeline import System, generate_chunk, ordered_map
from odeformer.encoding import encode_points
from odeformer.grammar import Grammar
from odeformer.tokens import Vocabulary

VALIDATION_SEED = 2**31 - 1


@dataclass
class Example:
    points: np.ndarray  # (n, n_features) float32
    traj: np.ndarray  # (n,) int64
    tokens: np.ndarray  # (length,) int64, <bos> ... <eos>


def examples_from_systems(systems: list[System], grammar: Grammar, vocab: Vocabulary, per_system: int,
                          rng: np.random.Generator, max_len: int) -> list[Example]:
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
            points, traj = encode_points(sample.trajectories, vocab.max_dim)
            out.append(Example(points, traj, tokens))
    return out


def _batches_job(args) -> list[dict]:
    """One chunk's examples, shuffled and collated into batches in the worker: the trainer's process
    then only receives a few large arrays per batch instead of unpickling and padding many small ones."""
    grammar_json, seed, index, vocab_tokens, per_system, max_len, batch_size = args
    grammar = Grammar.from_dict(json.loads(grammar_json))
    chunk = generate_chunk(grammar, seed, index)
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 1]))
    examples = examples_from_systems(chunk.systems, grammar, Vocabulary(tuple(vocab_tokens)), per_system, rng,
                                     max_len)
    order = rng.permutation(len(examples))  # interleave systems within the chunk
    out = []
    for i in range(0, len(order), batch_size):
        part = order[i: i + batch_size]
        if len(part) >= batch_size // 4:  # a small remainder is dropped rather than sent as a tiny batch
            out.append(collate_numpy([examples[j] for j in part]))
    return out


def stream_batches(grammar: Grammar, vocab: Vocabulary, seed: int, workers: int, per_system: int, max_len: int,
                   batch_size: int, start: int = 0, step: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches from chunks ``start, start+step, ...`` made by ``workers`` processes
    (0: in this process)."""
    jobs = ((grammar.to_json(), seed, i, list(vocab.tokens), per_system, max_len, batch_size)
            for i in itertools.count(start, step))
    for group in ordered_map(_batches_job, jobs, workers, inline_single=False):
        for batch in group:
            yield {k: torch.from_numpy(v) for k, v in batch.items()}


def shard_batches(data_dir: str, grammar: Grammar, vocab: Vocabulary, per_system: int, max_len: int,
                  batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
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
            pending += examples_from_systems([systems[i]], grammar, vocab, per_system, rng, max_len)
            while len(pending) >= batch_size:
                yield collate(pending[:batch_size])
                produced += 1
                pending = pending[batch_size:]
        if pending:
            yield collate(pending)
        elif not produced:
            raise ValueError(f"{data_dir}: no system fits the model's vocabulary and length limit")


def validation_set(grammar: Grammar, vocab: Vocabulary, n: int, max_len: int) -> tuple[list[Example], list[System]]:
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
            ex = examples_from_systems([s], grammar, vocab, 1, rng, max_len)
            if ex:
                examples.append(ex[0])
                systems.append(s)
            if len(examples) == n:
                return examples, systems
    raise AssertionError("unreachable")


def collate(examples: list[Example]) -> dict[str, torch.Tensor]:
    """Tensors padded to the longest point set and token sequence of the batch."""
    return {k: torch.from_numpy(v) for k, v in collate_numpy(examples).items()}


def collate_numpy(examples: list[Example]) -> dict[str, np.ndarray]:
    """Pad to the longest point set and token sequence of the batch."""
    b = len(examples)
    n = max(len(e.points) for e in examples)
    length = max(len(e.tokens) for e in examples)
    f = examples[0].points.shape[1]
    points = np.zeros((b, n, f), dtype=np.float32)
    traj = np.zeros((b, n), dtype=np.int64)
    mask = np.zeros((b, n), dtype=bool)
    tokens = np.zeros((b, length), dtype=np.int64)  # 0 is <pad>
    for i, e in enumerate(examples):
        k = len(e.points)
        points[i, :k] = e.points
        traj[i, :k] = e.traj
        mask[i, :k] = True
        tokens[i, : len(e.tokens)] = e.tokens
    return {"points": points, "traj": traj, "mask": mask, "tokens": tokens}
