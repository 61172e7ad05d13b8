"""Grammar motifs (DESIGN.md 3.5, issue 15): parsing, validation errors that name the motif, sampling
frequencies that follow the weights, determinism, and an unchanged vocabulary."""

import json
import math
import tomllib
from pathlib import Path

import pytest

from data_gen.expressions import to_prefix
from data_gen.grammar import DEFAULT_GRAMMAR_PATH, Grammar, GrammarError, default_grammar, parse_motif
from data_gen.pipeline import generate_chunk
from data_gen.sampler import SkeletonSampler
from odeformer.tokens import Vocabulary

MOTIFS_PATH = DEFAULT_GRAMMAR_PATH.with_name("motifs.toml")


def _with_motifs(motifs: dict, share: float = 0.5, **sections) -> dict:
    """The default grammar's raw TOML with motifs and section overrides."""
    raw = tomllib.loads(DEFAULT_GRAMMAR_PATH.read_text())
    raw["tree"]["motif_share"] = share
    raw["motifs"] = motifs
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return raw


def test_parse_motif_keeps_placeholders():
    assert parse_motif("div mul C x add C x") == ("div", ("mul", "C", "x"), ("add", "C", "x"))
    assert parse_motif("mul C sin mul C t") == ("mul", "C", ("sin", ("mul", "C", "t")))
    assert parse_motif("div C add C pow x 4") == ("div", "C", ("add", "C", ("pow", "x", "4")))


def test_motif_grammar_loads_with_the_default_vocabulary():
    g = Grammar.from_file(MOTIFS_PATH)
    d = default_grammar()
    assert g.motif_share > 0 and len(g.motifs) >= 10
    assert Grammar.from_dict(json.loads(g.to_json())).sha256() == g.sha256()  # as workers rebuild it
    # same operators, exponents, dims: the output vocabulary is the default grammar's
    assert Vocabulary.for_grammar(g).tokens == Vocabulary.for_grammar(d).tokens
    # every section but the motif keys is the default grammar's, so only the prior differs
    data = {k: v for k, v in g.data.items() if k != "motifs"}
    data["tree"] = {k: v for k, v in data["tree"].items() if k != "motif_share"}
    assert data == d.data
    # every motif carries a comment naming its family
    text = MOTIFS_PATH.read_text().splitlines()
    for i, line in enumerate(text):
        if "expr =" in line and not line.lstrip().startswith("#"):
            assert text[i - 1].lstrip().startswith("#"), f"motif without a family comment: {line}"


def test_grammars_without_motifs_normalise_as_before():
    d = default_grammar()
    assert "motifs" not in d.data and "motif_share" not in d["tree"]
    assert d.motif_share == 0 and d.motifs == []
    raw = tomllib.loads(DEFAULT_GRAMMAR_PATH.read_text())
    raw["tree"]["motif_share"] = 0.0
    raw["motifs"] = {}
    assert Grammar.from_dict(raw).sha256() != d.sha256()  # the keys are recorded when given
    assert Grammar.from_dict(tomllib.loads(DEFAULT_GRAMMAR_PATH.read_text())).sha256() == d.sha256()


@pytest.mark.parametrize("motifs, fragment", [
    ({"mm": {"expr": "div mul C x add C frob"}}, "motifs.mm: unknown token 'frob'"),
    ({"mm": {"expr": "div mul C x add C"}}, "motifs.mm: expression ends early"),
    ({"mm": {"expr": "mul C x x"}}, "motifs.mm: 1 token(s) left over"),
    ({"osc": {"expr": "mul C atan x"}}, "motifs.osc: operator atan is not among the grammar's operators"),
    ({"lin": {"expr": "mul C x_0"}}, "motifs.lin: 'x_0': write state variables as the placeholders"),
    ({"k": {"expr": "mul C C"}}, "motifs.k: uses no state variable"),
    ({"h": {"expr": "div C add C pow x 7"}}, "motifs.h: exponent 7 is not in operators.pow_exponents"),
    ({"h": {"expr": "pow x y"}}, "motifs.h: pow takes a base and a rational exponent"),
    ({"h": {"expr": "mul 2 x"}}, "motifs.h: literal '2' outside a pow exponent"),
    ({"w": {"expr": "mul C x", "weight": -1}}, "motifs.w.weight: must be a finite number >= 0"),
    ({"w": {"expr": "mul C x", "wieght": 1}}, "motifs.w.wieght: unknown key"),
    ({"w": "mul C x"}, "motifs.w: expected a table"),
    ({"w": {"weight": 1.0}}, "motifs.w.expr: expected a prefix expression"),
    ({"deep": {"expr": "sin cos exp x"}}, "motifs.deep: unary operators nested 3 deep"),
])
def test_motif_validation_errors_name_the_motif(motifs, fragment):
    with pytest.raises(GrammarError) as e:
        Grammar.from_dict(_with_motifs(motifs))
    assert fragment in str(e.value)


def test_motif_validation_against_the_rest_of_the_grammar():
    with pytest.raises(GrammarError, match="motifs.f: uses t but system.time_share is 0"):
        Grammar.from_dict(_with_motifs({"f": {"expr": "mul C sin mul C t"}}, system={"time_share": 0.0}))
    with pytest.raises(GrammarError, match="tree.motif_share is > 0 but the grammar has no"):
        Grammar.from_dict({"tree": {"motif_share": 0.3}})
    with pytest.raises(GrammarError, match="tree.motif_share: 1.5 must be"):
        Grammar.from_dict(_with_motifs({"a": {"expr": "mul C x"}}, share=1.5))
    with pytest.raises(GrammarError, match="motifs.long: 15 tokens, more than tree.max_component_tokens"):
        Grammar.from_dict(_with_motifs({"long": {"expr": "add add add mul C x mul C x mul C x mul C x"}},
                                       tree={"max_component_tokens": 10, "max_system_tokens": 30}))
    # a restricted grammar: div is not among its operators, so a saturation motif is refused
    with pytest.raises(GrammarError, match="motifs.mm: operator div is not among"):
        Grammar.from_dict(_with_motifs({"mm": {"expr": "div mul C x add C x"}},
                                       operators={"unary": {}, "binary": {"add": 1.0, "mul": 1.0}}))


def test_motif_file_errors_name_file_and_motif(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[tree]\nmotif_share = 0.2\n[motifs]\nhill = { weight = 1.0, expr = "mul C tan x" }\n')
    with pytest.raises(GrammarError, match=r"bad\.toml: motifs\.hill: operator tan is not among"):
        Grammar.from_file(bad)


def test_motif_frequencies_follow_the_weights():
    weights = {"lin": 1.0, "mass": 3.0, "mm": 2.0, "hill": 0.5}
    exprs = {"lin": "mul C x", "mass": "mul C mul x y", "mm": "div mul C x add C x", "hill": "div C add C pow2 x"}
    g = Grammar.from_dict(_with_motifs({k: {"weight": w, "expr": exprs[k]} for k, w in weights.items()}, share=0.3))
    s = SkeletonSampler(g, 123)
    for _ in range(4000):
        s.sample()
    n = sum(s.motif_counts.values())
    assert n > 3000
    total = sum(weights.values())
    for k, w in weights.items():
        p = w / total
        assert abs(s.motif_counts[k] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (k, s.motif_counts[k], n)


def test_motif_share_is_the_share_of_subtrees():
    g = Grammar.from_dict(_with_motifs({"lin": {"expr": "mul C x"}}, share=1.0, system={"time_share": 0.0}))
    s = SkeletonSampler(g, 5)
    for _ in range(200):
        sk = s.sample()
        if not isinstance(sk, str):  # every component is the motif itself (every subtree with an operator is)
            assert all(to_prefix(c)[:2] == ["mul", "C"] and len(to_prefix(c)) == 3 for c in sk.components)
    # motifs with t are drawn only in systems that may use t
    g = Grammar.from_dict(_with_motifs({"lin": {"expr": "mul C x"}, "f": {"expr": "mul C sin mul C t", "weight": 5}},
                                       share=1.0, system={"time_share": 0.0001}))
    s = SkeletonSampler(g, 5)
    for _ in range(300):
        s.sample()
    assert s.motif_counts["f"] == 0 and s.motif_counts["lin"] > 0


def test_motifs_are_deterministic_and_keep_the_default_stream():
    g = Grammar.from_file(MOTIFS_PATH)
    a, b = generate_chunk(g, 3, 1), generate_chunk(g, 3, 1)
    assert a.systems and [s.skeleton for s in a.systems] == [s.skeleton for s in b.systems]
    assert all((x.constants == y.constants).all() and (x.x == y.x).all() for x, y in zip(a.systems, b.systems))
    assert [s.skeleton for s in generate_chunk(g, 4, 1).systems] != [s.skeleton for s in a.systems]
    # the same file without its motifs samples exactly what the default grammar samples
    raw = tomllib.loads(Path(MOTIFS_PATH).read_text())
    raw["tree"]["motif_share"] = 0.0
    plain = Grammar.from_dict(raw)
    d = generate_chunk(default_grammar(), 3, 1)
    p = generate_chunk(plain, 3, 1)
    assert [s.skeleton for s in p.systems] == [s.skeleton for s in d.systems]


def test_motif_systems_use_motif_structure():
    g = Grammar.from_file(MOTIFS_PATH)
    systems = [s for i in range(3) for s in generate_chunk(g, 9, i).systems]
    text = " | ".join(s.skeleton.key for s in systems)
    # the saturation x/(C + x) and mass action x*y shapes appear among accepted systems
    assert "div" in text and "mul x_0 x_1" in text
