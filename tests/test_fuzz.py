"""Property-based fuzzing of the HTTP API (hypothesis): nothing a client sends gets a 500, and every
200 answer matches the response schema with finite numbers. Bounded in examples and time."""

import json
import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.schemas import CSVFitResponse, FitResponse

CKPT = str(Path(__file__).resolve().parent / "data" / "test_checkpoint")

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                    st.floats(-1e3, 1e3), st.text(max_size=3), st.none())
junk = st.recursive(st.one_of(numbers, st.booleans()), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
names = st.one_of(st.sampled_from(["x", "y", "S", "I", "E", "lambda", "sin", "t", "beta", "", "1a", "x y"]),
                  st.text(max_size=5))
trajectory = st.integers(0, 12).flatmap(lambda n: st.fixed_dictionaries({
    "t": st.lists(st.one_of(st.floats(-1e3, 1e3), numbers), min_size=n, max_size=n),
    "x": st.lists(st.lists(st.one_of(st.floats(-1e3, 1e3), numbers), min_size=1, max_size=2), min_size=n, max_size=n),
}))
options = st.one_of(st.fixed_dictionaries({"beam_size": st.integers(-1, 3), "time_budget_s": st.floats(0.1, 0.5)}),
                    st.dictionaries(st.sampled_from(["beam_size", "top_k", "time_budget_s", "allowed_operators",
                                                     "bogus"]), junk, max_size=3))
bodies = st.one_of(junk, st.fixed_dictionaries({
    "variables": st.lists(names, min_size=0, max_size=3),
    "trajectories": st.lists(trajectory, min_size=0, max_size=2),
    "options": options,
}))


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(CKPT, warmup=False)) as c:
        yield c


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return True


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_fit_endpoint_never_fails_on_client_input(client, body):
    r = client.post("/v1/fit", content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"})
    assert r.status_code in (200, 413, 422, 503), (r.status_code, r.text[:300])
    payload = r.json()
    if r.status_code == 200:
        FitResponse.model_validate(payload)
        assert _finite(payload)
    else:
        assert "detail" in payload


cells = st.one_of(st.floats(-1e3, 1e3).map(str), st.text(max_size=4))
csv_texts = st.one_of(st.text(max_size=200), st.lists(st.lists(cells, min_size=2, max_size=3), max_size=8).map(
    lambda rows: "t,x,y\n" + "\n".join(",".join(r) for r in rows)))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=csv_texts)
def test_csv_endpoint_never_fails_on_client_input(client, text):
    r = client.post("/v1/fit/csv", params={"beam_size": 2, "time_budget_s": 0.5},
                    files={"file": ("f.csv", text.encode("utf-8", "surrogatepass"), "text/csv")})
    assert r.status_code in (200, 413, 422, 503), (r.status_code, r.text[:300])
    if r.status_code == 200:
        CSVFitResponse.model_validate(r.json())
        assert _finite(r.json())
