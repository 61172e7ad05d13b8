"""Shard files: accepted systems in safetensors (no pickle), written atomically.

A shard holds ragged arrays concatenated with offset arrays (``*_ptr``); its expression vocabulary
(the distinct prefix tokens, ``|`` separating components) is stored in the safetensors metadata so a
shard reads back on its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from data_gen.expressions import TIME, from_prefix, to_prefix
from data_gen.pipeline import System
from data_gen.sampler import Skeleton

FORMAT = "odeformer-shard-1"
SEP = "|"


def _ptr(lengths: list[int]) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def write_shard(path: str | Path, systems: list[System]) -> None:
    """Write systems to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    token_lists = []
    for s in systems:
        toks: list[str] = []
        for i, c in enumerate(s.skeleton.components):
            if i:
                toks.append(SEP)
            toks.extend(to_prefix(c))
        token_lists.append(toks)
    vocab = sorted({t for toks in token_lists for t in toks})
    index = {t: i for i, t in enumerate(vocab)}
    empty = np.zeros(0)
    tensors = {
        "x": np.concatenate([s.x.ravel() for s in systems]).astype(np.float32) if systems else empty.astype(np.float32),
        "x_ptr": _ptr([s.x.size for s in systems]),
        "x0": np.concatenate([s.x0.ravel() for s in systems]) if systems else empty,
        "n_traj": np.array([s.x.shape[0] for s in systems], dtype=np.int64),
        "dim": np.array([s.skeleton.dim for s in systems], dtype=np.int64),
        "t_end": np.array([s.t_end for s in systems], dtype=np.float64),
        "tokens": np.array([index[t] for toks in token_lists for t in toks], dtype=np.int16),
        "token_ptr": _ptr([len(t) for t in token_lists]),
        "consts": np.concatenate([s.constants for s in systems]) if systems else empty,
        "const_ptr": _ptr([len(s.constants) for s in systems]),
    }
    grid = systems[0].x.shape[1] if systems else 0
    meta = {"format": FORMAT, "vocabulary": json.dumps(vocab), "grid_points": str(grid)}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_shard(path: str | Path) -> list[System]:
    """Systems stored in a shard, as written."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an odeformer shard (format {meta.get('format')!r})")
    vocab = json.loads(meta["vocabulary"])
    grid = int(meta["grid_points"])
    t = load_file(str(path))
    systems = []
    x0_pos = 0
    for i in range(len(t["dim"])):
        dim, n_traj = int(t["dim"][i]), int(t["n_traj"][i])
        toks = [vocab[j] for j in t["tokens"][t["token_ptr"][i]:t["token_ptr"][i + 1]]]
        comps, cur = [], []
        for tok in toks + [SEP]:
            if tok == SEP:
                comps.append(from_prefix(cur))
                cur = []
            else:
                cur.append(tok)
        skeleton = Skeleton(tuple(comps), TIME in toks)
        x = t["x"][t["x_ptr"][i]:t["x_ptr"][i + 1]].reshape(n_traj, grid, dim)
        x0 = t["x0"][x0_pos:x0_pos + n_traj * dim].reshape(n_traj, dim)
        x0_pos += n_traj * dim
        consts = t["consts"][t["const_ptr"][i]:t["const_ptr"][i + 1]]
        systems.append(System(skeleton, consts, float(t["t_end"][i]), x, x0))
    return systems
