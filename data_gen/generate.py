"""``odeformer generate``: write N accepted systems as shards plus a manifest."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_gen.grammar import Grammar
from data_gen.pipeline import System, stream_chunks
from data_gen.shards import write_shard


@dataclass
class GenerationReport:
    systems: int = 0
    trajectories: int = 0
    skeleton_draws: int = 0
    distinct_skeletons: int = 0
    rejections: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    shards: list = field(default_factory=list)

    def summary(self) -> str:
        traj = {k[5:]: v for k, v in self.rejections.items() if k.startswith("traj_")}
        n_traj = sum(traj.values()) or 1
        skel = {k: v for k, v in self.rejections.items() if not k.startswith(("traj_", "system_"))}
        lines = [
            f"{self.systems} systems ({self.distinct_skeletons} distinct skeletons, {self.trajectories} "
            f"trajectories) in {self.elapsed_s:.1f} s: {self.systems / max(self.elapsed_s, 1e-9):.0f} systems/s",
            f"skeleton draws {self.skeleton_draws}, rejected: "
            + ", ".join(f"{k} {v}" for k, v in sorted(skel.items())),
            "trajectories: " + ", ".join(f"{k} {v / n_traj:.1%}" for k, v in sorted(traj.items())),
        ]
        return "\n".join(lines)


def generate_to_dir(grammar: Grammar, n: int, out: str | Path, workers: int = 1, seed: int = 0,
                    shard_size: int = 10_000, progress: bool = True) -> GenerationReport:
    """Generate ``n`` systems into ``out`` (``shard_NNNNN.safetensors`` + ``manifest.json``).

    Skeletons are de-duplicated across the whole run: a skeleton's instances are kept only from the
    first chunk that drew it. The output depends on (grammar, seed, n), not on ``workers``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = GenerationReport()
    first_chunk: dict[str, int] = {}
    pending: list[System] = []
    start = time.perf_counter()
    bar = tqdm(total=n, unit="sys", desc="generate", disable=not progress)
    for index, chunk in enumerate(stream_chunks(grammar, seed, workers)):
        report.skeleton_draws += chunk.skeleton_draws
        report.rejections.update(chunk.rejections)
        for s in chunk.systems:
            if report.systems == n:
                break
            owner = first_chunk.setdefault(s.skeleton.key, index)
            if owner != index:
                report.rejections["duplicate_across_chunks"] += 1
                continue
            pending.append(s)
            report.systems += 1
            report.trajectories += s.x.shape[0]
            bar.update(1)
            if len(pending) == shard_size:
                _flush(out, pending, report)
        if report.systems == n:
            break
    if pending:
        _flush(out, pending, report)
    bar.close()
    report.elapsed_s = time.perf_counter() - start
    report.distinct_skeletons = len(first_chunk)
    manifest = {
        "format": "odeformer-dataset-1",
        "grammar": grammar.data,
        "grammar_source": grammar.source,
        "grammar_sha256": grammar.sha256(),
        "seed": seed,
        "systems": report.systems,
        "trajectories": report.trajectories,
        "skeleton_draws": report.skeleton_draws,
        "distinct_skeletons": report.distinct_skeletons,
        "rejections": dict(sorted(report.rejections.items())),
        "elapsed_s": round(report.elapsed_s, 3),
        "workers": workers,
        "shards": report.shards,
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")
    return report


def _flush(out: Path, pending: list[System], report: GenerationReport) -> None:
    name = f"shard_{len(report.shards):05d}.safetensors"
    write_shard(out / name, pending)
    report.shards.append({"file": name, "systems": len(pending)})
    pending.clear()
