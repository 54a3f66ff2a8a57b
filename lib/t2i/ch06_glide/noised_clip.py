"""The noised CLIP of CLIP guidance (GLIDE sec. 3.3): CLIP whose image tower reads x_t and t, and
the guidance term it gives (GLIDE eq. 3)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i import ch03_clip as clip
from t2i.blocks.diffusion import gradient_guidance
from t2i.blocks.unet import Embedding, Encoder
from t2i.world.prompts import TOKENIZER


class NoisedImageEncoder(nn.Module):
    """CLIP's image tower for noised images: the U-Net's down path reading (x_t, t), pooled and
    projected to the joint embedding."""

    def __init__(self, res, ch, mults, embed):
        super().__init__()
        emb_dim = 4 * ch
        self.embed = Embedding(ch, emb_dim, 0, 0)
        self.encoder = Encoder(res, 3, ch, tuple(mults), 1, (), 4, emb_dim, None)
        c = self.encoder.out_channels
        self.head = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU())
        self.proj = nn.Linear(c, embed)

    def forward(self, x, t):
        h, _ = self.encoder(x, self.embed(t))
        return self.proj(self.head(h).mean((2, 3)))


class NoisedCLIP(nn.Module):
    """A CLIP (t2i.ch03_clip) whose image encoder sees noised images x_t with their timestep."""

    def __init__(self, res: int, ch: int, mults, d: int, layers: int, embed: int):
        super().__init__()
        self.image = NoisedImageEncoder(res, ch, mults, embed)
        self.text = clip.TextEncoder(len(TOKENIZER), TOKENIZER.context_length, d, layers, 4, embed)
        self.log_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def encode_image(self, x, t):
        return F.normalize(self.image(x, t).float(), dim=-1)

    def encode_text(self, texts):
        dev = self.log_scale.device
        tok = TOKENIZER(texts).to(dev) if not torch.is_tensor(texts) else texts.to(dev)
        return F.normalize(self.text(tok).float(), dim=-1)

    def forward(self, x, t, tokens):
        scale = self.log_scale.clamp(max=clip.LOG_MAX_SCALE).exp()  # as CLIP.scale
        return scale * self.encode_image(x, t) @ self.encode_text(tokens).T


def clip_grad(noised_clip: NoisedCLIP, prompts: list[str], scale: float):
    """cond_fn of CLIP guidance (GLIDE eq. 3): scale * grad_x (f(x_t, t) . g(c)), the noised
    CLIP's image embedding against the caption's text embedding."""
    with torch.no_grad():
        text = noised_clip.encode_text(prompts)
    return gradient_guidance(lambda x, t: (noised_clip.encode_image(x, t) * text).sum(-1), scale)
