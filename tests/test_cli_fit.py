"""`odeformer fit` on real CSV files (DESIGN.md 3.1, 3.2), with the pinned test checkpoint."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from odeformer.csv_io import CSVFileError, parse_csv_text

ROOT = Path(__file__).resolve().parent.parent
CKPT = str(ROOT / "tests" / "data" / "test_checkpoint")
T = np.linspace(0, 8, 30)


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _fit(*args, timeout=300):
    cmd = [sys.executable, "-m", "odeformer.cli", "fit", "--checkpoint", CKPT, "--beam-size", "3",
           "--time-budget", "3", "--quiet", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture
def files(tmp_path):
    decay = _write(tmp_path / "decay.csv", ["t", "N"], [[t, 3 * np.exp(-0.5 * t)] for t in T[::-1]])
    rows = [["osc", t, np.cos(t), -np.sin(t)] for t in T] + [["grow", t, np.exp(0.1 * t), ""] for t in T]
    rows += [["broken", t, 1.0 if i != 3 else "abc", ""] for i, t in enumerate(T)]
    multi = _write(tmp_path / "multi.csv", ["system", "t", "x", "y"], rows)
    return decay, multi


def test_jsonl_and_csv_outputs_parse_and_a_bad_system_gives_exit_1(tmp_path, files):
    decay, multi = files
    out = tmp_path / "res.jsonl"
    proc = _fit(decay, multi, "-o", out)
    assert proc.returncode == 1, proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["system"] for r in results] == ["decay", "osc", "grow", "broken"]
    assert results[3]["error"] == "row 65, column x: not a number ('abc')" and results[3]["candidates"] == []
    assert results[2]["variables"] == ["x"]  # grow's y column is blank: not one of its variables
    for r in results[:3]:
        assert r["candidates"] and isinstance(r["elapsed_s"], float) and "low_confidence" in r
        names = r["variables"]
        for c in r["candidates"]:
            assert np.isfinite(c["r2"])
            assert {"rhs", "r2", "complexity", "score", "pareto"} <= set(c) <= {"rhs", "latex", "r2", "complexity",
                                                                                 "score", "pareto"}
            for rhs in c["rhs"].values():
                e = sp.parse_expr(rhs, local_dict={v: sp.Symbol(v) for v in names + ["t"]})
                assert e.free_symbols <= {sp.Symbol(v) for v in names + ["t"]}
    assert "broken: ERROR row 65" in proc.stdout
    out_csv = tmp_path / "res.csv"
    assert _fit(decay, "-o", out_csv, "--decoding", "sample", "--temperature", "1.0").returncode == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert rows and set(rows[0]) == {"system", "rank", "variable", "rhs", "r2", "complexity", "error"}
    assert rows[0]["system"] == "decay" and rows[0]["rank"] == "1" and rows[0]["variable"] == "N"
    sp.parse_expr(rows[0]["rhs"], local_dict={"N": sp.Symbol("N"), "t": sp.Symbol("t")})


def test_unreadable_files_and_bad_usage_exit_2_and_write_nothing(tmp_path, files):
    decay, _ = files
    out = tmp_path / "never.jsonl"
    no_t = _write(tmp_path / "no_t.csv", ["time", "x"], [[1, 2]] * 6)
    for args, fragment in [((tmp_path / "missing.csv", "-o", out), "cannot read"),
                           ((no_t, "-o", out), "no column 't'"),
                           ((decay, "-o", tmp_path / "x.txt"), "must end in .csv or .jsonl"),
                           ((decay, "--allowed-operators", "add,frob", "-o", out), "unknown ['frob']"),
                           ((decay, "--beam-size", "0"), "must be >= 1"),
                           ((decay, "--decoding", "sample", "--temperature", "0"), "--temperature")]:
        proc = _fit(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert fragment in proc.stderr
        assert not out.exists()


@pytest.mark.parametrize("text, fragment", [
    ("", "empty file"), ("t,x\n", "no data rows"), ("x,y\n1,2\n", "no column 't'"), ("t\n1\n", "no variable"),
    ("t,x,x\n1,2,3\n", "appears twice"), ("t,x\n1,2,3\n", "row 2: 3 cells"),
])
def test_file_level_errors(text, fragment):
    with pytest.raises(CSVFileError, match=fragment):
        parse_csv_text(text, "f")


@pytest.mark.parametrize("text, fragment", [
    ("t,x\n" + "".join(f"{i},{i}\n" for i in range(4)), "4 points"),
    ("t,x\n" + "".join(f"{i % 5},{i}\n" for i in range(6)), "duplicate time t=0.0"),
    ("t,x\n0,1\n1,nan\n2,3\n3,4\n4,5\n", "row 3, column x: nan is not a finite number"),
    ("t,x,y\n" + "".join(f"{i},{i},{'' if i == 2 else i}\n" for i in range(6)), "row 4, column y: blank cell"),
    ("t,lambda\n" + "".join(f"{i},{i}\n" for i in range(6)), "keyword"),
    ("t,sin\n" + "".join(f"{i},{i}\n" for i in range(6)), "SymPy function"),
    ("t,x\n0,1\n1,2\n2,1e300\n3,4\n4,5\n", "row 4, column x: 1e+300 is larger in magnitude than 1e+12"),
    ("t,x\n0,1\n1,2\n-2e13,1\n3,4\n4,5\n", "row 4, column t: -2e+13 is larger in magnitude"),
])
def test_system_level_errors_name_row_and_column(text, fragment):
    (system,) = parse_csv_text(text, "f")
    assert system.error and fragment in system.error


def test_table_rounds_constants_to_four_digits_and_drops_unit_factors():
    from odeformer.batch import table

    results = [{"system": "pend", "variables": ["theta", "omega"], "low_confidence": False, "candidates": [
        {"rhs": {"theta": "0.960533834769782*omega", "omega": "-9.80665012345*sin(1.0*theta)"},
         "r2": 0.99912345, "complexity": 7, "score": 1.0, "pareto": True}]},
        {"system": "bad", "error": "row 3, column x: blank cell", "candidates": []}]
    assert table(results).splitlines() == [
        "pend: r2=0.9991 complexity=7", "    dtheta/dt = 0.9605*omega", "    domega/dt = -9.807*sin(theta)",
        "bad: ERROR row 3, column x: blank cell"]


def test_trajectories_and_unsorted_times_are_grouped_and_sorted():
    rows = "".join(f"{tr},{t},{v}\n" for tr, t, v in [(1, 2, 5), (1, 0, 7), (1, 1, 6), (1, 3, 4), (1, 4, 3),
                                                     (2, 0, 1), (2, 1, 2), (2, 2, 3), (2, 3, 4), (2, 4, 5)])
    (system,) = parse_csv_text("trajectory,t,x\n" + rows, "f")
    assert system.error is None and len(system.trajectories) == 2
    t, x = system.trajectories[0]
    assert list(t) == [0, 1, 2, 3, 4] and list(x[:, 0]) == [7, 6, 5, 4, 3]


def test_workers_fit_systems_in_parallel_processes(tmp_path, files):
    _, multi = files
    out = tmp_path / "par.jsonl"
    proc = _fit(multi, "-o", out, "--workers", "2")
    assert proc.returncode == 1, proc.stderr  # the broken system still fails, the others are answered
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["system"] for r in results] == ["osc", "grow", "broken"]
    assert all(r["candidates"] for r in results[:2]) and results[2]["error"]
