"""The diffusion U-Net (DDPM sec. 4 / improved DDPM / ADM), small enough to train on a CPU.

Residual blocks (`layers.ResBlock`) read a timestep embedding by scale-shift; self-attention
(`layers.Attention`) runs at the low resolutions; skip connections join the down and up paths.
Conditioning enters where ADM and GLIDE put it:
  - a class label y: an embedding added to the time embedding, with one extra "null" label
    (index n_classes) for classifier-free guidance;
  - a vector `cond` (GLIDE's last text token, unCLIP's CLIP image embedding): projected and
    added to the time embedding;
  - `context` tokens (GLIDE's caption tokens): extra keys and values in every attention layer;
  - extra input channels (an upsampler's low-resolution image, an inpainter's known pixels);
  - with coords=True, two channels of pixel coordinates stacked onto the input (CoordConv, Liu
    et al. 2018), and Fourier features of the coordinates added to every attention layer's
    input: at 16x16 the convolutions see too little of the border to know where they are, and a
    caption that says "at the top left" needs each position to know where it is.
`Encoder` is the down path alone; with pooling it becomes the noise-aware classifier.

Serves notebooks 05, 06 and 07.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from t2i.blocks.layers import Attention, ResBlock, timestep_embedding


class SpatialAttention(nn.Module):
    """Self-attention over the H*W positions of a feature map, as a residual."""

    def __init__(self, c: int, heads: int, context_dim: int | None = None, coords: bool = False):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, c), c)
        self.attn = Attention(c, heads, context=context_dim is not None)
        self.ctx = nn.Linear(context_dim, c) if context_dim is not None else None
        self.pos = nn.Linear(4 * FOURIER_BANDS, c) if coords else None

    def forward(self, x, context=None):
        h = self.norm(x)
        if self.pos is not None:
            pos = self.pos(fourier_features(coordinate_channels(x)))
            h = h + rearrange(pos, "b h w c -> b c h w")
        h = rearrange(h, "b c h w -> b (h w) c")
        ctx = self.ctx(context) if self.ctx is not None and context is not None else None
        h = self.attn(h, context=ctx)
        return x + rearrange(h, "b (h w) c -> b c h w", h=x.shape[2])


class Stage(nn.Module):
    """A residual block, then attention if asked (one entry of the U-Net's paths)."""

    def __init__(self, c_in, c_out, emb_dim, attn, heads, context_dim, coords=False):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim)
        self.attn = SpatialAttention(c_out, heads, context_dim, coords) if attn else None

    def forward(self, x, emb, context=None):
        x = self.res(x, emb)
        return self.attn(x, context) if self.attn is not None else x


class Resample(nn.Module):
    """Halve (stride-2 conv) or double (nearest, then conv) the resolution."""

    def __init__(self, c: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(c, c, 3, stride=1 if up else 2, padding=1)

    def forward(self, x, emb=None, context=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x)


class Encoder(nn.Module):
    """Input conv, the down path and the middle; returns the features and every skip."""

    def __init__(
        self, res, in_ch, ch, mults, blocks, attn_res, heads, emb_dim, context_dim, coords=False
    ):
        super().__init__()
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList()
        self.skip_channels = [ch]
        c, r = ch, res
        for i, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(
                    Stage(c, ch * m, emb_dim, r in attn_res, heads, context_dim, coords)
                )
                c = ch * m
                self.skip_channels.append(c)
            if i < len(mults) - 1:
                self.down.append(Resample(c, up=False))
                self.skip_channels.append(c)
                r //= 2
        self.mid = nn.ModuleList(
            [
                Stage(c, c, emb_dim, True, heads, context_dim, coords),
                Stage(c, c, emb_dim, False, heads, None),
            ]
        )
        self.out_channels, self.out_res = c, r

    def forward(self, x, emb, context=None):
        h = self.inp(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb, context)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb, context)
        return h, skips


class Embedding(nn.Module):
    """Time embedding (sinusoid -> MLP) plus whatever conditions are given."""

    def __init__(self, ch, emb_dim, n_classes, cond_dim):
        super().__init__()
        self.ch = ch
        self.time = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(n_classes + 1, emb_dim) if n_classes else None
        self.cond = nn.Linear(cond_dim, emb_dim) if cond_dim else None

    def forward(self, t, y=None, cond=None):
        emb = self.time(timestep_embedding(t, self.ch))
        if y is not None:
            emb = emb + self.label(y)
        if cond is not None:
            emb = emb + self.cond(cond)
        return emb


class UNet(nn.Module):
    """eps(x_t, t, y, cond, context): the U-Net of DDPM with ADM's conditioning entry points.

    res: image side; ch: base width; mults: width multiplier per resolution level; blocks:
    residual blocks per level; attn_res: resolutions with self-attention; n_classes: labels
    (plus the null label n_classes); cond_dim / context_dim: GLIDE's and unCLIP's inputs.
    """

    def __init__(
        self,
        res: int = 16,
        in_ch: int = 3,
        out_ch: int = 3,
        ch: int = 32,
        mults=(1, 2),
        blocks: int = 1,
        attn_res=(8,),
        heads: int = 4,
        n_classes: int = 0,
        cond_dim: int = 0,
        context_dim: int | None = None,
        coords: bool = False,
    ):
        super().__init__()
        emb_dim = 4 * ch
        self.res, self.n_classes, self.coords = res, n_classes, coords
        self.embed = Embedding(ch, emb_dim, n_classes, cond_dim)
        in_ch = in_ch + 2 * coords
        self.encoder = Encoder(
            res, in_ch, ch, mults, blocks, attn_res, heads, emb_dim, context_dim, coords
        )
        skips = list(self.encoder.skip_channels)
        self.up = nn.ModuleList()
        c, r = self.encoder.out_channels, self.encoder.out_res
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(
                    Stage(
                        c + skips.pop(), ch * m, emb_dim, r in attn_res, heads, context_dim, coords
                    )
                )
                c = ch * m
            if i > 0:
                self.up.append(Resample(c, up=True))
                r *= 2
        self.out = nn.Sequential(
            nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, out_ch, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, t, y=None, cond=None, context=None):
        if self.coords:
            x = torch.cat([x, coordinate_channels(x)], 1)
        emb = self.embed(t, y, cond)
        h, skips = self.encoder(x, emb, context)
        for layer in self.up:
            if isinstance(layer, Stage):
                h = torch.cat([h, skips.pop()], dim=1)
            h = layer(h, emb, context)
        return self.out(h)


FOURIER_BANDS = 4


def fourier_features(coords: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 4 * FOURIER_BANDS): sin and cos of pi * 2^k * coordinate, k < FOURIER_BANDS,
    for both coordinates of (B, 2, H, W) (the positional encoding of NeRF, Mildenhall et al.)."""
    freqs = math.pi * 2.0 ** torch.arange(FOURIER_BANDS, device=coords.device, dtype=coords.dtype)
    angles = rearrange(coords, "b xy h w -> b h w xy 1") * freqs
    return rearrange(torch.cat([angles.sin(), angles.cos()], -1), "b h w xy f -> b h w (xy f)")


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): each pixel's column and row centre, from -1 to 1."""
    B, _, H, W = x.shape
    ys = (torch.arange(H, device=x.device, dtype=x.dtype) + 0.5) / H * 2 - 1
    xs = (torch.arange(W, device=x.device, dtype=x.dtype) + 0.5) / W * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))
    return grid.expand(B, -1, -1, -1)


class NoisyClassifier(nn.Module):
    """p(y | x_t, t): the U-Net's down path, then norm, SiLU, global average pooling and a linear
    head (ADM sec. 4, trained on q_sample outputs at random t)."""

    def __init__(
        self, n_classes: int, res=16, in_ch=3, ch=32, mults=(1, 2), blocks=1, attn_res=(8,), heads=4
    ):
        super().__init__()
        emb_dim = 4 * ch
        self.embed = Embedding(ch, emb_dim, 0, 0)
        self.encoder = Encoder(res, in_ch, ch, mults, blocks, attn_res, heads, emb_dim, None)
        c = self.encoder.out_channels
        self.head = nn.Sequential(
            nn.GroupNorm(min(8, c), c),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c, n_classes),
        )

    def forward(self, x, t):
        h, _ = self.encoder(x, self.embed(t))
        return self.head(h)
