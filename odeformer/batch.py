"""Fitting many systems (``odeformer fit``): results as DESIGN.md 3.2 objects, written atomically.

A run with an output file streams: the input files are scanned once (each read, parsed and dropped, so
that an unreadable file stops the run before anything is fitted), then read again one at a time while
the systems are fitted, locally (``--workers``) or on Ray (``odeformer.distributed``). Each result is
appended to a journal beside the output as soon as it is known, and the output itself is written from
the journal at the end, in input order, through a temporary file and an atomic rename; then the journal
is removed. ``--resume`` keeps the journal's results of an interrupted run and fits only the rest
(docs/ray.md, "Resuming").
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from odeformer.csv_io import CSVFileError, SystemData, parse_csv_text

_WORKER_REGRESSOR = None
#: the version of the journal's format (its first line)
JOURNAL_FORMAT = 1


class InputFileError(Exception):
    """An input file cannot be read or is not a trajectory CSV (exit code 2: nothing is written)."""


class JournalError(Exception):
    """The journal beside the output cannot be used (exit code 2)."""


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
    out = {"system": data.system, "variables": data.variables,
           "candidates": [c.to_dict() for c in reg.equations_], "low_confidence": bool(reg.low_confidence_),
           # rivals within the noise margin that predict other futures (docs/ambiguity.md); ranks from 1
           "ambiguous": bool(reg.ambiguous_), "rivals": [r + 1 for r in reg.rivals_]}
    if getattr(reg, "experiment_", None) is not None:
        out["experiment"] = reg.experiment_.to_dict(reg.variables_)
    out["elapsed_s"] = round(time.monotonic() - start, 3)
    return out


def fit_one(reg, data: SystemData) -> dict:
    """``result_for``, with an unexpected failure reported for this system instead of ending the batch."""
    try:
        return result_for(reg, data)
    except Exception as e:  # noqa: BLE001 - one system's failure must not end a batch of thousands
        return {"system": data.system, "variables": data.variables,
                "error": f"fit failed: {type(e).__name__}: {e}", "candidates": []}


def _init_worker(options: dict) -> None:
    global _WORKER_REGRESSOR
    import torch

    torch.set_num_threads(1)
    from odeformer.regressor import ODERegressor

    _WORKER_REGRESSOR = ODERegressor(**options)


def _fit_in_worker(data: SystemData) -> dict:
    return fit_one(_WORKER_REGRESSOR, data)


# --- input files, streamed ---------------------------------------------------------------------------

@dataclass
class InputFile:
    """One input file as scanned: enough to name its systems without holding its data."""

    arg: str  # as given on the command line
    index: int  # its position among the inputs
    sha256: str  # of its text: a resumed run reuses results only for unchanged files
    systems: list[str] = field(default_factory=list)
    variables: set[str] = field(default_factory=set)  # of all its systems (checks of per-variable options)


def _parse(arg: str) -> tuple[str, list[SystemData]]:
    path = Path(arg)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"{arg}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        systems = parse_csv_text(text, default_system=path.stem)
    except CSVFileError as e:
        raise InputFileError(f"{arg}: {e}") from None
    return hashlib.sha256(text.encode()).hexdigest(), systems


def scan_inputs(args: Iterable[str]) -> list[InputFile]:
    """Read and parse every file once, keeping only its systems' ids: an unreadable file is found
    before anything is fitted, and the driver never holds more than one file's data."""
    files = []
    for i, arg in enumerate(args):
        digest, systems = _parse(arg)
        files.append(InputFile(arg, i, digest, [s.system for s in systems],
                               {v for s in systems for v in (s.variables or [])}))
    return files


def system_key(f: InputFile, system: str) -> str:
    """A system's identity in the journal: input position, file content and system id."""
    return f"{f.index}:{f.sha256[:16]}:{system}"


def iter_systems(files: list[InputFile], skip: Iterable[str] = ()) -> Iterator[tuple[str, SystemData]]:
    """``(key, system)`` in input order, parsing one file at a time; systems in ``skip`` are left out."""
    skip = set(skip)
    for f in files:
        digest, systems = _parse(f.arg)
        if digest != f.sha256:
            raise InputFileError(f"{f.arg}: changed while the run was going on")
        for s in systems:
            key = system_key(f, s.system)
            if key not in skip:
                yield key, s


# --- fitting -----------------------------------------------------------------------------------------

def fit_stream(items: Iterable[tuple[str, SystemData]], options: dict, on_result: Callable[[str, dict], None],
               workers: int = 1) -> None:
    """Fit ``(key, system)`` items and call ``on_result(key, result)`` as each completes (in completion
    order). ``workers`` processes each load the model once; at most two systems per worker are read
    ahead, so the input is consumed as fast as it is fitted."""
    if workers <= 1:
        _init_worker(options)
        for key, data in items:
            on_result(key, _fit_in_worker(data))
        return
    done: queue.SimpleQueue = queue.SimpleQueue()
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(options,)) as pool:
        it, in_flight, exhausted = iter(items), 0, False
        while True:
            while not exhausted and in_flight < 2 * workers:
                try:
                    key, data = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pool.apply_async(_fit_in_worker, (data,), callback=lambda r, k=key: done.put((k, r, None)),
                                 error_callback=lambda e, k=key: done.put((k, None, e)))
                in_flight += 1
            if not in_flight:
                break
            key, result, error = done.get()
            in_flight -= 1
            if error is not None:
                raise error
            on_result(key, result)


def fit_systems(systems: list[SystemData], options: dict, workers: int = 1, progress: bool = True) -> list[dict]:
    """Results in input order; ``workers`` processes each load the model once."""
    results: dict[str, dict] = {}
    with tqdm(total=len(systems), unit="system", desc="fit", disable=not progress) as bar:
        def keep(key: str, result: dict) -> None:
            results[key] = result
            bar.update(1)
        fit_stream(((str(i), s) for i, s in enumerate(systems)), options, keep, workers=workers)
    return [results[str(i)] for i in range(len(systems))]


# --- results: formats, the journal, the atomic output --------------------------------------------------

CSV_HEADER = ["system", "rank", "variable", "rhs", "r2", "complexity", "error"]


def _csv_result_rows(r: dict) -> Iterator[list]:
    if r.get("error"):
        yield [r["system"], "", "", "", "", "", r["error"]]
        return
    for rank, c in enumerate(r["candidates"], start=1):
        for var, rhs in c["rhs"].items():
            yield [r["system"], rank, var, rhs, repr(c["r2"]), c["complexity"], ""]


def _write(results: Iterable[dict], fh, fmt: str) -> None:
    if fmt == "jsonl":
        for r in results:
            fh.write(json.dumps(r) + "\n")
        return
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for r in results:
        w.writerows(_csv_result_rows(r))


def format_results(results: Iterable[dict], fmt: str) -> str:
    buf = io.StringIO()
    _write(results, buf, fmt)
    return buf.getvalue()


def write_results(results: Iterable[dict], path: str | Path) -> None:
    """Write ``.jsonl`` or ``.csv`` via a temporary file and an atomic rename."""
    path = Path(path)
    fmt = "jsonl" if path.suffix == ".jsonl" else "csv"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            _write(results, fh, fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def journal_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".partial")


class Journal:
    """Results appended as they complete, one JSON line each, in ``OUT.partial`` beside the output.

    Line 1 is a header (``{"journal": 1, "identity": {...}}``: the options and model of the run); every
    further line is ``{"key": ..., "result": {...}}``, written and flushed (and fsynced) as the system
    finishes, so a killed run loses at most the systems being fitted. The file is locked while a run
    uses it. With ``resume``, lines of systems of this run whose file is unchanged are kept (a torn last
    line is cut off) and only the other systems are fitted; a journal made with other options is
    refused. Without ``resume`` an old journal is emptied. ``finish`` writes the output from the journal,
    in input order, atomically, and removes the journal.
    """

    def __init__(self, output: str | Path, identity: dict, keys: Iterable[str], resume: bool):
        self.output = Path(output)
        self.path = journal_path(output)
        self.offsets: dict[str, int] = {}
        self.failed: set[str] = set()
        self.discarded = 0  # results of an earlier run that a fresh run threw away
        self._header = {"journal": JOURNAL_FORMAT, "identity": json.loads(json.dumps(identity))}
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - held open (and locked) for the whole run
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise JournalError(f"{self.path}: another odeformer fit is writing {self.output}") from None
        try:
            self._fh.seek(0)
            old = self._fh.read(1) != b""
            if resume and old:
                self._load(set(keys))
            else:
                if old:
                    self.discarded = max(0, sum(1 for _ in self._lines()) - 1)
                self._fh.truncate(0)
                self._append(self._header)
        except BaseException:
            self._fh.close()
            raise

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        self._fh.seek(0)
        pos = 0
        for line in self._fh:
            yield pos, line
            pos += len(line)

    def _load(self, keys: set[str]) -> None:
        end = 0
        for pos, line in self._lines():
            try:
                entry = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                entry = None
            if pos == 0:
                if not isinstance(entry, dict) or entry.get("journal") != JOURNAL_FORMAT:
                    raise JournalError(f"{self.path}: not a journal of this version of odeformer fit; "
                                       "run without --resume to start afresh")
                if entry.get("identity") != self._header["identity"]:
                    raise JournalError(f"{self.path}: the interrupted run used other options or another model "
                                       f"({_differences(entry.get('identity'), self._header['identity'])}); "
                                       "resume with the same options, or run without --resume to start afresh")
            elif not isinstance(entry, dict) or "key" not in entry or "result" not in entry:
                break  # a torn last line (the run was killed while writing it): cut off below
            elif entry["key"] in keys:
                self.offsets[entry["key"]] = pos
                if entry["result"].get("error"):
                    self.failed.add(entry["key"])
                else:
                    self.failed.discard(entry["key"])
            end = pos + len(line)
        self._fh.truncate(end)

    def _append(self, obj: dict) -> int:
        self._fh.seek(0, os.SEEK_END)
        pos = self._fh.tell()
        self._fh.write(json.dumps(obj).encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return pos

    @property
    def done(self) -> set[str]:
        return set(self.offsets)

    def add(self, key: str, result: dict) -> None:
        self.offsets[key] = self._append({"key": key, "result": result})
        if result.get("error"):
            self.failed.add(key)

    def result(self, key: str) -> dict:
        self._fh.seek(self.offsets[key])
        return json.loads(self._fh.readline())["result"]

    def finish(self, order: list[str]) -> None:
        """Write the output in input order (atomically), then remove the journal; its results stay
        readable through ``result`` until ``close``."""
        write_results((self.result(k) for k in order), self.output)
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._fh.close()


def _differences(old, new) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "unreadable header"
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in diff) or "?"


class _Results(Sequence):
    """The results of a run in input order, read from the journal (or memory) when asked for."""

    def __init__(self, order: list[str], get: Callable[[str], dict]):
        self._order, self._get = order, get

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._get(k) for k in self._order[i]]
        return self._get(self._order[i])


@dataclass
class Run:
    results: Sequence[dict]  # in input order
    failed: int
    resumed: int  # systems taken from an interrupted run's journal


def run(files: list[InputFile], options: dict, output: str | Path | None = None, *, identity: dict | None = None,
        workers: int | None = None, use_ray: bool = False, ray_address: str | None = None, resume: bool = False,
        progress: bool = True, journal: list | None = None) -> Run:
    """Fit every system of the scanned ``files``, locally or on Ray; with ``output``, through the journal.
    ``journal``, when given a list, receives the open Journal (so a caller can report it on interrupt);
    the caller closes it after reading the results."""
    order = [system_key(f, s) for f in files for s in f.systems]
    memory: dict[str, dict] = {}
    failed: set[str] = set()
    sink = None
    if output is not None:
        sink = Journal(output, {**options, **(identity or {})}, order, resume)
        if journal is not None:
            journal.append(sink)
        if sink.discarded:
            print(f"note: starting afresh; the {sink.discarded} result(s) of an earlier run in {sink.path} "
                  "are discarded (--resume keeps them)", file=sys.stderr)
    skip = sink.done if sink else set()
    bar = tqdm(total=len(order), initial=len(skip), unit="system", desc="fit", disable=not progress)

    def on_result(key: str, result: dict) -> None:
        if sink is not None:
            sink.add(key, result)
        else:
            memory[key] = result
            if result.get("error"):
                failed.add(key)
        bar.update(1)

    items = iter_systems(files, skip=skip)
    try:
        if use_ray:
            from odeformer import distributed

            distributed.fit_stream(items, options, on_result, workers=workers, address=ray_address)
        else:
            fit_stream(items, options, on_result, workers=workers or 1)
    except BaseException:
        if sink is not None and not sink.offsets:  # nothing to resume: leave no journal behind
            sink.path.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if sink is None:
        return Run(_Results(order, memory.__getitem__), len(failed), 0)
    sink.finish(order)
    return Run(_Results(order, sink.result), len(sink.failed), len(skip))


def _g(v: float) -> str:
    return f"{v:.4g}"


def table(results: list[dict], digits: int = 4) -> str:
    """A readable summary: the best candidate of each system, constants to ``digits`` significant digits
    (the exact strings are in the ``-o`` output)."""
    from odeformer.display import round_rhs_string

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
        names = r.get("variables") or list(best["rhs"])
        lines += [f"    d{v}/dt = {round_rhs_string(rhs, names, digits)}" for v, rhs in best["rhs"].items()]
        if r.get("ambiguous"):
            for rank in r.get("rivals", []):
                c = r["candidates"][rank - 1]
                lines.append(f"    ambiguous: #{rank}, {c.get('score_gap', 0.0):.1f} nats behind, predicts otherwise:")
                lines += [f"      d{v}/dt = {round_rhs_string(rhs, names, digits)}" for v, rhs in c["rhs"].items()]
        if r.get("experiment"):
            e = r["experiment"]
            x0 = ", ".join(f"{v}={_g(e['x0'][v])}" for v in names)
            lines.append(f"    suggested experiment: start at {x0} (t={_g(e['t0'])}), record for {_g(e['duration'])} "
                         f"(separation {e['separation']:.1f} sigma)")
    return "\n".join(lines)
