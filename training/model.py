"""PFN transformer for curve extrapolation (torch; training and export only).

Tokens: each context point is ``enc_x(features) + enc_y(value)``; each query point is ``enc_x(features)``.
Attention follows the PFN pattern: every token (context or query) attends to the valid context tokens
only, which is implemented by computing keys/values from the context slice alone plus an additive
padding bias -- plain MatMul/Softmax ops that export to ONNX with dynamic batch, context and query
lengths. Pre-LayerNorm blocks (stable for short training), GELU MLPs, no positional encoding (order
comes from the position features). The head outputs log-probabilities over the bucket borders.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = 5
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    n_buckets: int = 1000
    d_dec: int = 384

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.h = cfg.n_heads
        self.dk = cfg.d_model // cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.o = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))

    def forward(self, x: torch.Tensor, n_ctx: torch.Tensor | int, key_bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        a = self.ln1(x)
        q = self.q(a).reshape(b, t, self.h, self.dk).transpose(1, 2)  # (b, h, t, dk)
        kv = self.kv(a[:, :n_ctx])
        kv = kv.reshape(b, -1, 2, self.h, self.dk).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # each (b, h, n, dk)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.dk)) + key_bias
        att = torch.softmax(scores, dim=-1)
        out = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(out)
        return x + self.ff(self.ln2(x))


class CurvePFN(nn.Module):
    def __init__(self, cfg: ModelConfig, borders: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.enc_x = nn.Sequential(nn.Linear(cfg.n_features, d), nn.GELU(), nn.Linear(d, d))
        self.enc_y = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.dec = nn.Sequential(nn.Linear(d, cfg.d_dec), nn.GELU(), nn.Linear(cfg.d_dec, cfg.n_buckets))
        self.register_buffer("borders", borders.to(torch.float32).clone())

    def forward(
        self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, ctx_mask: torch.Tensor, qry_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx_x (B,N,F), ctx_y (B,N), ctx_mask (B,N) 1=valid, qry_x (B,M,F) -> log_probs (B,M,K), borders."""
        h_ctx = self.enc_x(ctx_x) + self.enc_y(ctx_y.clamp(-2.0, 3.0).unsqueeze(-1))
        h = torch.cat([h_ctx, self.enc_x(qry_x)], dim=1)
        key_bias = ((ctx_mask - 1.0) * 1e4).unsqueeze(1).unsqueeze(1)  # (B,1,1,N): 0 valid, -1e4 pad
        n_ctx = ctx_x.shape[1]
        for blk in self.blocks:
            h = blk(h, n_ctx, key_bias)
        with torch.autocast(h.device.type, enabled=False):  # keep the output head in float32
            logits = self.dec(self.ln_f(h[:, n_ctx:].float()))
        return torch.log_softmax(logits, dim=-1), self.borders


# ---- bar distribution with half-normal tails ------------------------------------------------------
HALF_NORMAL_MEDIAN = 0.6744897501960817  # median of |N(0, 1)|


def bar_log_density(log_probs: torch.Tensor, borders: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y) under the bar distribution (inner buckets uniform, outer buckets half-normal tails).

    The first/last bucket is a half-normal pointing outward from the first inner border, with its
    median at the outer border, so the support is the whole real line (as in LC-PFN).
    """
    k = borders.numel() - 1
    widths = borders[1:] - borders[:-1]
    idx = torch.searchsorted(borders.contiguous(), y.contiguous(), right=True) - 1
    idx = idx.clamp(0, k - 1)
    lp = torch.gather(log_probs, -1, idx.unsqueeze(-1)).squeeze(-1)
    inner = lp - torch.log(widths[idx])
    s_lo = widths[0] / HALF_NORMAL_MEDIAN
    s_hi = widths[-1] / HALF_NORMAL_MEDIAN
    half_norm_const = 0.5 * math.log(2.0 / math.pi)
    d_lo = (borders[1] - y).clamp(min=0.0) / s_lo
    d_hi = (y - borders[-2]).clamp(min=0.0) / s_hi
    lo = log_probs[..., 0] + half_norm_const - torch.log(s_lo) - 0.5 * d_lo**2
    hi = log_probs[..., -1] + half_norm_const - torch.log(s_hi) - 0.5 * d_hi**2
    return torch.where(idx == 0, lo, torch.where(idx == k - 1, hi, inner))
