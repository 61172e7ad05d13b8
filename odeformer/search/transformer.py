"""Proposal source: the pretrained transformer, by beam search (or temperature sampling) over its
output vocabulary, masked to the allowed operators."""

from __future__ import annotations

import numpy as np
import torch

from data_gen.simplify import key as skeleton_key
from data_gen.simplify import simplify
from odeformer import checkpoint as ckpt
from odeformer.decoding import beam_search, sample
from odeformer.encoding import encode_points
from odeformer.samples import Example, collate
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal

#: long trajectories are read in groups of at most this many points; their proposals are pooled
MAX_POINTS_PER_GROUP = 200
#: distinct equations from the beam that go on to refitting, most likely first (each refit ~10-100 ms)
MAX_PROPOSALS = 8


class TransformerProposals:
    name = "transformer"

    def __init__(self, checkpoint: ckpt.Checkpoint, beam_size: int = 16, decoding: str = "beam",
                 temperature: float = 0.8, seed: int = 0, device: str = "cpu",
                 max_proposals: int = MAX_PROPOSALS):
        self.checkpoint, self.beam_size, self.decoding = checkpoint, beam_size, decoding
        self.temperature, self.seed, self.device, self.max_proposals = temperature, seed, device, max_proposals

    def allowed_mask(self, operators: set[str]) -> torch.Tensor:
        kinds = self.checkpoint.vocab.kinds()
        return torch.tensor([kind < 1 or tok in operators for tok, kind in zip(self.checkpoint.vocab.tokens, kinds)])

    def propose(self, problem: Problem, earlier: list[Proposal]) -> list[Proposal]:
        """Decoded systems, de-duplicated by their skeleton, most likely first."""
        c = self.checkpoint
        derivs = c.model.config.input_derivatives
        examples = []
        for ti, xi in problem.ndata:
            n_groups = max(1, int(np.ceil(len(ti) / MAX_POINTS_PER_GROUP)))
            for g in range(n_groups):
                examples.append(Example(*encode_points([(ti[g::n_groups], xi[g::n_groups])], c.vocab.max_dim, derivs),
                                        np.array([1, 2])))
        if len(problem.ndata) > 1:  # and all trajectories together, as the model was trained to read them
            step = [max(1, len(ti) * len(problem.ndata) // MAX_POINTS_PER_GROUP) for ti, _ in problem.ndata]
            sub = [(ti[::s], xi[::s]) for (ti, xi), s in zip(problem.ndata, step)]
            examples.append(Example(*encode_points(sub, c.vocab.max_dim, derivs), np.array([1, 2])))
        batch = {k: v.to(self.device) for k, v in collate(examples).items()}
        allowed = self.allowed_mask(problem.operators)
        with torch.inference_mode():
            args = (c.model, c.vocab, batch["points"], batch["traj"], batch["mask"],
                    torch.full((len(examples),), problem.dim), self.beam_size)
            deadline = problem.by(0.4)
            if self.decoding == "sample":
                beams = sample(*args, temperature=self.temperature, allowed=allowed, deadline=deadline, seed=self.seed)
            else:
                beams = beam_search(*args, allowed=allowed, deadline=deadline)
        out, seen = [], set()
        for _, seq in sorted((r for group in beams for r in group), key=lambda r: -r[0]):
            try:
                comps, consts = c.vocab.decode(seq)
            except ValueError:
                continue
            key = tuple(skeleton_key(simplify(cp)) for cp in comps)  # microseconds, no SymPy
            if key not in seen:
                seen.add(key)
                out.append(Proposal(tuple(comps), list(consts), self.name))
        return out[: self.max_proposals]
