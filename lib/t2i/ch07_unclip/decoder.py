"""The decoder (unCLIP sec. 2.1): GLIDE's U-Net with the CLIP image embedding as one more
condition, and what draws with it: decoding embeddings, DDIM inversion and variations."""

from __future__ import annotations

import torch
import torch.nn as nn

from t2i import ch06_glide as glide
from t2i.blocks.diffusion import classifier_free, seeded_noise
from t2i.ch07_unclip.embeddings import embed_image, embed_scale
from t2i.core import runtime
from t2i.world.prompts import EMPTY, caption_tokens

N_CONTEXT_TOKENS = 4  # z_i as 4 extra tokens of the decoder's attention context (sec. 2.1)


class Decoder(glide.Text2Im):
    """eps(x_t, t, tokens, image_embed): GLIDE with the CLIP image embedding as a condition."""

    def __init__(self, res: int, embed: int, **text2im):
        super().__init__(res, **text2im)
        d = text2im["text_width"]
        self.scale = embed_scale(embed)
        self.image_cond = nn.Linear(embed, d)
        self.image_tokens = nn.Linear(embed, N_CONTEXT_TOKENS * d)

    def forward(self, x, t, tokens, image_embed):
        pooled, seq = self.text(tokens)
        z = image_embed * self.scale
        extra = self.image_tokens(z).view(len(z), N_CONTEXT_TOKENS, -1)
        context = torch.cat([extra, seq], 1)
        return self.unet(x, t, cond=pooled + self.image_cond(z), context=context)


def decoder_fn(decoder, image_embed, prompts=None, *, scale: float = 3.0):
    """eps(x_t, t) of the decoder given embeddings (n, e) and optional captions, guided
    classifier-free against a zero embedding and the empty caption."""
    dev = runtime.device_of(decoder)
    z = image_embed.to(dev)
    tok, null = caption_tokens([EMPTY] * len(z) if prompts is None else prompts, dev)
    cond = dict(tokens=tok, image_embed=z)
    uncond = dict(tokens=null, image_embed=torch.zeros_like(z))
    return classifier_free(decoder, scale, cond, uncond)


def decode(
    decoder,
    diffusion,
    image_embed,
    prompts=None,
    *,
    scale: float = 3.0,
    steps: int = 25,
    eta: float = 1.0,
    seed: int = 0,
    x_T=None,
    trace: bool = False,
):
    """Images (n, 3, res, res), on the CPU, from image embeddings (n, e) by DDIM, from noise
    drawn with `seed` or from a given x_T (n, 3, res, res)."""
    fn = decoder_fn(decoder, image_embed, prompts, scale=scale)
    gen, dev = torch.Generator().manual_seed(seed), runtime.device_of(decoder)
    n, r = len(image_embed), decoder.res
    x = seeded_noise((n, 3, r, r), gen, dev) if x_T is None else x_T.to(dev)
    return diffusion.ddim_sample(fn, x, steps, eta, None, gen, trace)


def invert(decoder, diffusion, images, image_embed, *, scale: float = 1.0, steps: int = 50):
    """x_T whose DDIM decoding (eta = 0, the same steps and scale) gives back `images`: the
    (z_i, x_T) pair of a real image that variations start from (paper sec. 3.1)."""
    fn = decoder_fn(decoder, image_embed, None, scale=scale)
    dev = runtime.device_of(decoder)
    return diffusion.ddim_invert(fn, images.to(dev), steps)


def vary(decoder, diffusion, images, *, eta: float, n: int = 1, scale=1.0, steps=50, seed=0):
    """Variations of images (m, 3, res, res): their embeddings and inverted x_T decoded with
    DDIM at this eta, n per image (eta = 0: the reconstruction). Returns (m * n, ...) images,
    each image's variations together."""
    z = embed_image(images)
    x_T = invert(decoder, diffusion, images, z, scale=scale, steps=steps)
    z, x_T = z.repeat_interleave(n, 0), x_T.repeat_interleave(n, 0)
    return decode(
        decoder, diffusion, z, None, scale=scale, steps=steps, eta=eta, seed=seed, x_T=x_T
    )
