"""Building blocks shared by several models of the course (written once, used everywhere).

Transformers (DALL-E, CLIP's text tower, GLIDE's text encoder, unCLIP's prior) use `Block`, a
pre-norm residual block of multi-head self-attention and an MLP (GPT-2 style, as in nanoGPT).
Attention can also read extra `context` tokens as keys and values, which is how GLIDE lets every
attention layer of its U-Net see the caption's tokens, and can keep the keys and values of the
tokens it has seen in a `KVCache`, so that autoregressive sampling (DALL-E, unCLIP's prior) feeds
only each new token instead of the whole prefix again.

Serves notebooks 01-07.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


class Attention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1).

    x: (B, T, d). context: optional (B, S, d) tokens prepended to the keys and values.
    Build with context=True to use it (it gets its own key/value projection).
    mask: optional bool (T, S + T) or (B, 1, T, S + T), True where attention is allowed;
    causal=True masks the future among x's own tokens.
    cache: optional `KVCache` of the P tokens before x; x's keys and values are appended to it
    and the keys become [context, cached, x], so the mask is then (T, S + P + T).
    """

    def __init__(self, d: int, n_heads: int, dropout: float = 0.0, context: bool = False):
        super().__init__()
        assert d % n_heads == 0, "width must be a multiple of the number of heads"
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.kv_context = nn.Linear(d, 2 * d) if context else None
        self.proj = nn.Linear(d, d)

    def forward(self, x, context=None, mask=None, causal=False, cache=None):
        T, H = x.shape[1], self.n_heads
        q, k, v = rearrange(self.qkv(x), "b t (qkv h d) -> qkv b t h d", qkv=3, h=H)
        if cache is not None:
            k, v = cache.update(k, v)
        if context is not None:
            kc, vc = rearrange(self.kv_context(context), "b s (kv h d) -> kv b s h d", kv=2, h=H)
            k, v = torch.cat([kc, k], 1), torch.cat([vc, v], 1)
        if causal:
            mask = causal_mask(T, k.shape[1] - T, x.device) if mask is None else mask
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # b t h d -> b h t d, as SDPA reads them
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(rearrange(y, "b h t d -> b t (h d)"))


class KVCache:
    """Keys and values (B, P, heads, d_head) of the P tokens one attention layer has seen, for
    autoregressive sampling (as in GPT-2's `past`): a new token's query reads them, so writing a
    token costs O(P) instead of rerunning the whole prefix, O(P^2). One per layer; `len` is P."""

    def __init__(self):
        self.k = self.v = None

    def __len__(self):
        return 0 if self.k is None else self.k.shape[1]

    def update(self, k, v):
        """Append the new tokens' (B, T, heads, d_head) keys and values; return all P + T."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], 1), torch.cat([self.v, v], 1)
        self.k, self.v = k, v
        return k, v


def causal_mask(T: int, n_context: int = 0, device=None) -> torch.Tensor:
    """(T, n_context + T) bool: every token sees all context tokens and itself and the past."""
    own = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    ctx = torch.ones(T, n_context, dtype=torch.bool, device=device)
    return torch.cat([ctx, own], 1)


class MLP(nn.Module):
    """Position-wise feed-forward network with a 4x hidden layer and GELU."""

    def __init__(self, d: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, mult * d), nn.GELU(), nn.Linear(mult * d, d), nn.Dropout(dropout)
        )

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, n_heads: int, dropout: float = 0.0, context: bool = False):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, n_heads, dropout, context)
        self.mlp = MLP(d, dropout=dropout)

    def forward(self, x, context=None, mask=None, causal=False, cache=None):
        x = x + self.attn(self.ln1(x), context=context, mask=mask, causal=causal, cache=cache)
        return x + self.mlp(self.ln2(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- blocks for the diffusion U-Nets (t2i.blocks.unet; GLIDE and unCLIP reuse them) -------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of timesteps t (B,), like the transformer's positions
    (Vaswani et al. 2017, sec. 3.5), as in DDPM's U-Net."""
    half = dim // 2
    freqs = max_period ** (-torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """Residual conv block with a scale-shift embedding (improved DDPM / ADM):
    h = conv(silu(norm(x))); h = norm(h) * (1 + scale) + shift; out = x + conv(silu(h)),
    where (scale, shift) = linear(silu(emb)). A 1x1 conv matches widths on the skip path."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))
