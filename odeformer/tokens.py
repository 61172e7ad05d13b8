"""Output tokens: systems of equations <-> token ids.

A system is written component by component in prefix notation, components separated by ``|``,
between ``<bos>`` and ``<eos>``. A constant is two tokens: a signed two-digit mantissa (``+3.4``) and a
decimal exponent (``E-1``), so a decoded equation carries usable starting values (about 1% precision)
that the inference stage refits. The vocabulary is built from a grammar: the operators it can generate,
its rational exponents, its variables and ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from data_gen.expressions import CONST, Tree, arity, from_prefix, to_prefix, var_name

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "|"
EXP_MIN, EXP_MAX = -4, 4
MANTISSAS = [f"{s}{m / 10:.1f}" for s in "+-" for m in range(10, 100)]
EXPONENTS = [f"E{e:+d}" for e in range(EXP_MIN, EXP_MAX + 1)]


def encode_constant(v: float) -> tuple[str, str]:
    """Two tokens for a constant: mantissa with two significant digits, and exponent (clipped)."""
    if v == 0 or not math.isfinite(v):
        v = 1e-4 if v == 0 else math.copysign(10.0**EXP_MAX * 9.9, v)
    e = math.floor(math.log10(abs(v)))
    m = round(abs(v) / 10.0**e, 1)
    if m >= 10.0:
        m, e = 1.0, e + 1
    if e < EXP_MIN:
        m, e = 1.0, EXP_MIN
    elif e > EXP_MAX:
        m, e = 9.9, EXP_MAX
    return f"{'-' if v < 0 else '+'}{m:.1f}", f"E{e:+d}"


def decode_constant(mantissa: str, exponent: str) -> float:
    return float(mantissa) * 10.0 ** int(exponent[1:])


@dataclass(frozen=True)
class Vocabulary:
    """Token list; ids are positions. Built from a grammar with :meth:`for_grammar`."""

    tokens: tuple[str, ...]

    @classmethod
    def for_grammar(cls, grammar, extra_operators: Sequence[str] = ()) -> Vocabulary:
        ops = sorted(set(grammar.output_operators) | set(extra_operators))
        exps = sorted(grammar["operators"]["pow_exponents"])
        variables = [var_name(i) for i in range(grammar.max_dim)]
        toks = [PAD, BOS, EOS, SEP, "t", *variables, *ops, *exps, *MANTISSAS, *EXPONENTS]
        return cls(tuple(toks))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def max_dim(self) -> int:
        """Number of state variables the vocabulary can write (and the model's inputs are sized for)."""
        return _max_dim(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return _index(self.tokens)

    def id(self, tok: str) -> int:
        return self.index[tok]

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    # --- systems <-> tokens
    def encode(self, components: Sequence[Tree], consts: Sequence[float]) -> list[int]:
        """Token ids (with <bos> and <eos>) of a system; constants in prefix order over components."""
        it = iter(consts)
        idx = self.index
        out = [self.bos_id]
        for i, comp in enumerate(components):
            if i:
                out.append(idx[SEP])
            for tok in to_prefix(comp):
                if tok == CONST:
                    m, e = encode_constant(float(next(it)))
                    out += [idx[m], idx[e]]
                else:
                    if tok not in idx:
                        raise KeyError(f"token {tok!r} is not in the vocabulary")
                    out.append(idx[tok])
        out.append(self.eos_id)
        return out

    def decode(self, ids: Sequence[int]) -> tuple[tuple[Tree, ...], list[float]]:
        """Components and constants of a token sequence; raises ValueError when it is not a valid system."""
        toks = [self.tokens[i] for i in ids]
        if toks and toks[0] == BOS:
            toks = toks[1:]
        if EOS in toks:
            toks = toks[: toks.index(EOS)]
        else:
            raise ValueError("no <eos>")
        components, consts, cur = [], [], []
        i = 0
        while i <= len(toks):
            tok = toks[i] if i < len(toks) else SEP
            if tok == SEP:
                components.append(from_prefix(cur))
                cur = []
            elif tok[0] in "+-" and len(tok) == 4 and tok[2] == ".":
                if i + 1 >= len(toks) or not toks[i + 1].startswith("E"):
                    raise ValueError("mantissa without exponent")
                consts.append(decode_constant(tok, toks[i + 1]))
                cur.append(CONST)
                i += 1
            elif tok.startswith("E") or tok in (PAD, BOS):
                raise ValueError(f"unexpected token {tok}")
            else:
                cur.append(tok)
            i += 1
        return tuple(components), consts

    def kinds(self) -> list[int]:
        """Per token: its arity for operators, 0 for complete leaves, -1 for a mantissa (needs an exponent),
        -2 for an exponent, -3 for special tokens. Used to mask invalid continuations while decoding."""
        out = []
        for tok in self.tokens:
            if tok in (PAD, BOS, EOS, SEP):
                out.append(-3)
            elif tok in MANTISSAS:
                out.append(-1)
            elif tok in EXPONENTS:
                out.append(-2)
            else:
                out.append(arity(tok))
        return out


_INDEX_CACHE: dict[tuple, dict[str, int]] = {}


@lru_cache(maxsize=64)
def _max_dim(tokens: tuple[str, ...]) -> int:
    return sum(1 for tok in tokens if tok.startswith("x_"))


def _index(tokens: tuple[str, ...]) -> dict[str, int]:
    idx = _INDEX_CACHE.get(tokens)
    if idx is None:
        idx = {t: i for i, t in enumerate(tokens)}
        _INDEX_CACHE[tokens] = idx
    return idx
