"""VQGAN-CLIP (Crowson et al. 2022, arXiv 2204.08583) at toy scale: steer a VQ tokenizer's
decoder with CLIP.

What is optimized is the grid of continuous latents z (B, D, 8, 8) that the VQ-VAE of notebook 01
(`t2i.ch01_dvae.vqvae`) would quantize and decode. Each step: clamp z to the codebook's range (per
dimension, with `ClampWithGrad`: no gradient that would push z further out), snap it to the
nearest codes with the straight-through quantizer (the forward pass sees only codebook vectors,
the gradient reaches z), decode, take random cutouts, and pull CLIP's embedding of the cutouts
toward the prompt's with the spherical distance. The decoder can only draw what it learned,
which keeps the images on the data's manifold far better than free pixels do.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange, reduce, repeat

from t2i import ch03_clip as clip
from t2i.ch01_dvae.vqvae import VQVAE
from t2i.ch04_generating_with_clip import clip_optimization
from t2i.core import recipe, runtime


def default_config() -> dict:
    return dict(
        steps=runtime.pick(smoke=4, cpu=100, gpu=300),
        lr=runtime.pick(smoke=0.1, cpu=0.1, gpu=0.05),
        n_views=runtime.pick(smoke=2, cpu=8, gpu=16),
        augmentation="cutouts",
        init="random tokens",
    )


class ClampWithGrad(torch.autograd.Function):
    """x.clamp(lo, hi) whose gradient never pushes x further out of [lo, hi]: the `ClampWithGrad`
    of VQGAN-CLIP, Katherine Crowson's (crowsonkb) reference code of Crowson et al. 2022.

    Backward passes the gradient g where x is inside the range; outside it, g passes only where
    a descent step x - lr * g moves x back toward the range, i.e. g * (x - x.clamp(lo, hi)) >= 0,
    and is zero elsewhere. A plain clamp would give no gradient outside the range (a latent
    that left it could never come back); a straight-through clamp would let the optimizer drive
    it ever further out. lo and hi are tensors broadcastable to x (or numbers); they get no
    gradient.
    """

    @staticmethod
    def forward(ctx, x, lo, hi):
        lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
        ctx.save_for_backward(x, lo, hi)
        return torch.maximum(torch.minimum(x, hi), lo)

    @staticmethod
    def backward(ctx, g):
        x, lo, hi = ctx.saved_tensors
        outside = x - torch.maximum(torch.minimum(x, hi), lo)
        return g * (g * outside >= 0), None, None


def clamp_with_grad(x, lo, hi):
    """`ClampWithGrad.apply(x, lo, hi)`."""
    return ClampWithGrad.apply(x, lo, hi)


class Latents(nn.Module):
    """B latent grids decoded by a frozen VQ-VAE; forward() returns images in [-1, 1].

    init "random tokens": each cell starts at a random codebook vector (the notebooks' default);
    "blank": the encoding of an empty canvas, so the optimizer starts from the background.
    """

    def __init__(self, vqvae, n: int, res: int, init: str = "random tokens", seed: int = 0):
        super().__init__()
        self.vqvae = [vqvae]  # a list, so its weights are not parameters of this module
        codebook = vqvae.codebook.detach().float()
        blank = repeat(clip_optimization.BACKGROUND, "c -> n c h w", n=n, h=res, w=res)
        with torch.no_grad():
            z = vqvae.encode(blank.to(codebook.device)).float()
        if init == "random tokens":
            g = torch.Generator().manual_seed(seed)
            idx = torch.randint(len(codebook), (n, *z.shape[2:]), generator=g)
            z = rearrange(codebook[idx.to(codebook.device)], "b h w d -> b d h w")
        elif init != "blank":
            raise ValueError(f"init must be 'random tokens' or 'blank', not {init!r}")
        self.z = nn.Parameter(z.clone())
        self.register_buffer("lo", reduce(codebook, "k d -> 1 d 1 1", "min"))
        self.register_buffer("hi", reduce(codebook, "k d -> 1 d 1 1", "max"))

    def forward(self):
        z = clamp_with_grad(self.z, self.lo, self.hi)
        z_q, _ = self.vqvae[0].quantize(z)
        return self.vqvae[0].decode(z_q)


def generate(
    clip_model,
    vqvae,
    prompts: list[str],
    cfg: dict | None = None,
    seed: int = 0,
    negatives: list[str] | None = None,
    **overrides,
) -> clip_optimization.Result:
    """One image per prompt (batched); overrides change cfg (steps, init, augmentation...)."""
    cfg = {**(cfg or default_config()), **overrides}
    latents = Latents(vqvae, len(prompts), clip_model.res, cfg["init"], seed)
    latents.to(runtime.device_of(clip_model))
    return clip_optimization.optimize(
        latents, clip_model, prompts, cfg["steps"], cfg["lr"], cfg["augmentation"],
        cfg["n_views"], negatives=negatives, seed=seed, desc="VQGAN-CLIP",
        frozen_models=(vqvae,),
    )  # fmt: skip


def _sampler(prompt: str, steps: int | None = None):
    models, overrides = (clip.CLIP.load(), VQVAE.load()), {"steps": steps} if steps else {}
    return lambda n, seed: generate(*models, [prompt] * n, seed=seed, **overrides).images


# no model of its own: `python -m t2i sample vqgan-clip` optimises VQ-VAE latents
VQGAN_CLIP = recipe.Recipe(
    "vqgan-clip",
    sampler=_sampler,
    options={"sample": clip_optimization.SAMPLE_OPTIONS},
)
RECIPES = (VQGAN_CLIP,)
