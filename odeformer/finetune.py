"""Growing a checkpoint without losing what it knows: a larger vocabulary for another grammar, and
derivative input features (``input_derivatives``) for a model trained without them.

Token ids of the base model are kept; tokens the new grammar adds (operators such as ``atan``,
exponents, variables) are appended, and their embedding rows start at the mean of the base model's
embeddings of the same kind (operators of the same arity, leaves...) plus a little noise, so a new
operator starts out "like an operator" rather than like noise.
"""

from __future__ import annotations

import torch

from data_gen.grammar import Grammar
from odeformer.encoding import n_features
from odeformer.model import ModelConfig, ODEFormer
from odeformer.tokens import Vocabulary


def extend_for_grammar(model: ODEFormer, vocab: Vocabulary, base_grammar: Grammar,
                       grammar: Grammar) -> tuple[ODEFormer, Vocabulary, list[str]]:
    """(model, vocabulary, added tokens) able to write every system of ``grammar``."""
    if grammar.max_dim > base_grammar.max_dim:
        raise ValueError(f"the grammar allows {grammar.max_dim} variables but the checkpoint reads at most "
                         f"{base_grammar.max_dim}: train a new model (odeformer train without --init)")
    wanted = Vocabulary.for_grammar(grammar).tokens
    added = [tok for tok in wanted if tok not in vocab.index]
    if not added:
        return model, vocab, []
    new_vocab = Vocabulary(vocab.tokens + tuple(added))
    cfg = ModelConfig(**{**model.config.to_dict(), "vocab_size": len(new_vocab)})
    new_model = ODEFormer(cfg)
    state = model.state_dict()
    old = state["embed_tokens.weight"]
    kinds = torch.tensor(vocab.kinds())
    new_kinds = new_vocab.kinds()
    rows = [old]
    gen = torch.Generator().manual_seed(0)
    for tok in added:
        same = old[kinds == new_kinds[new_vocab.id(tok)]]
        base = same.mean(0) if len(same) else old.mean(0)
        rows.append((base + 0.02 * old.std() * torch.randn(old.shape[1], generator=gen))[None])
    state["embed_tokens.weight"] = torch.cat(rows)
    new_model.load_state_dict(state)
    return new_model, new_vocab, added


def add_derivative_inputs(model: ODEFormer, max_dim: int) -> ODEFormer:
    """The model reading dx/dt features too (:mod:`odeformer.encoding`). They come last in each point's
    feature vector, so their input weights start at zero: the new model computes exactly what the old
    one did, and training then learns to use them."""
    if model.config.input_derivatives:
        return model
    cfg = ModelConfig(**{**model.config.to_dict(), "input_derivatives": True,
                         "n_features": n_features(max_dim, derivatives=True)})
    new_model = ODEFormer(cfg).to(next(model.parameters()).device)
    state = model.state_dict()
    first = state["embed_points.0.weight"]
    extra = first.new_zeros(first.shape[0], cfg.n_features - first.shape[1])
    state["embed_points.0.weight"] = torch.cat([first, extra], dim=1)
    new_model.load_state_dict(state)
    return new_model
