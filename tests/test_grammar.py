"""Grammar files: validation errors name the key; the default grammar can express all of ODEBench."""

import json
from pathlib import Path

import pytest
import sympy as sp

from data_gen.expressions import from_sympy, var_name
from data_gen.grammar import DEFAULT_GRAMMAR_PATH, Grammar, GrammarError, default_grammar

ODEBENCH = Path(__file__).resolve().parent.parent / "bench" / "data" / "odebench.json"


def test_default_grammar_loads_and_hash_is_stable():
    g = default_grammar()
    assert g.max_dim == 4
    assert {"sin", "cos", "exp", "log", "sqrt", "tanh", "abs", "pow2", "pow3", "inv"} <= g.operators
    assert g.sha256() == Grammar.from_file(DEFAULT_GRAMMAR_PATH).sha256()
    assert g.sha256() == Grammar.from_dict(json.loads(g.to_json())).sha256()


@pytest.mark.parametrize("raw, fragment", [
    ({"nonsense": {}}, "unknown section [nonsense]"),
    ({"system": {"max_dims": 3}}, "system.max_dims: unknown key"),
    ({"operators": {"unary": {"sinus": 1.0}}}, "operators.unary.sinus: unknown unary operator"),
    ({"operators": {"binary": {"mul": -1.0}}}, "operators.binary.mul: weight must be"),
    ({"operators": {"binary": {"mul": "heavy"}}}, "operators.binary.mul: weight must be"),
    ({"constants": {"magnitude": [10.0, 1.0]}}, "constants.magnitude: min 10.0 is larger than max 1.0"),
    ({"constants": {"magnitude": [0.0, 1.0]}}, "constants.magnitude: range [0.0, 1.0] must be > 0"),
    ({"tree": {"ops_per_component": [1, 2, 3]}}, "tree.ops_per_component: expected a range"),
    ({"system": {"max_dim": 7}}, "system.max_dim: 7 must be"),
    ({"system": {"min_dim": 3, "max_dim": 2, "dim_weights": [1.0]}}, "system.min_dim 3 is larger"),
    ({"system": {"max_dim": 2, "dim_weights": [1.0, 1.0, 1.0]}}, "system.dim_weights: expected 2 weights"),
    ({"operators": {"pow_exponents": ["x/2"]}}, "operators.pow_exponents: 'x/2' is not a rational"),
    ({"operators": {"binary": {"pow": 1.0}, "pow_exponents": []}}, "operators.pow_exponents: binary pow"),
    ({"system": {"time_share": 1.5}}, "system.time_share: 1.5 must be"),
    ({"integration": {"rtol": 0}}, "integration.rtol: 0 must be >"),
    ({"corruption": {"points": [30, 5000]}}, "corruption.points: max is larger than time.grid_points"),
])
def test_validation_errors_name_the_key(raw, fragment):
    with pytest.raises(GrammarError) as e:
        Grammar.from_dict(raw)
    assert fragment in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[operators]\nunary = { sinh = 1.0, frob = 2.0 }\n")
    with pytest.raises(GrammarError, match=r"bad\.toml: operators\.unary\.frob: unknown unary operator"):
        Grammar.from_file(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[system\n")
    with pytest.raises(GrammarError, match="not valid TOML"):
        Grammar.from_file(broken)
    with pytest.raises(GrammarError, match="cannot read"):
        Grammar.from_file(tmp_path / "missing.toml")


def _odebench_systems():
    return json.loads(ODEBENCH.read_text())["systems"]


def test_every_odebench_system_is_expressible_in_the_default_grammar():
    g = default_grammar()
    systems = _odebench_systems()
    assert len(systems) == 63
    for system in systems:
        rhs = system["substituted"][0]
        symbols = {var_name(i): sp.Symbol(var_name(i)) for i in range(len(rhs))}
        names = {s: n for n, s in symbols.items()}
        for component in rhs:
            expr = sp.parse_expr(component, local_dict=symbols)
            tree, consts = from_sympy(expr, names)
            assert not g.missing(tree), (system["id"], component, g.missing(tree))


def test_missing_reports_what_a_grammar_lacks():
    g = Grammar.from_dict({"operators": {"unary": {}, "binary": {"add": 1.0, "mul": 1.0}},
                           "system": {"max_dim": 2, "dim_weights": [1.0, 1.0], "time_share": 0.0}})
    x = sp.Symbol("x_0")
    t = sp.Symbol("t")
    tree, _ = from_sympy(sp.sin(x) + x**2 + t, {x: "x_0", t: "t"})
    assert g.missing(tree) == {"sin", "time t"}
    tree, _ = from_sympy(sp.Symbol("x_3"), {sp.Symbol("x_3"): "x_3"})
    assert g.missing(tree) == {"variable x_3"}
