"""`odeformer fit` on real CSV files (DESIGN.md 3.1, 3.2), with the pinned test checkpoint."""

import csv
import json
import subprocess
import sys
import time
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
            assert {"rhs", "r2", "complexity", "score", "pareto", "score_gap"} <= set(c) <= {
                "rhs", "latex", "r2", "complexity", "score", "pareto", "score_gap"}
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


# --- resuming an interrupted run (OUT.partial, docs/ray.md "Resuming") ------------------------------------

def test_an_interrupted_run_keeps_its_results_and_resume_fits_only_the_others(tmp_path, files):
    import signal

    decay, multi = files
    # enough systems after the first two that the run cannot finish between the journal check and the signal
    growth = [(f"g{i}", 1.0 + 0.1 * i, 0.3 if i % 2 else -0.2) for i in range(1, 11)]
    more = _write(tmp_path / "more.csv", ["system", "t", "x"],
                  [[name, t, a * np.exp(k * t)] for name, a, k in growth for t in T])
    out = tmp_path / "res.jsonl"
    journal = tmp_path / "res.jsonl.partial"
    cmd = [sys.executable, "-m", "odeformer.cli", "fit", "--checkpoint", CKPT, "--beam-size", "3", "--time-budget",
           "3", "--quiet", str(decay), str(multi), str(more), "-o", str(out)]
    # Ctrl-C reaches the run whatever launched the tests: a shell without job control starts its
    # background jobs ignoring SIGINT, and the child would inherit that and finish every system
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_journal(proc, journal, 3)  # header and two results
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "are saved in" in err and "--resume" in err and not out.exists()
    kept = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert 2 <= len(kept) < 14
    with journal.open("a") as f:
        f.write('{"key": "0:torn')  # as if killed while writing a line: ignored and cut off
    proc = _fit(decay, multi, more, "-o", out, "--resume")
    assert proc.returncode == 1, proc.stderr
    assert f"{len(kept)} system(s) taken from the interrupted run" in proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    # each once, in order
    assert [r["system"] for r in results] == ["decay", "osc", "grow", "broken"] + [name for name, _, _ in growth]
    by_system = {r["system"]: r for r in results}
    assert all(by_system[e["result"]["system"]] == e["result"] for e in kept)  # not fitted again
    assert not journal.exists()


def test_resume_needs_an_output_and_the_same_options_and_a_fresh_run_starts_afresh(tmp_path, files):
    decay, _ = files
    out = tmp_path / "res.jsonl"
    journal = tmp_path / "res.jsonl.partial"
    assert "--resume needs -o" in _fit(decay, "--resume").stderr
    journal.write_text(json.dumps({"journal": 1, "identity": {"beam_size": 99}}) + "\n"
                       + json.dumps({"key": "0:x:decay", "result": {"system": "decay", "candidates": []}}) + "\n")
    proc = _fit(decay, "-o", out, "--resume")
    assert proc.returncode == 2 and "other options" in proc.stderr and "beam_size: 99 then, 3 now" in proc.stderr
    assert journal.exists()  # refused: left as it was
    proc = _fit(decay, "-o", out)  # without --resume: the old journal is emptied
    assert proc.returncode == 0 and not journal.exists()
    assert "starting afresh; the 1 result(s) of an earlier run" in proc.stderr


def test_journal_cuts_a_torn_line_keeps_matching_results_and_is_locked(tmp_path):
    from odeformer.batch import Journal, JournalError

    out = tmp_path / "o.csv"
    j = Journal(out, {"beam_size": 3}, ["k1", "k2"], resume=False)
    j.add("k1", {"system": "a", "candidates": []})
    j.add("k2", {"system": "b", "error": "bad", "candidates": []})
    with pytest.raises(JournalError, match="another odeformer fit"):
        Journal(out, {"beam_size": 3}, ["k1", "k2"], resume=True)
    j.close()
    with open(j.path, "ab") as f:
        f.write(b'{"key": "k3", "res')
    j = Journal(out, {"beam_size": 3}, ["k2", "k3"], resume=True)  # k1 is no longer a system of this run
    assert j.done == {"k2"} and j.failed == {"k2"} and j.result("k2")["error"] == "bad"
    assert j.path.read_bytes().endswith(b"}\n")
    j.add("k3", {"system": "c", "candidates": []})
    j.finish(["k2", "k3"])
    assert out.read_text().splitlines() == ["system,rank,variable,rhs,r2,complexity,error", "b,,,,,,bad"]
    assert not j.path.exists() and j.result("k3")["system"] == "c"  # readable until closed
    j.close()


def test_inputs_are_parsed_one_file_at_a_time(tmp_path, files, monkeypatch):
    from odeformer import batch

    decay, multi = files
    scanned = batch.scan_inputs([str(decay), str(multi)])
    assert [f.systems for f in scanned] == [["decay"], ["osc", "grow", "broken"]]
    parsed = []
    real = batch._parse
    monkeypatch.setattr(batch, "_parse", lambda arg: parsed.append(arg) or real(arg))
    items = batch.iter_systems(scanned, skip={batch.system_key(scanned[1], "grow")})
    assert next(items)[1].system == "decay" and parsed == [str(decay)]
    assert [key.split(":")[-1] for key, _ in items] == ["osc", "broken"] and parsed == [str(decay), str(multi)]


def wait_for_journal(proc, journal, lines: int, timeout: float = 200) -> None:
    """Until the running fit's journal holds ``lines`` lines (or the process ends, or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_bytes().splitlines()) >= lines:
            return
        time.sleep(0.05)


def test_suggest_experiment_in_the_jsonl_output_and_the_table(tmp_path):
    """The ambiguity fields on every result, and the suggested experiment when asked (docs/ambiguity.md)."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 5, 60)
    theta = 0.1 * np.cos(2 * t) * (1 + 0.01 * rng.standard_normal(len(t)))
    omega = -0.2 * np.sin(2 * t) + 0.002 * rng.standard_normal(len(t))
    pend = _write(tmp_path / "pend.csv", ["t", "theta", "omega"], [list(r) for r in zip(t, theta, omega)])
    out = tmp_path / "res.jsonl"
    proc = _fit(pend, "-o", out, "--suggest-experiment", "--experiment-bounds", "theta=-1:1",
                "--experiment-max-duration", "8")
    assert proc.returncode == 0, proc.stderr
    (r,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert isinstance(r["ambiguous"], bool) and all(1 < k <= len(r["candidates"]) for k in r["rivals"])
    assert r["candidates"][0]["score_gap"] == 0.0
    e = r["experiment"]
    assert set(e["x0"]) == {"theta", "omega"} and -1 <= e["x0"]["theta"] <= 1 and 0 < e["duration"] <= 8
    assert e["bounds"]["theta"] == [-1.0, 1.0] and e["rivals"][0] == 1
    assert len(e["predictions"]) == len(e["rivals"]) and len(e["predictions"][0]["states"]["omega"]) == len(e["t"])
    assert "suggested experiment: start at theta=" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (("--suggest-experiment", "--experiment-bounds", "N=2:1"), "lower 2.0 is above upper 1.0"),
    (("--suggest-experiment", "--experiment-bounds", "N=nan:1"), "finite"),
    (("--suggest-experiment", "--experiment-bounds", "N:1"), "NAME=LOWER:UPPER"),
    (("--suggest-experiment", "--experiment-bounds", "z=0:1"), "no input system has the variable(s) ['z']"),
    (("--suggest-experiment", "--experiment-max-duration", "0"), "must be a finite number > 0"),
    (("--suggest-experiment", "--experiment-max-duration", "-1"), "> 0"),
    (("--experiment-bounds", "N=0:1"), "need --suggest-experiment"),
])
def test_bad_experiment_options_exit_2(tmp_path, files, args, fragment):
    decay, _ = files
    out = tmp_path / "never.jsonl"
    proc = _fit(decay, "-o", out, *args)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and not out.exists()
