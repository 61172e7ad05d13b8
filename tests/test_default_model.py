"""The shipped models (the GPU-trained default and the CPU-trained tiny one): size, loading, and the
transformer's own recovery of simple laws."""

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from data_gen.expressions import from_sympy
from data_gen.sampler import Skeleton
from data_gen.simplify import simplify
from odeformer import ODERegressor
from odeformer import checkpoint as ckpt

DEFAULT = Path(__file__).resolve().parent.parent / "checkpoints" / "default"
T = np.linspace(0, 10, 100)


def _skeleton(rhs: str, name: str) -> str:
    s = sp.Symbol(name)
    expr = sp.expand(sp.parse_expr(rhs, local_dict={name: s}))  # factored and expanded forms are one law
    return Skeleton((simplify(from_sympy(expr, {s: "x_0"})[0]),), False).key


def test_default_checkpoint_is_within_budget_and_loads():
    total = sum(f.stat().st_size for f in DEFAULT.glob("*.safetensors"))
    assert total <= 30 * 2**20 and all(f.stat().st_size <= 15 * 2**20 for f in DEFAULT.glob("*.safetensors"))
    c = ckpt.load(DEFAULT)
    assert c.provenance["samples_seen"] > 0 and (DEFAULT / "MODEL_CARD.md").is_file()


TINY = DEFAULT.parent / "tiny"


@pytest.fixture(scope="module", params=[DEFAULT, TINY], ids=["default", "tiny"])
def transformer_only(request):
    return ODERegressor(request.param, beam_size=16, time_budget_s=20, sources=("transformer",))


@pytest.mark.parametrize("name, x, law", [
    ("decay", 3.0 * np.exp(-0.5 * T), "-0.5*N"),
    ("logistic", 5 / (1 + (5 / 0.2 - 1) * np.exp(-0.9 * T)), "0.9*N*(1 - N/5)"),
])
def test_transformer_and_refitting_recover_simple_laws(transformer_only, name, x, law):
    """Beam search proposals plus constant refitting, no other proposal source (issue 3's bar for the
    shipped models, the CPU-trained one included)."""
    transformer_only.fit(T, x, variables=["N"])
    best = transformer_only.equations_[0]
    assert best.r2 > 0.99, transformer_only
    assert _skeleton(best.rhs["N"], "N") == _skeleton(law, "N"), transformer_only


def test_tiny_checkpoint_was_trained_on_a_cpu_within_an_hour(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bare name finds the packaged copy
    c = ckpt.load("tiny")
    assert ckpt.resolve("tiny") == TINY and ckpt.resolve(tmp_path) == tmp_path
    assert c.config["name"] == ckpt.load(TINY).config["name"]
    with pytest.raises(ckpt.CheckpointError, match="no config.json"):
        ckpt.load("no-such-model")
    prov = c.provenance
    assert prov["gpu_minutes"] == 0 and 0 < prov["cpu_minutes"] <= 60 and len(prov["runs"]) == 1
    assert c.model.config.input_derivatives and (TINY / "MODEL_CARD.md").is_file()


def _skeletons(rhs: dict, names: list[str]) -> tuple:
    syms = {n: sp.Symbol(n) for n in names}
    table = {syms[n]: f"x_{i}" for i, n in enumerate(names)}
    return Skeleton(tuple(simplify(from_sympy(sp.expand(sp.parse_expr(rhs[n], local_dict=syms)), table)[0])
                          for n in names), False).key


@pytest.mark.parametrize("name, x, law", [
    ("decay", 3.0 * np.exp(-0.5 * T)[:, None], {"u": "-0.5*u"}),
    ("logistic", (5 / (1 + 24 * np.exp(-0.9 * T)))[:, None], {"u": "0.9*u - 0.18*u**2"}),
    ("harmonic", np.stack([np.cos(2 * T), -2 * np.sin(2 * T)], 1), {"u": "v", "v": "-4.0*u"}),
])
def test_all_sources_recover_simple_laws(name, x, law):
    names = ["u", "v"][: x.shape[1]]
    reg = ODERegressor(DEFAULT, time_budget_s=30).fit(T, x, variables=names)
    best = reg.equations_[0]
    assert best.r2 > 0.99, reg
    assert _skeletons(best.rhs, names) == _skeletons(law, names), reg
