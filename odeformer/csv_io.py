"""Trajectory CSV files (DESIGN.md 3.1) -> systems to fit, with errors that name the row and column.

A header row; column ``t`` (required); every other column is a state variable. Optional reserved
columns: ``system`` (rows of different systems are fitted independently) and ``trajectory`` (several
trajectories of one system, fitted jointly). A system's variables are the columns that hold values in
its rows; a blank cell inside one of them is an error. Rows are numbered as in a spreadsheet: the
header is row 1.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from odeformer.validation import MAX_ABS_VALUE, InputError, check_variable_names, magnitude_error

RESERVED = {"t", "system", "trajectory"}


class CSVFileError(ValueError):
    """The file as a whole cannot be read as a trajectory CSV (exit code 2 in the CLI, 4xx in HTTP)."""


@dataclass
class SystemData:
    """One system of a CSV file: its trajectories, or the error that prevents fitting it."""

    system: str
    variables: list[str] = field(default_factory=list)
    trajectories: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    error: str | None = None
    #: how messages name each trajectory: ``trajectory 'a'`` by its ``trajectory`` value, else empty
    labels: list[str] = field(default_factory=list)


def parse_csv_text(text: str, default_system: str) -> list[SystemData]:
    """Systems in a CSV document, in order of first appearance."""
    if not text.strip():
        raise CSVFileError("empty file")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise CSVFileError(f"not a CSV file ({e})") from None
    header = [h.strip() for h in rows[0]]
    if "t" not in header:
        raise CSVFileError(f"no column 't' in the header ({', '.join(header[:8]) or 'empty'})")
    seen = set()
    for h in header:
        if not h:
            raise CSVFileError("a header cell is empty")
        if h in seen:
            raise CSVFileError(f"column {h!r} appears twice in the header")
        seen.add(h)
    variables = [h for h in header if h not in RESERVED]
    if not variables:
        raise CSVFileError("no variable columns besides t")
    col = {h: i for i, h in enumerate(header)}
    groups: dict[str, list[tuple[int, list[str]]]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines are not data
        if len(row) != len(header):
            raise CSVFileError(f"row {n}: {len(row)} cells, the header has {len(header)}")
        key = row[col["system"]].strip() if "system" in col else default_system
        groups.setdefault(key or default_system, []).append((n, row))
    if not groups:
        raise CSVFileError("no data rows")
    return [_system(name, rows_, header, col, variables) for name, rows_ in groups.items()]


def _system(name: str, rows: list, header: list[str], col: dict, all_vars: list[str]) -> SystemData:
    out = SystemData(name)
    used = [v for v in all_vars if any(r[col[v]].strip() for _, r in rows)]
    try:
        if not used:
            raise InputError("no variable column holds values")
        check_variable_names(used)
        out.variables = used
        trajs: dict[str, list] = {}
        for n, r in rows:
            tr = r[col["trajectory"]].strip() if "trajectory" in col else ""
            trajs.setdefault(tr, []).append((n, r))
        for tr, trows in trajs.items():
            ts, xs = [], []
            for n, r in trows:
                ts.append(_number(r[col["t"]], n, "t"))
                xs.append([_number(r[col[v]], n, v) for v in used])
            t = np.array(ts)
            order = np.argsort(t, kind="stable")
            dup = np.flatnonzero(np.diff(t[order]) == 0)
            if len(dup):
                rows_dup = sorted(trows[i][0] for i in order[dup[0]: dup[0] + 2])
                raise InputError(f"rows {rows_dup[0]} and {rows_dup[1]}: duplicate time t={t[order][dup[0]]}"
                                 + (f" in trajectory {tr!r}" if tr else ""))
            if len(t) < 5:
                raise InputError(f"{len(t)} points" + (f" in trajectory {tr!r}" if tr else "")
                                 + "; at least 5 are needed")
            out.trajectories.append((t[order], np.array(xs)[order]))
            out.labels.append(f"trajectory {tr!r}" if tr else "")
    except InputError as e:
        out.error = str(e)
    return out


def _number(cell: str, row: int, column: str) -> float:
    text = cell.strip()
    if not text:
        raise InputError(f"row {row}, column {column}: blank cell")
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"row {row}, column {column}: not a number ({text[:20]!r})") from None
    if not math.isfinite(v):
        raise InputError(f"row {row}, column {column}: {text} is not a finite number")
    if abs(v) > MAX_ABS_VALUE:
        raise InputError(f"row {row}, column {column}: {magnitude_error(v)}")
    return v
