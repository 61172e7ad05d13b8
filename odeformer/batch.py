"""Fitting many systems (``odeformer fit``): results as DESIGN.md 3.2 objects, written atomically."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from odeformer.csv_io import SystemData

_WORKER_REGRESSOR = None


def result_for(reg, data: SystemData) -> dict:
    """The 3.2 result object of one system (fitted with ``reg``) or its error."""
    if data.error:
        return {"system": data.system, "variables": data.variables, "error": data.error, "candidates": []}
    start = time.monotonic()
    from odeformer.validation import InputError

    try:
        reg.fit([t for t, _ in data.trajectories], [x for _, x in data.trajectories], variables=data.variables)
    except InputError as e:
        return {"system": data.system, "variables": data.variables, "error": str(e), "candidates": []}
    return {"system": data.system, "variables": data.variables,
            "candidates": [c.to_dict() for c in reg.equations_], "low_confidence": bool(reg.low_confidence_),
            "elapsed_s": round(time.monotonic() - start, 3)}


def _init_worker(options: dict) -> None:
    global _WORKER_REGRESSOR
    import torch

    torch.set_num_threads(1)
    from odeformer.regressor import ODERegressor

    _WORKER_REGRESSOR = ODERegressor(**options)


def _fit_in_worker(data: SystemData) -> dict:
    return result_for(_WORKER_REGRESSOR, data)


def fit_systems(systems: list[SystemData], options: dict, workers: int = 1, progress: bool = True) -> list[dict]:
    """Results in input order; ``workers`` processes each load the model once."""
    bar = tqdm(total=len(systems), unit="system", desc="fit", disable=not progress)
    results: list[dict] = []
    if workers <= 1:
        _init_worker(options)
        for s in systems:
            results.append(_fit_in_worker(s))
            bar.update(1)
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(options,)) as pool:
            for r in pool.imap(_fit_in_worker, systems):
                results.append(r)
                bar.update(1)
    bar.close()
    return results


def _csv_rows(results: list[dict]) -> Iterator[list]:
    yield ["system", "rank", "variable", "rhs", "r2", "complexity", "error"]
    for r in results:
        if r.get("error"):
            yield [r["system"], "", "", "", "", "", r["error"]]
            continue
        for rank, c in enumerate(r["candidates"], start=1):
            for var, rhs in c["rhs"].items():
                yield [r["system"], rank, var, rhs, repr(c["r2"]), c["complexity"], ""]


def format_results(results: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in results)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(_csv_rows(results))
    return buf.getvalue()


def write_results(results: list[dict], path: str | Path) -> None:
    """Write ``.jsonl`` or ``.csv`` via a temporary file and an atomic rename."""
    path = Path(path)
    fmt = "jsonl" if path.suffix == ".jsonl" else "csv"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(format_results(results, fmt))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def table(results: list[dict]) -> str:
    """A readable summary: the best candidate of each system."""
    lines = []
    for r in results:
        if r.get("error"):
            lines.append(f"{r['system']}: ERROR {r['error']}")
            continue
        if not r["candidates"]:
            lines.append(f"{r['system']}: no candidate could be integrated")
            continue
        best = r["candidates"][0]
        flag = "  (low confidence)" if r["low_confidence"] else ""
        lines.append(f"{r['system']}: r2={best['r2']:.4f} complexity={best['complexity']}{flag}")
        lines += [f"    d{v}/dt = {rhs}" for v, rhs in best["rhs"].items()]
    return "\n".join(lines)
