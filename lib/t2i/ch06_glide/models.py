"""GLIDE's networks (glide-text2im's `text2im_model.py`, small): the caption's transformer, the
caption-conditional U-Net, and its upsampling and inpainting variants, which read extra input
channels."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i.blocks.layers import Block
from t2i.blocks.unet import UNet
from t2i.world.prompts import TOKENIZER
from t2i.world.tokenizer import Tokenizer


class TextEncoder(nn.Module):
    """Caption tokens (B, S) -> (pooled (B, d), tokens (B, S, d)): GLIDE's text transformer.

    No causal mask: every token sees the whole caption. Padding positions get a learned
    embedding in place of the pad token's, and the last position's output is the pooled vector
    (GLIDE uses xf_out[:, -1])."""

    def __init__(self, d: int, layers: int, heads: int, tokenizer: Tokenizer = TOKENIZER):
        super().__init__()
        self.pad_id = tokenizer.pad_id
        self.tok = nn.Embedding(len(tokenizer), d)
        self.pos = nn.Parameter(torch.randn(tokenizer.context_length, d) * 0.01)
        self.padding = nn.Parameter(torch.randn(d) * 0.01)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, tokens):
        pad = (tokens == self.pad_id)[..., None]
        x = torch.where(pad, self.padding, self.tok(tokens)) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        return x[:, -1], x


class Text2Im(nn.Module):
    """eps(x_t, t, tokens): the text-conditional U-Net of GLIDE."""

    extra_channels = 0

    def __init__(
        self,
        res: int,
        ch: int,
        mults,
        blocks: int,
        attn_res,
        heads: int,
        text_width: int,
        text_layers: int,
        coords: bool,
    ):
        super().__init__()
        self.res = res
        self.text = TextEncoder(text_width, text_layers, heads)
        self.unet = UNet(
            res=res,
            in_ch=3 + self.extra_channels,
            ch=ch,
            mults=tuple(mults),
            blocks=blocks,
            attn_res=tuple(attn_res),
            heads=heads,
            cond_dim=text_width,
            context_dim=text_width,
            coords=coords,
        )

    def inputs(self, x):
        return x

    def forward(self, x, t, tokens, **inputs):
        pooled, seq = self.text(tokens)
        return self.unet(self.inputs(x, **inputs), t, cond=pooled, context=seq)


class Upsampler(Text2Im):
    """eps(x_t, t, tokens, low_res): super-resolution conditioned on the caption and on the
    low-resolution image, upsampled bilinearly and stacked onto x_t as 3 more channels."""

    extra_channels = 3

    def inputs(self, x, low_res):
        up = F.interpolate(low_res, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, up], 1)


class Inpainter(Text2Im):
    """eps(x_t, t, tokens, image, mask): inpainting conditioned on the known pixels (the image
    times the mask, mask = 1 where known) and the mask, as 4 more input channels."""

    extra_channels = 4

    def inputs(self, x, image, mask):
        return torch.cat([x, image * mask, mask], 1)
