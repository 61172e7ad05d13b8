"""Decoding token sequences from the model: greedy (batched), with grammar masking.

The mask keeps every partial sequence completable: a mantissa must be followed by an exponent, an
exponent only after a mantissa, ``|`` and ``<eos>`` only when the current component is complete, and
no more than ``dim`` components. ``allowed`` (token ids) restricts operators further.
"""

from __future__ import annotations

import torch

from odeformer.model import ODEFormer
from odeformer.tokens import SEP, Vocabulary


class GrammarMask:
    """Tracks, per sequence, how many subtrees are still open and what may come next."""

    def __init__(self, vocab: Vocabulary, dims: torch.Tensor, allowed: torch.Tensor | None = None):
        self.kinds = torch.tensor(vocab.kinds())
        self.sep = vocab.id(SEP)
        self.eos = vocab.eos_id
        n = len(dims)
        self.dims = dims
        self.need = torch.ones(n, dtype=torch.long)  # open slots in the current component
        self.comp = torch.zeros(n, dtype=torch.long)  # index of the current component
        self.after_mantissa = torch.zeros(n, dtype=torch.bool)
        self.done = torch.zeros(n, dtype=torch.bool)
        self.allowed = allowed

    def mask(self) -> torch.Tensor:
        """(n, vocab) True where a token may come next."""
        k = self.kinds[None, :]
        need = self.need[:, None]
        expr_tok = (k >= 0) | (k == -1)
        m = expr_tok & (need > 0) & ~self.after_mantissa[:, None]
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
    mem = model.encode(points, traj, mask)
    n = len(points)
    seq = torch.full((n, 1), vocab.bos_id, dtype=torch.long, device=points.device)
    gm = GrammarMask(vocab, dims.cpu())
    for _ in range(max_len - 1):
        logits = model.decode(seq, mem, mask)[:, -1].float().cpu()
        logits[~gm.mask()] = -torch.inf
        tok = logits.argmax(-1)
        gm.update(tok)
        seq = torch.cat([seq, tok[:, None].to(seq.device)], dim=1)
        if gm.done.all():
            break
    return [s.tolist() for s in seq.cpu()]
