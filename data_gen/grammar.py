"""Grammar files (DESIGN.md 3.5): which random ODE systems the generator samples.

A grammar is a TOML file with the sections of ``data_gen/grammars/default.toml``. Loading validates
every key: unknown sections, keys and operators, bad weights and impossible ranges raise
:class:`GrammarError` with a message naming the key.

An optional ``[motifs]`` table (``data_gen/grammars/motifs.toml``) lists weighted templates in the
grammar's own prefix syntax (the tokens the model writes: ``div mul C x add C x``) with placeholders
``C`` (a free constant), ``x``, ``y``, ``z`` (any state variable; one letter is one variable within a
motif, different letters are different variables where the system has enough) and ``t`` (time);
``tree.motif_share`` is the probability that a subtree the sampler draws is a motif instead. Motifs may
only use operators the grammar can output, so they never change the output vocabulary. Grammars
without motifs normalise (and hash) exactly as before motifs existed.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from data_gen.expressions import BINARY_OPS, CONST, MAX_DIM_LIMIT, TIME, UNARY_OPS, is_literal

DEFAULT_GRAMMAR_PATH = Path(__file__).resolve().parent / "grammars" / "default.toml"


class GrammarError(ValueError):
    """A grammar file is invalid; the message names the offending key."""


def _range(lo_min: float, hi_max: float = math.inf, integer: bool = False, positive: bool = False):
    def check(key: str, v: Any) -> list:
        if not (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)):
            raise GrammarError(f"{key}: expected a range [min, max] of two numbers, got {v!r}")
        if integer and not all(float(x).is_integer() for x in v):
            raise GrammarError(f"{key}: expected whole numbers, got {v!r}")
        lo, hi = v
        if lo > hi:
            raise GrammarError(f"{key}: min {lo} is larger than max {hi}")
        if lo < lo_min or hi > hi_max or (positive and lo <= 0):
            bound = "> 0" if positive else f"within [{lo_min}, {hi_max}]"
            raise GrammarError(f"{key}: range {v!r} must be {bound}")
        return [int(x) for x in v] if integer else [float(x) for x in v]

    return check


def _number(lo: float, hi: float = math.inf, integer: bool = False, open_lo: bool = False):
    def check(key: str, v: Any):
        if not _is_number(v) or (integer and not float(v).is_integer()):
            raise GrammarError(f"{key}: expected {'a whole number' if integer else 'a number'}, got {v!r}")
        if v < lo or v > hi or (open_lo and v == lo):
            raise GrammarError(f"{key}: {v} must be {'>' if open_lo else '>='} {lo} and <= {hi}")
        return int(v) if integer else float(v)

    return check


def _weights(allowed: dict | set, what: str):
    def check(key: str, v: Any) -> dict:
        if not isinstance(v, dict):
            raise GrammarError(f"{key}: expected a table of {what} = weight")
        out = {}
        for name, w in v.items():
            if name not in allowed:
                raise GrammarError(f"{key}.{name}: unknown {what} (known: {', '.join(sorted(allowed))})")
            if not _is_number(w) or w < 0 or not math.isfinite(w):
                raise GrammarError(f"{key}.{name}: weight must be a finite number >= 0, got {w!r}")
            out[name] = float(w)
        return out

    return check


def _weight_list(key: str, v: Any) -> list:
    if not (isinstance(v, list) and v and all(_is_number(x) and x >= 0 and math.isfinite(x) for x in v)):
        raise GrammarError(f"{key}: expected a non-empty list of finite weights >= 0, got {v!r}")
    if sum(v) <= 0:
        raise GrammarError(f"{key}: weights sum to 0")
    return [float(x) for x in v]


def _exponents(key: str, v: Any) -> list:
    if not isinstance(v, list):
        raise GrammarError(f"{key}: expected a list of rational exponents such as \"1/2\"")
    out = []
    for e in v:
        try:
            r = Fraction(str(e))
        except (ValueError, ZeroDivisionError):
            raise GrammarError(f"{key}: {e!r} is not a rational number like \"3/2\"") from None
        if r in (0, 1):
            raise GrammarError(f"{key}: exponent {e} is trivial")
        if abs(r) > 10 or r.denominator > 12:
            raise GrammarError(f"{key}: exponent {e} is out of range (|p/q| <= 10, q <= 12)")
        out.append(str(r))
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unit(key: str, v: Any) -> float:
    return _number(0.0, 1.0)(key, v)


#: section -> key -> (validator, default)
SCHEMA: dict[str, dict[str, tuple]] = {
    "system": {
        "min_dim": (_number(1, MAX_DIM_LIMIT, integer=True), 1),
        "max_dim": (_number(1, MAX_DIM_LIMIT, integer=True), 4),
        "dim_weights": (_weight_list, None),
        "time_share": (_unit, 0.15),
    },
    "operators": {
        "unary": (_weights(UNARY_OPS, "unary operator"), {}),
        "binary": (_weights(BINARY_OPS, "binary operator"), {"add": 1.0, "mul": 1.0}),
        "pow_exponents": (_exponents, []),
    },
    "tree": {
        "ops_per_component": (_range(0, 30, integer=True), [1, 8]),
        "leaf_weights": (_weights({"variable", "constant", "time"}, "leaf kind"),
                         {"variable": 5.0, "constant": 2.0, "time": 1.5}),
        "affine_share": (_unit, 0.5),
        "max_unary_depth": (_number(0, 10, integer=True), 2),
        "max_component_tokens": (_number(3, 256, integer=True), 40),
        "max_system_tokens": (_number(3, 1024, integer=True), 110),
        "instances_per_skeleton": (_number(1, 1024, integer=True), 8),
    },
    "constants": {
        "magnitude": (_range(0, positive=True), [0.05, 10.0]),
        "negative_share": (_unit, 0.4),
    },
    "initial_conditions": {
        "magnitude": (_range(0, positive=True), [0.1, 10.0]),
        "negative_share": (_unit, 0.25),
        "per_system": (_number(1, 16, integer=True), 2),
    },
    "time": {
        "span": (_range(0, positive=True), [5.0, 15.0]),
        "grid_points": (_number(16, 8192, integer=True), 512),
    },
    "integration": {
        "rtol": (_number(0, 1, open_lo=True), 3e-7),
        "atol": (_number(0, 1, open_lo=True), 3e-9),
        "max_steps": (_number(10, 10**6, integer=True), 300),
        "bound": (_number(0, 1e12, open_lo=True), 1000.0),
        "verify_factor": (_number(0, 1e6), 100.0),
    },
    "corruption": {
        "points": (_range(2, integer=True), [30, 300]),
        "drop": (_range(0, 0.95), [0.0, 0.6]),
        "window": (_range(0, 1, positive=True), [0.5, 1.0]),
        "noise_multiplicative": (_range(0, 10), [0.0, 0.1]),
        "noise_additive": (_range(0, 10), [0.0, 0.1]),
        "trajectories": (_range(1, 16, integer=True), [1, 2]),
    },
}


@dataclass(frozen=True)
class Grammar:
    """A validated grammar. ``data`` holds every section with defaults filled in."""

    data: dict = field(repr=False)
    source: str = "<dict>"

    def __getitem__(self, section: str) -> dict:
        return self.data[section]

    @property
    def unary(self) -> dict[str, float]:
        return {k: w for k, w in self.data["operators"]["unary"].items() if w > 0}

    @property
    def binary(self) -> dict[str, float]:
        return {k: w for k, w in self.data["operators"]["binary"].items() if w > 0}

    @property
    def max_dim(self) -> int:
        return self.data["system"]["max_dim"]

    @property
    def operators(self) -> set[str]:
        """Every operator the grammar may generate (weight > 0)."""
        return set(self.unary) | set(self.binary)

    @property
    def output_operators(self) -> set[str]:
        """Operators that can appear in generated systems: the sampled ones plus those the skeleton
        simplifier writes for them (x*x is pow2, a sign is neg or sub, a/b*b... is inv)."""
        return _output_operators(self.data["operators"])

    @property
    def motif_share(self) -> float:
        return self.data["tree"].get("motif_share", 0.0)

    @property
    def motifs(self) -> list[Motif]:
        """The ``[motifs]`` table parsed: (name, weight, tree with placeholder leaves), weight > 0 only."""
        return [Motif(name, m["weight"], parse_motif(m["expr"])) for name, m in self.data.get("motifs", {}).items()
                if m["weight"] > 0]

    def missing(self, tree) -> set[str]:
        """What a tree uses that this grammar cannot generate: operators, exponents, variables, t."""
        from data_gen.expressions import leaves, operators

        out = {op for op in operators(tree) if op not in self.output_operators}
        exps = set(self.data["operators"]["pow_exponents"])
        for leaf in leaves(tree):
            if leaf[0].isdigit() or leaf[0] == "-":
                if leaf not in exps:
                    out.add(f"exponent {leaf}")
            elif leaf.startswith("x_") and int(leaf[2:]) >= self.max_dim:
                out.add(f"variable {leaf}")
            elif leaf == "t" and self.data["system"]["time_share"] == 0:
                out.add("time t")
        return out

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True)

    def sha256(self) -> str:
        """Hash of the normalised grammar (defaults filled in), stable across formatting."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> Grammar:
        return cls(_validate(raw), source)

    @classmethod
    def from_file(cls, path: str | Path) -> Grammar:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise GrammarError(f"{path}: cannot read grammar file ({e.strerror})") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise GrammarError(f"{path}: not valid TOML ({e})") from None
        try:
            return cls(_validate(raw), str(path))
        except GrammarError as e:
            raise GrammarError(f"{path}: {e}") from None


def _output_operators(ops_section: dict) -> set[str]:
    ops = {k for k, w in ops_section["unary"].items() if w > 0} | {k for k, w in ops_section["binary"].items() if w > 0}
    if ops & {"add", "sub"}:
        ops |= {"add", "sub", "neg"}
    if ops & {"mul", "div", "pow2", "pow3", "inv"}:
        ops |= {"mul", "pow2", "pow3"}
    if ops & {"div", "inv"}:
        ops |= {"div", "inv"}
    if "sqrt" in ops and "pow2" in ops:
        ops.add("abs")
    if ops_section["pow_exponents"]:
        ops.add("pow")
    return ops


# ----------------------------------------------------------------------------- motifs

#: motif placeholders for "any state variable" (one letter = one variable within a motif)
VARIABLE_PLACEHOLDERS = ("x", "y", "z")


@dataclass(frozen=True)
class Motif:
    name: str
    weight: float
    tree: tuple | str

    @property
    def uses_time(self) -> bool:
        return TIME in _leaf_set(self.tree)

    @property
    def unary_depth(self) -> int:
        return _unary_depth(self.tree)


def parse_motif(expr: str):
    """Tree of a motif's prefix expression, placeholders kept as leaves (``C``, ``x``, ``y``, ``z``, ``t``,
    rational literals as ``pow`` exponents). Raises ValueError with a message for the user."""
    tokens = expr.split()
    if not tokens:
        raise ValueError("empty expression")
    pos = 0

    def build():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"expression ends early: an operator lacks its operand(s) in {expr!r}")
        tok = tokens[pos]
        pos += 1
        if tok in BINARY_OPS:
            left = build()
            right = build()
            if tok == "pow":
                if isinstance(right, str) and is_literal(right) and not (isinstance(left, str) and is_literal(left)):
                    return (tok, left, right)
                raise ValueError("pow takes a base and a rational exponent literal such as 3/2 "
                                 "(write squares, cubes, inverses, roots as pow2, pow3, inv, sqrt)")
            return (tok, left, right)
        if tok in UNARY_OPS:
            return (tok, build())
        if tok in (CONST, TIME) or tok in VARIABLE_PLACEHOLDERS or is_literal(tok):
            return tok
        if tok.startswith("x_"):
            raise ValueError(f"{tok!r}: write state variables as the placeholders x, y, z (any variable)")
        raise ValueError(f"unknown token {tok!r} (operators, C, x, y, z, t and pow exponents are allowed)")

    tree = build()
    if pos != len(tokens):
        raise ValueError(f"{len(tokens) - pos} token(s) left over after a complete expression in {expr!r}")
    for node in _nodes(tree):
        if not isinstance(node, str) and node[0] != "pow":
            for child in node[1:]:
                if isinstance(child, str) and is_literal(child):
                    raise ValueError(f"literal {child!r} outside a pow exponent: write constants as C")
    if isinstance(tree, str) and is_literal(tree):
        raise ValueError(f"literal {tree!r} outside a pow exponent: write constants as C")
    return tree


def _nodes(tree):
    yield tree
    if not isinstance(tree, str):
        for child in tree[1:]:
            yield from _nodes(child)


def _leaf_set(tree) -> set[str]:
    return {n for n in _nodes(tree) if isinstance(n, str)}


def _unary_depth(tree) -> int:
    if isinstance(tree, str):
        return 0
    inner = max(_unary_depth(c) for c in tree[1:])
    return inner + 1 if tree[0] in UNARY_OPS else inner


def _operators_of(tree) -> set[str]:
    return {n[0] for n in _nodes(tree) if not isinstance(n, str)}


def _validate_motifs(raw: Any, out: dict) -> dict:
    if not isinstance(raw, dict):
        raise GrammarError("motifs: expected a table of name = { weight = ..., expr = \"...\" }")
    allowed_ops = _output_operators(out["operators"])
    exponents = set(out["operators"]["pow_exponents"])
    tree_cfg = out["tree"]
    motifs = {}
    for name, m in raw.items():
        where = f"motifs.{name}"
        if not isinstance(m, dict):
            raise GrammarError(f"{where}: expected a table {{ weight = 1.0, expr = \"mul C mul x y\" }}, got {m!r}")
        for k in m:
            if k not in ("weight", "expr"):
                raise GrammarError(f"{where}.{k}: unknown key (known: weight, expr)")
        if "expr" not in m or not isinstance(m["expr"], str):
            raise GrammarError(f"{where}.expr: expected a prefix expression string such as \"mul C mul x y\"")
        weight = m.get("weight", 1.0)
        if not _is_number(weight) or weight < 0 or not math.isfinite(weight):
            raise GrammarError(f"{where}.weight: must be a finite number >= 0, got {weight!r}")
        try:
            tree = parse_motif(m["expr"])
        except ValueError as e:
            raise GrammarError(f"{where}: {e}") from None
        foreign = sorted(_operators_of(tree) - allowed_ops)
        if foreign:
            raise GrammarError(f"{where}: operator {', '.join(foreign)} is not among the grammar's operators "
                               f"({', '.join(sorted(allowed_ops))}); motifs may not change the output vocabulary")
        leaves = _leaf_set(tree)
        for lit in sorted(x for x in leaves if is_literal(x)):
            if str(Fraction(lit)) not in exponents:
                raise GrammarError(f"{where}: exponent {lit} is not in operators.pow_exponents")
        if not leaves & (set(VARIABLE_PLACEHOLDERS) | {TIME}):
            raise GrammarError(f"{where}: uses no state variable (x, y, z) and no t, so it is a constant")
        if TIME in leaves and out["system"]["time_share"] == 0:
            raise GrammarError(f"{where}: uses t but system.time_share is 0")
        n_tokens = sum(1 for _ in _nodes(tree))
        if n_tokens > tree_cfg["max_component_tokens"]:
            raise GrammarError(f"{where}: {n_tokens} tokens, more than tree.max_component_tokens "
                               f"{tree_cfg['max_component_tokens']}")
        if _unary_depth(tree) > tree_cfg["max_unary_depth"]:
            raise GrammarError(f"{where}: unary operators nested {_unary_depth(tree)} deep, more than "
                               f"tree.max_unary_depth {tree_cfg['max_unary_depth']}")
        motifs[name] = {"weight": float(weight), "expr": " ".join(m["expr"].split())}
    return motifs


def default_grammar() -> Grammar:
    return Grammar.from_file(DEFAULT_GRAMMAR_PATH)


def _validate(raw: dict) -> dict:
    out: dict = {}
    for section in raw:
        if section not in SCHEMA and section != "motifs":
            raise GrammarError(f"unknown section [{section}] (known: {', '.join(SCHEMA)}, motifs)")
        if not isinstance(raw[section], dict):
            raise GrammarError(f"{section}: expected a table")
    # optional keys, left out of the normalised grammar when absent so that grammars without motifs
    # keep the data (and sha256) they had before motifs existed
    tree_raw = dict(raw.get("tree", {}))
    motif_share = tree_raw.pop("motif_share", None)
    for section, keys in SCHEMA.items():
        given = tree_raw if section == "tree" else raw.get(section, {})
        for key in given:
            if key not in keys:
                known = list(keys) + (["motif_share"] if section == "tree" else [])
                raise GrammarError(f"{section}.{key}: unknown key (known: {', '.join(known)})")
        out[section] = {}
        for key, (check, default) in keys.items():
            if key in given:
                out[section][key] = check(f"{section}.{key}", given[key])
            else:
                out[section][key] = default
    system = out["system"]
    if system["min_dim"] > system["max_dim"]:
        raise GrammarError(f"system.min_dim {system['min_dim']} is larger than system.max_dim {system['max_dim']}")
    n_dims = system["max_dim"] - system["min_dim"] + 1
    if system["dim_weights"] is None:
        system["dim_weights"] = [1.0] * n_dims
    elif len(system["dim_weights"]) != n_dims:
        raise GrammarError(f"system.dim_weights: expected {n_dims} weights (one per dimension "
                           f"{system['min_dim']}..{system['max_dim']}), got {len(system['dim_weights'])}")
    ops = out["operators"]
    if not any(w > 0 for w in ops["binary"].values()) and not any(w > 0 for w in ops["unary"].values()):
        raise GrammarError("operators: every operator weight is 0")
    if ops["binary"].get("pow", 0) > 0 and not ops["pow_exponents"]:
        raise GrammarError("operators.pow_exponents: binary pow has a weight but no exponents are listed")
    leaf = out["tree"]["leaf_weights"]
    if leaf.get("variable", 0) <= 0:
        raise GrammarError("tree.leaf_weights.variable: must be > 0 (systems must use their variables)")
    if system["time_share"] > 0 and leaf.get("time", 0) <= 0:
        raise GrammarError("tree.leaf_weights.time: must be > 0 when system.time_share > 0")
    tree = out["tree"]
    if tree["max_component_tokens"] > tree["max_system_tokens"]:
        raise GrammarError("tree.max_component_tokens is larger than tree.max_system_tokens")
    if motif_share is not None:
        tree["motif_share"] = _unit("tree.motif_share", motif_share)
    if "motifs" in raw:
        out["motifs"] = _validate_motifs(raw["motifs"], out)
    if tree.get("motif_share", 0) > 0 and not any(m["weight"] > 0 for m in out.get("motifs", {}).values()):
        raise GrammarError("tree.motif_share is > 0 but the grammar has no [motifs] with a weight > 0")
    corr = out["corruption"]
    if corr["trajectories"][1] > out["initial_conditions"]["per_system"]:
        raise GrammarError("corruption.trajectories: max is larger than initial_conditions.per_system")
    if corr["points"][1] > out["time"]["grid_points"]:
        raise GrammarError("corruption.points: max is larger than time.grid_points")
    return out
