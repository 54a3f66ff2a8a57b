"""Sampling GLIDE: the guided eps (classifier-free with the empty caption, or CLIP-guided), DDIM
from noise, and the upsampler's second stage."""

from __future__ import annotations

import torch

from t2i.blocks.diffusion import classifier_free, seeded_noise
from t2i.ch06_glide.noised_clip import clip_grad
from t2i.core import runtime
from t2i.world.prompts import EMPTY, caption_tokens


def guided_model(model, prompts, guidance="cfg", *, scale=3.0, noised_clip=None, **inputs):
    """(fn(x_t, t), cond_fn) for the sampler: the caption model with its guidance.

    guidance: "none" (the caption model alone), "cfg" (classifier-free against the empty
    caption, scale w in u + w (c - u)), or "clip" (the caption model steered by the gradient of
    a noised CLIP's image-text similarity times `scale`). `inputs` are the extra inputs of an
    upsampler (low_res) or inpainter (image, mask), one per prompt."""
    dev = runtime.device_of(model)
    tok, null = caption_tokens(prompts, dev)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    if guidance == "cfg":
        cond, uncond = dict(tokens=tok, **inputs), dict(tokens=null, **inputs)
        return classifier_free(model, scale, cond, uncond), None
    if guidance not in ("none", "clip"):
        raise ValueError(f"guidance must be 'none', 'cfg' or 'clip', not {guidance!r}")
    fn = lambda xt, t: model(xt, t, tokens=tok, **inputs)  # noqa: E731
    if guidance == "none":
        return fn, None
    if noised_clip is None:
        raise ValueError("CLIP guidance needs a noised CLIP (glide.NOISED_CLIP.load())")
    return fn, clip_grad(noised_clip, list(prompts), scale)


def sample(
    model,
    diffusion,
    prompts,
    *,
    guidance: str = "cfg",
    scale: float = 3.0,
    steps: int = 25,
    eta: float = 1.0,
    seed: int = 0,
    noised_clip=None,
    trace: bool = False,
    **inputs,
):
    """Images (n, 3, res, res), on the CPU in [-1, 1], for caption prompts, by DDIM (eta = 1 by
    default: at 25 steps, eta = 0 left background noise in notebook 05). See `guided_model`."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    fn, cond_fn = guided_model(
        model, prompts, guidance, scale=scale, noised_clip=noised_clip, **inputs
    )
    gen = torch.Generator().manual_seed(seed)
    x = seeded_noise((len(prompts), 3, model.res, model.res), gen, runtime.device_of(model))
    return diffusion.ddim_sample(fn, x, steps, eta, cond_fn, gen, trace)


def upsample(upsampler, diffusion, low_res, prompts=None, *, scale=1.0, steps=25, eta=1.0, seed=0):
    """The second stage: 2x images from samples low_res (n, 3, r, r) and their captions (None:
    the empty caption, as unCLIP's upsampler, which never reads one)."""
    prompts = [EMPTY] * len(low_res) if prompts is None else prompts
    inputs = dict(scale=scale, steps=steps, eta=eta, seed=seed, low_res=low_res)
    return sample(upsampler, diffusion, prompts, guidance="cfg", **inputs)
