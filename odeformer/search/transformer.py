"""Proposal source: the pretrained transformer, by beam search (or temperature sampling) over its
output vocabulary, masked to the allowed operators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from data_gen.expressions import Tree
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


def model_inputs(problem: Problem, c: ckpt.Checkpoint) -> list[Example]:
    """The problem's trajectories as the model reads them: each in groups of at most
    ``MAX_POINTS_PER_GROUP`` points, and all together where there are several."""
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
    return examples


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
        examples = model_inputs(problem, c)
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


class TransformerPrior:
    """The transformer as a prior over skeletons for the local search: ``for_problem`` reads the data
    once and returns a scorer of systems."""

    def __init__(self, checkpoint: ckpt.Checkpoint, device: str = "cpu"):
        self.checkpoint, self.device = checkpoint, device

    def for_problem(self, problem: Problem) -> SkeletonPrior:
        return SkeletonPrior(self.checkpoint, problem, self.device)


class SkeletonPrior:
    """The model's log-probability of a system's skeleton given the data: its tokens teacher-forced
    with the constants given (the cheap fit's), each constant's own tokens counted as "some constant
    here" (the summed probability of every mantissa, as the beam search scores them), averaged over the
    model's views of the data."""

    def __init__(self, checkpoint: ckpt.Checkpoint, problem: Problem, device: str = "cpu"):
        self.c, self.device = checkpoint, device
        batch = {k: v.to(device) for k, v in collate(model_inputs(problem, checkpoint)).items()}
        with torch.inference_mode():
            self.mem = checkpoint.model.encode(batch["points"], batch["traj"], batch["mask"])
        self.mask = batch["mask"]
        kinds = torch.tensor(checkpoint.vocab.kinds(), device=device)
        self.mantissas, self.exponents = kinds == -1, kinds == -2

    def log_prob(self, systems: Sequence[tuple[Sequence[Tree], Sequence[float]]]) -> np.ndarray:
        """Per system (components, constants), its skeleton's log-probability (nan where the model cannot
        write it: an unknown token, or longer than it decodes)."""
        out = np.full(len(systems), np.nan)
        ids, rows = [], []
        for k, (components, constants) in enumerate(systems):
            try:
                seq = self.c.vocab.encode(components, constants)
            except KeyError:
                continue
            if len(seq) <= self.c.model.config.max_out_len:
                ids.append(seq)
                rows.append(k)
        if not ids:
            return out
        n = max(len(q) for q in ids)
        tokens = torch.full((len(ids), n), self.c.vocab.pad_id, dtype=torch.long)
        for r, q in enumerate(ids):
            tokens[r, :len(q)] = torch.tensor(q)
        tokens = tokens.to(self.device)  # beside the encoded data
        target = tokens[:, 1:]
        total = torch.zeros(len(ids), device=self.device)
        with torch.inference_mode():
            for view in range(len(self.mem)):  # each view of the data scores every system
                mem = self.mem[view:view + 1].expand(len(ids), -1, -1)
                mask = self.mask[view:view + 1].expand(len(ids), -1)
                logp = torch.log_softmax(self.c.model.decode(tokens[:, :-1], mem, mask).float(), dim=-1)
                some_constant = torch.logsumexp(logp[..., self.mantissas], dim=-1)
                picked = logp.gather(-1, target[..., None])[..., 0]
                picked = torch.where(self.mantissas[target], some_constant, picked)
                # the exponent belongs to the constant already counted; padding is no token
                keep = ~self.exponents[target] & (target != self.c.vocab.pad_id)
                total += (picked * keep).sum(dim=1)
        out[rows] = (total / len(self.mem)).cpu().numpy()
        return out
