"""The HTTP service end to end: a real uvicorn process on a free loopback port."""

import concurrent.futures as cf
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import sympy as sp

ROOT = Path(__file__).resolve().parent.parent
CKPT = str(ROOT / "tests" / "data" / "test_checkpoint")
T = [float(v) for v in np.linspace(0, 5, 30)]
DECAY = [[float(np.exp(-0.4 * v))] for v in T]
FAST = {"beam_size": 2, "time_budget_s": 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(*extra, env=None):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--checkpoint", CKPT,
                             "--max-body-bytes", "300000", *extra], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read())
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready")


@pytest.fixture(scope="module")
def server():
    proc, url = _start()
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def _check_candidates(body, names):
    assert body["candidates"]
    for c in body["candidates"]:
        assert np.isfinite(c["r2"])
        for rhs in c["rhs"].values():
            e = sp.parse_expr(rhs, local_dict={n: sp.Symbol(n) for n in names + ["t"]})
            assert e.free_symbols <= {sp.Symbol(n) for n in names + ["t"]}


def test_probes_model_and_docs(server):
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server + "/readyz").json()["status"] == "ready"
    info = httpx.get(server + "/v1/model").json()
    assert info["name"] == "test_checkpoint" and info["limits"]["queue_bound"] == 16
    assert info["limits"]["max_abs_value"] == 1e12 and info["limits"]["max_points_per_trajectory"] == 5000
    assert httpx.get(server + "/docs").status_code == 200
    assert "/v1/fit" in httpx.get(server + "/openapi.json").json()["paths"]


def test_json_fit_with_unsorted_times(server):
    order = np.random.default_rng(0).permutation(len(T))
    body = {"variables": ["N"], "trajectories": [{"t": [T[i] for i in order], "x": [DECAY[i] for i in order]}],
            "options": FAST}
    r = httpx.post(server + "/v1/fit", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["variables"] == ["N"] and out["model"]["name"] == "test_checkpoint" and out["elapsed_s"] > 0
    _check_candidates(out, ["N"])
    for c in out["candidates"]:  # typeset forms, keyed like rhs
        assert set(c["latex"]) == set(c["mathml"]) == {"N"}
        assert c["mathml"]["N"].startswith("<math") and "<mfrac>" in c["mathml"]["N"]


def test_json_fit_with_temperature_sampling(server):
    body = {"variables": ["N"], "trajectories": [{"t": list(T), "x": DECAY}],
            "options": {**FAST, "decoding": "sample", "temperature": 1.2}}
    r = httpx.post(server + "/v1/fit", json=body, timeout=60)
    assert r.status_code == 200, r.text
    _check_candidates(r.json(), ["N"])


def test_csv_upload_with_several_systems(server):
    rows = "".join(f"a,{t},{x[0]},\n" for t, x in zip(T, DECAY)) + "".join(
        f"b,{t},{np.cos(t)},{-np.sin(t)}\n" for t in T) + "".join(f"bad,{t},{'x' if i == 2 else 1},\n"
                                                                for i, t in enumerate(T))
    r = httpx.post(server + "/v1/fit/csv", params={"beam_size": 2, "time_budget_s": 3},
                   files={"file": ("m.csv", "system,t,u,v\n" + rows, "text/csv")}, timeout=120)
    assert r.status_code == 200, r.text
    systems = r.json()["systems"]
    assert [s["system"] for s in systems] == ["a", "b", "bad"]
    assert systems[0]["variables"] == ["u"] and systems[1]["variables"] == ["u", "v"]
    _check_candidates(systems[0], ["u"])
    assert systems[2]["error"] == "row 64, column u: not a number ('x')"


BAD_JSON = [
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,NaN], "x": [[1],[2],[3],[4],[5]]}]}', "finite"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,3], "x": [[1],[2],[3],[4],[5]]}]}',
     "trajectory 1: duplicate time t=3.0"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}, '
     '{"t": [0,1,2,2,4], "x": [[1],[2],[3],[4],[5]]}]}', "trajectory 2: duplicate time t=2.0"),
    ('{"variables": ["x", "y"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1,1],[2,1],[3,1],[4,1e300],[5,1]]}]}',
     "trajectory 1: x[3, 1] (y) = 1e+300 is larger in magnitude than 1e+12"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,-1e20], "x": [[1],[2],[3],[4],[5]]}]}',
     "trajectory 1: t[4] = -1e+20"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],["a"],[3],[4],[5]]}]}', "float"),
    ('{"variables": ["lambda"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}]}', "keyword"),
    ('{"variables": ["sin"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}]}', "SymPy"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}], "options": {"beam": 3}}',
     "extra"),
    ('{"variables": ["x", "y"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}]}',
     "trajectory 1: x[0] has 1 values for 2"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}, '
     '{"t": [0,1,2,3,4,5], "x": [[1],[2],[3],[4],[5]]}]}', "trajectory 2: 5 rows of x for 6 times"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2], "x": [[1],[2],[3]]}]}', "at least 5"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}], '
     '"options": {"allowed_operators": ["frob"]}}', "unknown"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}], '
     '"options": {"decoding": "nucleus"}}', "beam"),
    ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}], '
     '"options": {"decoding": "sample", "temperature": 0}}', "temperature"),
    ('not json', "json"),
]


@pytest.mark.parametrize("body, fragment", BAD_JSON)
def test_bad_json_inputs_get_422_naming_the_problem(server, body, fragment):
    r = httpx.post(server + "/v1/fit", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422, r.text
    assert fragment.lower() in r.text.lower()


def test_too_many_points_get_422(server):
    n = 5001
    body = {"variables": ["x"], "trajectories": [{"t": list(range(n)), "x": [[1.0]] * n}]}
    r = httpx.post(server + "/v1/fit", json=body, timeout=60)
    assert r.status_code in (413, 422)  # either limit names it; 5001 points fit under the byte limit
    assert r.status_code == 422 and "5000" in r.text


@pytest.mark.parametrize("text, fragment", [
    ("", "empty file"), ("time,x\n1,2\n", "no column 't'"),
    ("t,x\n" + "".join(f"{i},{'' if i == 3 else i}\n" for i in range(6)), "blank cell"),
    ("t,lambda\n" + "".join(f"{i},{i}\n" for i in range(6)), "keyword"),
    ("t,x\n" + "".join(f"{i % 5},{i}\n" for i in range(6)), "duplicate time"),
])
def test_bad_csv_uploads_get_422(server, text, fragment):
    r = httpx.post(server + "/v1/fit/csv", files={"file": ("f.csv", text, "text/csv")}, timeout=60)
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_csv_route_has_the_json_route_limits(server):
    n = 12_000  # under the byte and total-point limits, over the per-trajectory one
    text = "t,x\n" + "".join(f"{i},1\n" for i in range(n))
    r = httpx.post(server + "/v1/fit/csv", files={"file": ("long.csv", text, "text/csv")}, timeout=60)
    assert r.status_code == 422, r.text
    assert "12000 points; at most 5000 per trajectory" in r.text
    text = "trajectory,t,x\n" + "".join(f"a,{i},1\n" for i in range(n))
    r = httpx.post(server + "/v1/fit/csv", files={"file": ("long.csv", text, "text/csv")}, timeout=60)
    assert r.status_code == 422 and "trajectory 'a': 12000 points" in r.text, r.text


def test_huge_values_name_the_cell_and_other_systems_are_still_fitted(server):
    rows = "".join(f"ok,{t},{x[0]}\n" for t, x in zip(T, DECAY)) + "".join(
        f"huge,{t},{1e300 if i == 3 else 1.0}\n" for i, t in enumerate(T))
    r = httpx.post(server + "/v1/fit/csv", params={"beam_size": 2, "time_budget_s": 3},
                   files={"file": ("m.csv", "system,t,x\n" + rows, "text/csv")}, timeout=120)
    assert r.status_code == 200, r.text
    ok, huge = r.json()["systems"]
    _check_candidates(ok, ["x"])
    assert huge["error"].startswith("row 35, column x: 1e+300 is larger in magnitude than 1e+12")
    text = "t,x\n" + "".join(f"{i},{-1e300 if i == 4 else 1}\n" for i in range(10))
    r = httpx.post(server + "/v1/fit/csv", files={"file": ("h.csv", text, "text/csv")}, timeout=60)
    assert r.status_code == 422 and "row 6, column x: -1e+300 is larger in magnitude" in r.text, r.text


@pytest.mark.parametrize("path, content_type, accepted", [
    ("/v1/fit", "text/plain", "application/json"), ("/v1/fit", "application/x-www-form-urlencoded", "application/json"),
    ("/v1/fit/csv", "application/json", "multipart/form-data"), ("/v1/fit/csv", "text/csv", "multipart/form-data"),
    ("/v1/fit", None, "application/json"),
])
def test_unsupported_content_type_gets_415(server, path, content_type, accepted):
    body = '{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}]}'
    r = httpx.post(server + path, content=body.encode(), timeout=60,
                   headers={"content-type": content_type} if content_type else {})
    assert r.status_code == 415, r.text
    assert accepted in r.json()["detail"] and (content_type or "(none)") in r.json()["detail"]
    ok = {"variables": ["N"], "trajectories": [{"t": T, "x": DECAY}], "options": FAST}
    assert httpx.post(server + "/v1/fit", content=json.dumps(ok), timeout=60,  # media type parameters are fine
                      headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_oversize_and_chunked_bodies_get_413(server):
    big = b'{"variables": ["x"], "trajectories": [{"t": [' + b"1.0," * 100_000 + b'1.0]}]}'
    r = httpx.post(server + "/v1/fit", content=big, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413

    def chunks():
        yield b'{"variables": ["x"], "trajectories": [{"t": ['
        for _ in range(100):
            yield b"1.0," * 1000
        yield b"1.0]}]}"

    r = httpx.post(server + "/v1/fit", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413
    assert httpx.get(server + "/healthz").status_code == 200  # and the server is still fine


def test_api_key_and_queue_bound():
    proc, url = _start("--concurrency", "1", "--queue-bound", "1", env={"ODEFORMER_API_KEY": "s3cret"})
    try:
        body = {"variables": ["x"], "trajectories": [{"t": T, "x": DECAY}],
                "options": {"beam_size": 8, "time_budget_s": 4}}
        assert httpx.post(url + "/v1/fit", json=body, timeout=60).status_code == 401
        assert httpx.post(url + "/v1/fit", json=body, headers={"Authorization": "Bearer nope"},
                          timeout=60).status_code == 401
        assert httpx.get(url + "/readyz").status_code == 200  # probes need no key
        auth = {"Authorization": "Bearer s3cret"}

        def post(_):
            return httpx.post(url + "/v1/fit", json=body, headers=auth, timeout=120)

        with cf.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(post, range(6)))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["Retry-After"] == "2"
        assert set(codes) <= {200, 503}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _pendulum(n=60):
    t = np.linspace(0, 5, n)
    rng = np.random.default_rng(0)
    return [float(v) for v in t], [[float(0.1 * np.cos(2 * v) * (1 + 0.01 * rng.standard_normal())),
                                    float(-0.2 * np.sin(2 * v) + 0.002 * rng.standard_normal())] for v in t]


def test_json_fit_reports_ambiguity_and_suggests_an_experiment(server):
    t, x = _pendulum()
    body = {"variables": ["theta", "omega"], "trajectories": [{"t": t, "x": x}],
            "options": {**FAST, "suggest_experiment": True, "experiment_bounds": {"theta": [-1, 1]},
                        "experiment_max_duration": 8}}
    r = httpx.post(server + "/v1/fit", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    _check_candidates(out, ["theta", "omega"])
    assert isinstance(out["ambiguous"], bool) and out["low_confidence"] is False
    assert out["candidates"][0]["score_gap"] == 0.0 and all(c["score_gap"] >= 0 for c in out["candidates"])
    assert all(1 < k <= len(out["candidates"]) for k in out["rivals"]) and bool(out["rivals"]) == out["ambiguous"]
    e = out["experiment"]
    assert -1 <= e["x0"]["theta"] <= 1 and 0 < e["duration"] <= 8 and e["bounds"]["theta"] == [-1.0, 1.0]
    assert [p["rank"] for p in e["predictions"]] == e["rivals"] and e["rivals"][0] == 1
    assert all(len(p["states"]["omega"]) == len(e["t"]) for p in e["predictions"])
    plain = httpx.post(server + "/v1/fit", json={**body, "options": FAST}, timeout=60).json()
    assert plain["experiment"] is None and "ambiguous" in plain  # on every fit; the experiment when asked


EXPERIMENT_T = [0, 1, 2, 3, 4, 5]
BAD_EXPERIMENT = [
    ({"suggest_experiment": True, "experiment_bounds": {"x": [2, 1]}}, "lower 2.0 is above upper 1.0"),
    ({"suggest_experiment": True, "experiment_bounds": {"z": [0, 1]}}, "unknown variable(s) ['z']"),
    ({"suggest_experiment": True, "experiment_bounds": {"x": [0, 1, 2]}}, "experiment_bounds"),
    ({"suggest_experiment": True, "experiment_bounds": {"x": [0]}}, "experiment_bounds"),
    ({"suggest_experiment": True, "experiment_max_duration": 0}, "greater than 0"),
    ({"suggest_experiment": True, "experiment_max_duration": -2.5}, "greater than 0"),
    ({"suggest_experiment": "maybe"}, "suggest_experiment"),
    ({"experiment_max_duration": 5}, "need suggest_experiment=true"),
]


@pytest.mark.parametrize("options, fragment", BAD_EXPERIMENT)
def test_bad_experiment_options_get_422(server, options, fragment):
    body = {"variables": ["x"], "trajectories": [{"t": EXPERIMENT_T, "x": [[v] for v in EXPERIMENT_T]}],
            "options": options}
    r = httpx.post(server + "/v1/fit", json=body, timeout=60)
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_nan_in_experiment_bounds_gets_422(server):
    body = ('{"variables": ["x"], "trajectories": [{"t": [0,1,2,3,4], "x": [[1],[2],[3],[4],[5]]}], '
            '"options": {"suggest_experiment": true, "experiment_bounds": {"x": [NaN, 1]}}}')
    r = httpx.post(server + "/v1/fit", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422 and "finite" in r.text.lower(), r.text


def test_csv_route_suggests_an_experiment_and_refuses_bad_options(server):
    t, x = _pendulum(40)
    text = "t,theta,omega\n" + "".join(f"{a},{b},{c}\n" for a, (b, c) in zip(t, x))
    files = {"file": ("p.csv", text, "text/csv")}
    r = httpx.post(server + "/v1/fit/csv", params={**FAST, "suggest_experiment": "true",
                                                   "experiment_bounds": "theta=-0.5:0.5,omega=0:0"},
                   files=files, timeout=120)
    assert r.status_code == 200, r.text
    (s,) = r.json()["systems"]
    assert isinstance(s["ambiguous"], bool) and s["experiment"]["x0"]["omega"] == 0.0
    assert -0.5 <= s["experiment"]["x0"]["theta"] <= 0.5
    for params, fragment in [({"suggest_experiment": "true", "experiment_bounds": "theta=1:0"}, "above upper"),
                             ({"suggest_experiment": "true", "experiment_bounds": "theta=nan:1"}, "finite"),
                             ({"suggest_experiment": "true", "experiment_bounds": "theta"}, "NAME=LOWER:UPPER"),
                             ({"suggest_experiment": "true", "experiment_bounds": "q=0:1"}, "variable(s) ['q']"),
                             ({"suggest_experiment": "true", "experiment_max_duration": "-1"}, "greater than 0"),
                             ({"suggest_experiment": "true", "experiment_max_duration": "nan"}, "finite"),
                             ({"experiment_bounds": "theta=0:1"}, "need suggest_experiment=true")]:
        r = httpx.post(server + "/v1/fit/csv", params=params, files=files, timeout=60)
        assert r.status_code == 422, (params, r.text)
        assert fragment in r.text, (params, r.text)
