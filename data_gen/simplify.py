"""Light, bounded simplification of skeletons (trees whose constants are free placeholders ``C``).

SymPy costs milliseconds per expression; the generator needs microseconds. Since every ``C`` is
resampled after simplification, we only need rules that keep the *family* of functions: fold
constant-only subtrees into one ``C``, flatten sums and products, merge constant terms and factors,
combine like terms (``C*x + x -> C*x``, ``x - x`` vanishes) and repeated factors (``x*x -> x**2``,
``x/x`` cancels), drop inverse pairs (``log(exp(a))``, ``inv(inv(a))``...), and sort the operands of
sums and products so equal skeletons get equal prefix strings. Every rule shrinks or reorders the
tree, so the cost is bounded by a few passes over it.
"""

from __future__ import annotations

import math
from fractions import Fraction

from data_gen.expressions import CONST, Tree, is_literal, to_prefix

_INVERSE_PAIRS = {("log", "exp"), ("exp", "log"), ("inv", "inv"), ("neg", "neg")}
_IDEMPOTENT = {"abs"}
_POWER_OPS = {"pow2": 2, "pow3": 3, "inv": -1}


def key(node: Tree) -> str:
    return " ".join(to_prefix(node))


def simplify(tree: Tree, exponents: frozenset[str] = frozenset()) -> Tree:
    """Simplified skeleton. ``exponents``: rational literals ``pow`` may use (beyond pow2/pow3/inv)."""
    return _Simplifier(exponents).run(tree)


class _Simplifier:
    def __init__(self, exponents: frozenset[str]):
        self.exponents = exponents

    def run(self, node: Tree) -> Tree:
        if isinstance(node, str):
            return CONST if is_literal(node) else node
        op = node[0]
        if op in ("add", "sub", "neg"):
            return self.sum(node)
        if op in ("mul", "div", "inv", "pow2", "pow3"):
            return self.product(node)
        if op == "pow":
            base = self.run(node[1])
            return CONST if base == CONST else ("pow", base, node[2])
        child = self.run(node[1])
        if child == CONST:
            return CONST
        if not isinstance(child, str):
            if (op, child[0]) in _INVERSE_PAIRS:
                return child[1]
            if op in _IDEMPOTENT and child[0] == op:
                return child
            if op == "abs" and child[0] == "pow2":
                return child
            if op == "sqrt" and child[0] == "pow2":
                return ("abs", child[1])
        return (op, child)

    # --- sums: a list of (sign, term); a term with a constant coefficient absorbs its sign
    def _terms(self, node: Tree, sign: int, out: list) -> None:
        if not isinstance(node, str) and node[0] in ("add", "sub", "neg"):
            if node[0] == "neg":
                self._terms(node[1], -sign, out)
            else:
                self._terms(node[1], sign, out)
                self._terms(node[2], sign if node[0] == "add" else -sign, out)
            return
        r = self.run(node)
        if not isinstance(r, str) and r[0] in ("add", "sub", "neg"):
            self._terms(r, sign, out)  # a term that simplified into a sum
        else:
            out.append((sign, r))

    def sum(self, node: Tree) -> Tree:
        raw: list = []
        self._terms(node, 1, raw)
        has_const = False
        groups: dict[str, list] = {}  # key of the term without coefficient -> [core, unit signs, has C]
        for sign, term in raw:
            if term == CONST:
                has_const = True
                continue
            core, coef = _split_coefficient(term)
            g = groups.setdefault(key(core), [core, 0, False])
            if coef:
                g[2] = True
            else:
                g[1] += sign
        terms = []
        for k in sorted(groups):
            core, units, with_c = groups[k]
            if with_c or abs(units) > 1:
                terms.append((1, _with_coefficient(core)))
            elif units:
                terms.append((units, core))
        if not terms:
            return CONST
        if has_const:
            terms.append((1, CONST))
        first = next((i for i, (s, _) in enumerate(terms) if s > 0), None)
        if first is None:
            return ("neg", _build_sum([(1, t) for _, t in terms]))
        terms.insert(0, terms.pop(first))
        return _build_sum(terms)

    # --- products: a list of (factor, integer exponent), constants merged into one C
    def _factors(self, node: Tree, power: int, out: list) -> None:
        if not isinstance(node, str):
            op = node[0]
            if op == "mul":
                self._factors(node[1], power, out)
                self._factors(node[2], power, out)
                return
            if op == "div":
                self._factors(node[1], power, out)
                self._factors(node[2], -power, out)
                return
            if op in _POWER_OPS:
                self._factors(node[1], power * _POWER_OPS[op], out)
                return
        r = self.run(node)
        if not isinstance(r, str) and r is not node and (r[0] in ("mul", "div") or r[0] in _POWER_OPS):
            self._factors(r, power, out)  # a factor that simplified into a product
        else:
            out.append((r, power))

    def product(self, node: Tree) -> Tree:
        raw: list = []
        self._factors(node, 1, raw)
        has_const = False
        negative = False
        powers: dict[str, list] = {}
        for factor, p in raw:
            if factor == CONST:
                has_const = True
                continue
            if not isinstance(factor, str) and factor[0] == "neg":
                negative ^= p % 2 != 0  # (-a)**2 is a**2
                factor = factor[1]
            g = powers.setdefault(key(factor), [factor, 0])
            g[1] += p
        exps = [p for _, p in powers.values() if p]
        if not exps:
            return CONST
        common = math.gcd(*exps)  # x**2*y**2/z**2 -> (x*y/z)**2: undo distributing a power
        num, den = [], []
        for k in sorted(powers):
            factor, p = powers[k]
            if p > 0:
                num.append(self._power(factor, p // common))
            elif p < 0:
                den.append(self._power(factor, -p // common))
        out = _build_product(num) if num else None
        if den:
            d = _build_product(den)
            out = ("div", out, d) if out is not None else ("inv", d)
        out = self._power(out, common)
        if has_const and (_all_coefficients(out) or (common == 1 and any(_all_coefficients(f) for f in num))):
            has_const = False  # C*(C*x + C) is the family (C*x + C): the sum absorbs the factor
        if has_const:
            out = ("mul", CONST, out)
        return ("neg", out) if negative and not has_const else out

    def _power(self, factor: Tree, p: int) -> Tree:
        if p == 1:
            return factor
        if p == 2:
            return ("pow2", factor)
        if p == 3:
            return ("pow3", factor)
        if str(Fraction(p)) in self.exponents:
            return ("pow", factor, str(p))
        if p % 2 == 0:
            return ("pow2", self._power(factor, p // 2))
        if p % 3 == 0:
            return ("pow3", self._power(factor, p // 3))
        return ("mul", factor, self._power(factor, p - 1))


def _split_coefficient(term: Tree) -> tuple[Tree, bool]:
    """(term without its constant factor, whether it had one)."""
    if not isinstance(term, str) and term[0] == "mul" and term[1] == CONST:
        return term[2], True
    return term, False


def _all_coefficients(node: Tree) -> bool:
    """A sum each of whose terms has a constant coefficient (or is a constant)."""
    if isinstance(node, str) or node[0] not in ("add", "sub"):
        return False
    for child in node[1:]:
        if not (child == CONST or _split_coefficient(child)[1] or _all_coefficients(child)):
            return False
    return True


def _with_coefficient(core: Tree) -> Tree:
    return ("mul", CONST, core)


def _build_sum(terms: list) -> Tree:
    node = terms[0][1]
    for sign, t in terms[1:]:
        node = ("add" if sign > 0 else "sub", node, t)
    return node


def _build_product(factors: list) -> Tree:
    # right-nested so that a leading C stays the left child: C*(x*y)
    node = factors[-1]
    for f in reversed(factors[:-1]):
        node = ("mul", f, node)
    return node
