"""Random ODE systems from a grammar: skeletons (trees with free constants) and their instances.

The hot path is plain Python on tuples (no SymPy): a skeleton is sampled, lightly simplified
(:mod:`data_gen.simplify`) and checked once, then instantiated many times with fresh constants and
initial conditions by vectorised numpy draws.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from data_gen.expressions import CONST, TIME, Tree, is_var, size, to_prefix, var_name
from data_gen.grammar import VARIABLE_PLACEHOLDERS, Grammar
from data_gen.simplify import key, simplify


@dataclass(frozen=True)
class Skeleton:
    """A system dx_i/dt = f_i(x, t) whose constants are placeholders ``C`` (in prefix order)."""

    components: tuple[Tree, ...]
    uses_time: bool

    @property
    def dim(self) -> int:
        return len(self.components)

    @cached_property
    def key(self) -> str:
        """Canonical string, insensitive to the signs of coefficient-free terms (for de-duplication).
        Computed once per skeleton (its instances share the object, also after pickling a chunk), so
        the process collecting chunks does not recompute it for every system."""
        return " | ".join(key(c) for c in self.components).replace("sub", "add").replace("neg ", "")

    @property
    def n_constants(self) -> int:
        return sum(to_prefix(c).count(CONST) for c in self.components)

    @property
    def n_tokens(self) -> int:
        return sum(size(c) for c in self.components) + self.dim - 1


class SkeletonSampler:
    """Draws skeletons from a grammar; ``sample()`` returns a Skeleton or the name of a rejection reason."""

    def __init__(self, grammar: Grammar, seed: int):
        self.g = grammar
        self.rng = random.Random(seed)
        self.unary_ops = list(grammar.unary)
        self.unary_w = list(grammar.unary.values())
        self.binary_ops = list(grammar.binary)
        self.binary_w = list(grammar.binary.values())
        self.unary_total = sum(self.unary_w)
        self.binary_total = sum(self.binary_w)
        self.exponents = grammar["operators"]["pow_exponents"]
        self.exponent_set = frozenset(self.exponents)
        tree = grammar["tree"]
        self.ops_range = tree["ops_per_component"]
        self.leaf_w = tree["leaf_weights"]
        self.affine = tree["affine_share"]
        self.max_unary_depth = tree["max_unary_depth"]
        system = grammar["system"]
        self.dims = list(range(system["min_dim"], system["max_dim"] + 1))
        self.dim_w = system["dim_weights"]
        # motifs (grammar [motifs], tree.motif_share): with share 0 no random number is drawn for them,
        # so grammars without motifs sample exactly what they sampled before motifs existed
        self.motif_share = grammar.motif_share
        self.motifs = grammar.motifs if self.motif_share > 0 else []
        self.motif_counts: Counter = Counter()  # motif name -> times drawn, for tests and reports

    # --- motifs
    def _motif(self, dim: int, use_time: bool, unary_depth: int) -> Tree | None:
        """A motif instance (placeholders filled in), or None when no motif fits here."""
        room = self.max_unary_depth - unary_depth
        eligible = [m for m in self.motifs if (use_time or not m.uses_time) and m.unary_depth <= room]
        if not eligible:
            return None
        m = self.rng.choices(eligible, [m.weight for m in eligible])[0]
        self.motif_counts[m.name] += 1
        letters = [v for v in VARIABLE_PLACEHOLDERS if v in _leaf_names(m.tree)]
        if len(letters) <= dim:
            chosen = self.rng.sample(range(dim), len(letters))
        else:  # more letters than variables: some coincide (x*y in one variable is x**2)
            chosen = [self.rng.randrange(dim) for _ in letters]
        return _fill(m.tree, {v: var_name(i) for v, i in zip(letters, chosen)})

    # --- trees
    def _leaf(self, dim: int, use_time: bool) -> Tree:
        w_var = self.leaf_w.get("variable", 0.0)
        w_const = self.leaf_w.get("constant", 0.0)
        w_time = self.leaf_w.get("time", 0.0) if use_time else 0.0
        u = self.rng.random() * (w_var + w_const + w_time)
        if u < w_var:
            leaf: Tree = var_name(self.rng.randrange(dim))
        elif u < w_var + w_const:
            return CONST
        else:
            leaf = TIME
        return ("mul", CONST, leaf) if self.rng.random() < self.affine else leaf

    def _tree(self, n_ops: int, dim: int, use_time: bool, unary_depth: int) -> Tree:
        if n_ops == 0:
            return self._leaf(dim, use_time)
        if self.motifs and self.rng.random() < self.motif_share:
            motif = self._motif(dim, use_time, unary_depth)
            if motif is not None:
                return motif
        allow_unary = self.unary_total > 0 and unary_depth < self.max_unary_depth
        p_unary = self.unary_total / (self.unary_total + self.binary_total) if allow_unary else 0.0
        if self.binary_total == 0 or (allow_unary and self.rng.random() < p_unary):
            if not allow_unary:  # only unary operators and the depth is used up: stop here
                return self._leaf(dim, use_time)
            op = self.rng.choices(self.unary_ops, self.unary_w)[0]
            child = self._tree(n_ops - 1, dim, use_time, unary_depth + 1)
            if self.rng.random() < self.affine:
                child = ("mul", CONST, child)
            if self.rng.random() < self.affine / 2:
                child = ("add", child, CONST)
            return (op, child)
        op = self.rng.choices(self.binary_ops, self.binary_w)[0]
        if op == "pow":
            return ("pow", self._tree(n_ops - 1, dim, use_time, unary_depth), self.rng.choice(self.exponents))
        left = self.rng.randrange(n_ops)
        return (op, self._tree(left, dim, use_time, unary_depth),
                self._tree(n_ops - 1 - left, dim, use_time, unary_depth))

    def sample(self) -> Skeleton | str:
        dim = self.rng.choices(self.dims, self.dim_w)[0]
        use_time = self.rng.random() < self.g["system"]["time_share"]
        tree_cfg = self.g["tree"]
        comps = []
        used: set[str] = set()
        n_tokens = 0
        for _ in range(dim):
            n_ops = self.rng.randint(*self.ops_range)
            comp = simplify(self._tree(n_ops, dim, use_time, 0), self.exponent_set)
            toks = to_prefix(comp)
            if len(toks) > tree_cfg["max_component_tokens"]:
                return "too_long"
            comps.append(comp)
            n_tokens += len(toks) + 1
            leaves = {tok for tok in toks if is_var(tok) or tok == TIME}
            if not leaves:
                return "constant"
            used |= leaves
        if len(used - {TIME}) < dim:
            return "unused_variable"
        if use_time and TIME not in used:
            return "time_unused"
        if n_tokens - 1 > tree_cfg["max_system_tokens"]:
            return "too_long"
        return Skeleton(tuple(comps), use_time)


def _leaf_names(tree: Tree) -> set[str]:
    if isinstance(tree, str):
        return {tree}
    return set().union(*(_leaf_names(c) for c in tree[1:]))


def _fill(tree: Tree, names: dict[str, str]) -> Tree:
    if isinstance(tree, str):
        return names.get(tree, tree)
    return (tree[0],) + tuple(_fill(c, names) for c in tree[1:])


def _log_uniform_signed(rng: np.random.Generator, shape, magnitude, negative_share) -> np.ndarray:
    lo, hi = np.log(magnitude[0]), np.log(magnitude[1])
    mag = np.exp(rng.uniform(lo, hi, size=shape))
    return np.where(rng.random(shape) < negative_share, -mag, mag)


def sample_constants(grammar: Grammar, rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """(k, n) free constants: magnitude log-uniform, random sign."""
    c = grammar["constants"]
    return _log_uniform_signed(rng, (k, n), c["magnitude"], c["negative_share"])


def sample_initial_conditions(grammar: Grammar, rng: np.random.Generator, k: int, dim: int) -> np.ndarray:
    """(k, per_system, dim) initial conditions."""
    ic = grammar["initial_conditions"]
    return _log_uniform_signed(rng, (k, ic["per_system"], dim), ic["magnitude"], ic["negative_share"])


def sample_time_spans(grammar: Grammar, rng: np.random.Generator, k: int) -> np.ndarray:
    return rng.uniform(*grammar["time"]["span"], size=k)
