"""Encoder-decoder transformer in plain PyTorch (scaled-dot-product attention, pre-LayerNorm).

The encoder reads a set of observed points (see :mod:`odeformer.encoding`), the decoder writes the
system's tokens (see :mod:`odeformer.tokens`). Sizes come from presets (``odeformer/presets/*.toml``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    n_features: int
    vocab_size: int
    d_model: int = 128
    n_heads: int = 4
    n_enc: int = 3
    n_dec: int = 3
    d_ff: int = 512
    dropout: float = 0.0
    max_out_len: int = 192
    max_trajectories: int = 8
    input_derivatives: bool = False  # the encoder's inputs carry dx/dt estimates (see odeformer.encoding)

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.dropout = dropout

    def keys_values(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, m, d = mem.shape
        return self.kv(mem).view(b, m, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None, mask: torch.Tensor | None = None,
                causal: bool = False, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attention of ``x`` to ``mem``; ``kv`` passes the keys and values of ``mem`` precomputed."""
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = kv if kv is not None else self.keys_values(mem)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Sequential):
    def __init__(self, d: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d), nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.mlp = MLP(c.d_model, c.d_ff, c.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(c.d_model) for _ in range(3))
        self.self_attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.cross_attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.mlp = MLP(c.d_model, c.d_ff, c.dropout)

    def forward(self, y: torch.Tensor, mem: torch.Tensor | None, mem_mask: torch.Tensor,
                cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None, past: dict | None = None) -> torch.Tensor:
        """``past`` (incremental decoding): ``y`` holds only the newest position; its keys and values are
        appended to ``past["k"]``, ``past["v"]`` and it attends to all of them."""
        h = self.ln1(y)
        if past is None:
            y = y + self.self_attn(h, h, causal=True)
        else:
            k, v = self.self_attn.keys_values(h)
            if "k" in past:
                k, v = torch.cat([past["k"], k], dim=2), torch.cat([past["v"], v], dim=2)
            past["k"], past["v"] = k, v
            y = y + self.self_attn(h, None, kv=(k, v))
        y = y + self.cross_attn(self.ln2(y), mem, mem_mask, kv=cross_kv)
        return y + self.mlp(self.ln3(y))


class ODEFormer(nn.Module):
    """``forward(points, traj, point_mask, tokens) -> logits`` for next-token prediction."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.embed_points = nn.Sequential(nn.Linear(c.n_features, c.d_model), nn.GELU(),
                                          nn.Linear(c.d_model, c.d_model))
        self.embed_traj = nn.Embedding(c.max_trajectories, c.d_model)
        self.encoder = nn.ModuleList(EncoderBlock(c) for _ in range(c.n_enc))
        self.ln_enc = nn.LayerNorm(c.d_model)
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.embed_pos = nn.Embedding(c.max_out_len, c.d_model)
        self.decoder = nn.ModuleList(DecoderBlock(c) for _ in range(c.n_dec))
        self.ln_dec = nn.LayerNorm(c.d_model)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def _key_mask(point_mask: torch.Tensor) -> torch.Tensor:
        """(b, n) True-for-real-point -> (b, 1, 1, n) boolean attention mask."""
        return point_mask[:, None, None, :]

    def encode(self, points: torch.Tensor, traj: torch.Tensor, point_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed_points(points) + self.embed_traj(traj.clamp(max=self.config.max_trajectories - 1))
        mask = self._key_mask(point_mask)
        for block in self.encoder:
            x = block(x, mask)
        return self.ln_enc(x)

    def cross_cache(self, mem: torch.Tensor, repeat: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of ``mem``, computed once for a whole
        decoding (and once per input, then shared by its ``repeat`` beams)."""
        return [tuple(t.repeat_interleave(repeat, dim=0) for t in block.cross_attn.keys_values(mem))
                for block in self.decoder]

    def decode(self, tokens: torch.Tensor, mem: torch.Tensor | None, point_mask: torch.Tensor,
               cache: list | None = None) -> torch.Tensor:
        n = tokens.shape[1]
        y = self.embed_tokens(tokens) + self.embed_pos(torch.arange(n, device=tokens.device))
        mask = self._key_mask(point_mask)
        for i, block in enumerate(self.decoder):
            y = block(y, mem, mask, cross_kv=cache[i] if cache is not None else None)
        return self.ln_dec(y) @ self.embed_tokens.weight.T  # tied output layer

    def decode_step(self, tokens: torch.Tensor, point_mask: torch.Tensor, cache: list,
                    pasts: list[dict]) -> torch.Tensor:
        """Logits for the next token after ``tokens`` (b, n), reusing ``pasts`` (one dict per decoder
        layer, filled here) for the first n-1 positions: each step costs one position, not n."""
        n = tokens.shape[1]
        y = self.embed_tokens(tokens[:, -1:]) + self.embed_pos(torch.tensor([n - 1], device=tokens.device))
        mask = self._key_mask(point_mask)
        for i, block in enumerate(self.decoder):
            y = block(y, None, mask, cross_kv=cache[i], past=pasts[i])
        return (self.ln_dec(y) @ self.embed_tokens.weight.T)[:, -1]

    def forward(self, points: torch.Tensor, traj: torch.Tensor, point_mask: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(tokens, self.encode(points, traj, point_mask), point_mask)
