"""Decoding token sequences from the model: greedy (batched), with grammar masking.

The mask keeps every partial sequence completable: a mantissa must be followed by an exponent, an
exponent only after a mantissa, ``|`` and ``<eos>`` only when the current component is complete, and
no more than ``dim`` components. ``allowed`` (token ids) restricts operators further.
"""

from __future__ import annotations

import time

import torch

from odeformer.model import ODEFormer
from odeformer.tokens import SEP, Vocabulary


class GrammarMask:
    """Tracks, per sequence, how many subtrees are still open and what may come next."""

    def __init__(self, vocab: Vocabulary, dims: torch.Tensor, allowed: torch.Tensor | None = None):
        self.kinds = torch.tensor(vocab.kinds())
        # variable index of each token (-1 for others): x_i is only allowed when i < the data's dimension
        self.var_index = torch.tensor([int(tok[2:]) if tok.startswith("x_") else -1 for tok in vocab.tokens])
        self.sep = vocab.id(SEP)
        self.eos = vocab.eos_id
        n = len(dims)
        self.dims = dims
        self.need = torch.ones(n, dtype=torch.long)  # open slots in the current component
        self.comp = torch.zeros(n, dtype=torch.long)  # index of the current component
        self.after_mantissa = torch.zeros(n, dtype=torch.bool)
        self.done = torch.zeros(n, dtype=torch.bool)
        self.allowed = allowed

    def mask(self, remaining: int | None = None) -> torch.Tensor:
        """(n, vocab) True where a token may come next. With ``remaining`` (tokens left, this one
        included), operators and two-token constants are refused once they could not be completed."""
        k = self.kinds[None, :]
        need = self.need[:, None]
        expr_tok = (k >= 0) | (k == -1)
        m = expr_tok & (need > 0) & ~self.after_mantissa[:, None]
        if remaining is not None:
            # fewest tokens to finish: a one-token leaf per open slot, a leaf and a separator per
            # component still to come, and <eos>
            finish = self.need + 2 * (self.dims - 1 - self.comp) + 1 + self.after_mantissa.long()
            cost = torch.where(k == -1, 1, torch.where(k >= 0, k, 0))  # extra tokens a choice commits to
            m &= (finish[:, None] + cost <= remaining) | ~expr_tok
        m &= self.var_index[None, :] < self.dims[:, None]
        if self.allowed is not None:
            m &= self.allowed[None, :] | (k == -1)
        m |= (k == -2) & self.after_mantissa[:, None]
        complete = (self.need == 0) & ~self.after_mantissa
        last = self.comp == self.dims - 1
        m[:, self.sep] = complete & ~last
        m[:, self.eos] = (complete & last) | self.done
        m[self.done] = False
        m[self.done, self.eos] = True
        return m

    def select(self, idx: torch.Tensor) -> None:
        """Keep the states of rows ``idx`` (beam search reorders its beams every step)."""
        for name in ("dims", "need", "comp", "after_mantissa", "done"):
            setattr(self, name, getattr(self, name)[idx])

    def update(self, tok: torch.Tensor) -> None:
        k = self.kinds[tok]
        live = ~self.done
        is_expr = (k >= 0) & live
        self.need = torch.where(is_expr, self.need - 1 + k.clamp(min=0), self.need)
        # a constant is one leaf: count it when its exponent arrives
        self.need = torch.where((k == -2) & live, self.need - 1, self.need)
        self.after_mantissa = (k == -1) & live
        sep = (tok == self.sep) & live
        self.comp = self.comp + sep.long()
        self.need = torch.where(sep, torch.ones_like(self.need), self.need)
        self.done |= tok == self.eos


@torch.no_grad()
def greedy(model: ODEFormer, vocab: Vocabulary, points: torch.Tensor, traj: torch.Tensor, mask: torch.Tensor,
           dims: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
    """Most likely token sequence per input (masked to valid systems with ``dims[i]`` components)."""
    model.eval()
    max_len = max_len or model.config.max_out_len
    cache = model.cross_cache(model.encode(points, traj, mask))
    pasts: list[dict] = [{} for _ in model.decoder]
    n = len(points)
    seq = torch.full((n, 1), vocab.bos_id, dtype=torch.long, device=points.device)
    gm = GrammarMask(vocab, dims.cpu())
    while seq.shape[1] < max_len:
        logits = model.decode_step(seq, mask, cache, pasts).float().cpu()
        logits[~gm.mask(max_len - seq.shape[1])] = -torch.inf
        tok = logits.argmax(-1)
        gm.update(tok)
        seq = torch.cat([seq, tok[:, None].to(seq.device)], dim=1)
        if gm.done.all():
            break
    return [s.tolist() for s in seq.cpu()]


@torch.no_grad()
def beam_search(model: ODEFormer, vocab: Vocabulary, points: torch.Tensor, traj: torch.Tensor, mask: torch.Tensor,
                dims: torch.Tensor, beam_size: int, max_len: int | None = None, allowed: torch.Tensor | None = None,
                length_penalty: float = 1.0, deadline: float | None = None,
                structure_only: bool = True) -> list[list[tuple[float, list[int]]]]:
    """Per input, up to ``beam_size`` finished sequences as (score, ids), best first. The score is the
    log-probability divided by length**length_penalty. All inputs and beams run as one batch. Past
    ``deadline`` (``time.monotonic()``) the search stops with what has finished.

    ``structure_only``: where a constant goes, a beam is extended by its most likely mantissa (and then
    exponent) only, scored with the probability of any constant there. Constants are refitted anyway;
    without this, most of the beam is spent on copies of one equation that differ in the second
    digit of a constant, instead of on different equations."""
    model.eval()
    max_len = max_len or model.config.max_out_len
    n, k = len(points), beam_size
    cache = model.cross_cache(model.encode(points, traj, mask), repeat=k)
    pasts: list[dict] = [{} for _ in model.decoder]  # self-attention keys/values, reordered with the beams
    mem_mask = mask.repeat_interleave(k, dim=0)
    seq = torch.full((n * k, 1), vocab.bos_id, dtype=torch.long, device=points.device)
    score = torch.full((n, k), -torch.inf)
    score[:, 0] = 0.0  # all beams start equal: expand only the first
    score = score.reshape(-1)
    gm = GrammarMask(vocab, dims.cpu().repeat_interleave(k), allowed)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    v = len(vocab)
    constant_cols = [gm.kinds == -1, gm.kinds == -2] if structure_only else []  # mantissas, exponents
    for step in range(max_len - 1):
        if deadline is not None and time.monotonic() > deadline:
            break
        logp = torch.log_softmax(model.decode_step(seq, mem_mask, cache, pasts).float(), dim=-1).cpu()
        allowed_now = gm.mask(max_len - seq.shape[1])
        logp[~allowed_now] = -torch.inf
        done = gm.done
        logp[done] = -torch.inf
        for cols in constant_cols:
            _collapse(logp, cols)
        cand = (score[:, None] + logp).reshape(n, k * v)
        top, flat = cand.topk(k, dim=1)
        parent = (flat // v) + torch.arange(n)[:, None] * k
        tok = flat % v
        parent, tok, top = parent.reshape(-1), tok.reshape(-1), top.reshape(-1)
        gm.select(parent)
        gm.update(tok)
        seq = torch.cat([seq[parent.to(seq.device)], tok[:, None].to(seq.device)], dim=1)
        for past in pasts:
            past["k"], past["v"] = past["k"][parent.to(seq.device)], past["v"][parent.to(seq.device)]
        score = top.clone()
        ended = (tok == vocab.eos_id) & torch.isfinite(top)
        for row in torch.nonzero(ended).flatten().tolist():
            finished[row // k].append((top[row].item() / (step + 2) ** length_penalty, seq[row].tolist()))
        score[ended] = -torch.inf  # a finished beam leaves the search
        gm.done |= ended
        if not torch.isfinite(score).any():
            break
        # stop when no live beam can beat the worst kept result of its input
        if all(len(f) >= k for f in finished):
            best_live = score.reshape(n, k).max(dim=1).values / (step + 2) ** length_penalty
            worst = torch.tensor([sorted(f, reverse=True)[k - 1][0] for f in finished])
            if bool((best_live <= worst).all()):
                break
    return [sorted(f, key=lambda r: -r[0])[:k] for f in finished]


def _collapse(logp: torch.Tensor, cols: torch.Tensor) -> None:
    """In place, per row: of the tokens ``cols``, only the most likely stays, with their summed probability."""
    sub = logp[:, cols]
    best = sub.argmax(dim=1, keepdim=True)
    merged = torch.full_like(sub, -torch.inf).scatter_(1, best, torch.logsumexp(sub, dim=1, keepdim=True))
    logp[:, cols] = merged


@torch.no_grad()
def sample(model: ODEFormer, vocab: Vocabulary, points: torch.Tensor, traj: torch.Tensor, mask: torch.Tensor,
           dims: torch.Tensor, n_samples: int, temperature: float = 1.0, max_len: int | None = None,
           allowed: torch.Tensor | None = None, deadline: float | None = None,
           seed: int = 0) -> list[list[tuple[float, list[int]]]]:
    """Per input, ``n_samples`` sequences drawn token by token from the masked distribution at
    ``temperature`` (diverse where beam search keeps near-duplicates), as (mean log-probability, ids),
    best first. Seeded, so a fit is repeatable."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    model.eval()
    max_len = max_len or model.config.max_out_len
    n, k = len(points), n_samples
    gen = torch.Generator().manual_seed(seed)
    cache = model.cross_cache(model.encode(points, traj, mask), repeat=k)
    pasts: list[dict] = [{} for _ in model.decoder]
    mem_mask = mask.repeat_interleave(k, dim=0)
    seq = torch.full((n * k, 1), vocab.bos_id, dtype=torch.long, device=points.device)
    total = torch.zeros(n * k)
    gm = GrammarMask(vocab, dims.cpu().repeat_interleave(k), allowed)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    while seq.shape[1] < max_len and not (deadline is not None and time.monotonic() > deadline):
        logits = model.decode_step(seq, mem_mask, cache, pasts).float().cpu()
        logits[~gm.mask(max_len - seq.shape[1])] = -torch.inf
        live = ~gm.done
        logits[~live] = 0.0  # finished rows draw a dummy token that is never used
        logp = torch.log_softmax(logits, dim=-1)
        tok = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=gen).squeeze(1)
        total += torch.where(live, logp.gather(1, tok[:, None]).squeeze(1), torch.zeros(()))
        tok = torch.where(live, tok, torch.full_like(tok, vocab.pad_id))
        ended = live & (tok == vocab.eos_id)
        gm.update(tok)
        seq = torch.cat([seq, tok[:, None].to(seq.device)], dim=1)
        for row in torch.nonzero(ended).flatten().tolist():
            finished[row // k].append((total[row].item() / seq.shape[1], seq[row].tolist()))
        if bool(gm.done.all()):
            break
    return [sorted(f, key=lambda r: -r[0]) for f in finished]
