"""Generating with a frozen CLIP by optimization (notebook 04): optimize whatever makes the image
so that CLIP finds it close to a prompt. Shared by the pixel-space baseline (here), CLIPDraw
(`clipdraw`, strokes) and VQGAN-CLIP (`vqgan_clip`, codebook latents); each only changes
what is optimized.

Two ingredients from the CLIPDraw paper (Frans et al. 2021) and the VQGAN-CLIP notebooks
(Crowson et al. 2022): the loss is taken over several random augmentations (or cutouts) of the
image, so that only changes that survive them, real structure, pay off; and the distance is the
squared great-circle distance between unit embeddings, 2 * arcsin(|x - y| / 2)^2. Without the
augmentations the optimizer finds adversarial pixel patterns that CLIP likes and nobody sees.

The optimizer is the course's one trainer, `t2i.core.train.fit`, with the image's parameters as the
"model" and the frozen CLIP inside the loss.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from t2i import ch03_clip as clip_mod
from t2i.core import runtime, train
from t2i.core.stats import Rate
from t2i.world import grammar, judge, shapes

BACKGROUND = torch.tensor(shapes.BACKGROUND, dtype=torch.float32) / 127.5 - 1  # in [-1, 1]


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors (VQGAN-CLIP's loss), in [0, pi^2/2]."""
    return (x - y).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Sample images through affine maps theta (N, 2, 3); outside is the shapes' background."""
    bg = BACKGROUND.to(x.device).view(1, 3, 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - bg, grid, align_corners=False) + bg


def augment(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n random views of each image (n * B, 3, H, W): scale 0.8-1.15, rotation +-15 degrees,
    shear, a shift of up to 10% of the side, and a little pixel noise (CLIPDraw used random
    perspective and resized crops; these are their small cousins)."""
    N = n * len(x)
    r = lambda *s: torch.rand(*s, generator=gen).to(x.device)  # noqa: E731
    scale = 0.8 + 0.35 * r(N)
    angle = (r(N) - 0.5) * 0.52
    shear = (r(N) - 0.5) * 0.3
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear, (r(N) - 0.5) * 0.4], 1),
         torch.stack([sin, cos, (r(N) - 0.5) * 0.4], 1)], 1
    )  # fmt: skip
    views = _warp(repeat(x, "b c h w -> (n b) c h w", n=n), theta)
    return views + 0.03 * torch.randn(views.shape, generator=gen).to(x.device)


def cutouts(x: torch.Tensor, n: int, gen: torch.Generator, min_frac: float = 0.6) -> torch.Tensor:
    """n random square crops per image, 60-100% of the side, resized back (VQGAN-CLIP's
    MakeCutouts): (n * B, 3, H, W)."""
    N = n * len(x)
    size = min_frac + (1 - min_frac) * torch.rand(N, generator=gen)
    shift = (1 - size)[:, None] * (2 * torch.rand(N, 2, generator=gen) - 1)
    zero = torch.zeros(N)
    theta = torch.stack(
        [torch.stack([size, zero, shift[:, 0]], 1), torch.stack([zero, size, shift[:, 1]], 1)], 1
    )
    return _warp(repeat(x, "b c h w -> (n b) c h w", n=n), theta.to(x.device))


AUGMENTATIONS = {"none": None, "augment": augment, "cutouts": cutouts}


class Pixels(nn.Module):
    """The baseline: every pixel is a parameter (DeepDream-style), started from the background
    plus noise. Values are clamped to [-1, 1] with a straight-through gradient."""

    def __init__(self, n: int, res: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        noise = 0.1 * torch.randn(n, 3, res, res, generator=g)
        self.x = nn.Parameter(BACKGROUND.view(1, 3, 1, 1) + noise)

    def forward(self):
        return self.x + (self.x.clamp(-1, 1) - self.x).detach()


@dataclass
class Result:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    frames: list = field(default_factory=list)  # images every `every` steps
    loss: list = field(default_factory=list)
    seconds: float = 0.0


@contextlib.contextmanager
def frozen(*models):
    """Turn off gradients of the models' weights for a while (gradients still flow through)."""
    flags = [[p.requires_grad for p in m.parameters()] for m in models]
    for m in models:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, fl in zip(models, flags):
            for p, f in zip(m.parameters(), fl):
                p.requires_grad_(f)


def optimize(
    image: nn.Module,
    clip_model: nn.Module,
    prompts: list[str],
    steps: int,
    lr: float,
    augmentation: str = "augment",
    n_views: int = 8,
    negatives: list[str] | None = None,
    negative_weight: float = 0.3,
    every: int = 10,
    seed: int = 0,
    desc: str = "optimizing",
    frozen_models: tuple = (),
) -> Result:
    """Fit the parameters of `image` (a module whose forward() returns (B, 3, H, W) images in
    [-1, 1]) so that image b matches prompts[b] under CLIP, with random views per step.

    negatives: optional prompts to move away from (CLIPDraw's negative prompts), one per image.
    """
    aug = AUGMENTATIONS[augmentation]
    dev = runtime.device_of(image)
    with torch.no_grad():
        target = clip_model.encode_text(prompts).to(dev)
        avoid = clip_model.encode_text(negatives).to(dev) if negatives else None
    result = Result(images=None)

    def loss_fn(m, batch):
        step, gen = batch
        x = m()
        if step % every == 0:
            result.frames.append(x.detach().float().cpu())
        views = x if aug is None else aug(x, n_views, gen)
        emb = rearrange(clip_model.encode_image(views), "(n b) e -> n b e", b=len(target))
        loss = spherical_distance(emb, target).mean()
        if avoid is not None:
            loss = loss - negative_weight * spherical_distance(emb, avoid).mean()
        return loss

    t0 = time.perf_counter()
    with frozen(clip_model, *frozen_models):
        hist = train.fit(
            image,
            loss_fn,
            lambda step, gen: (step, gen),
            steps,
            lr=lr,
            warmup=max(1, steps // 10),
            clip=0.0,
            seed=seed,
            amp=False,  # small batches: bf16 autocast costs more than it saves here
            desc=desc,
            live_plot=False,
        )
    with torch.no_grad():
        result.images = image().detach().float().cpu()
    result.frames.append(result.images)
    result.loss, result.seconds = hist.loss, time.perf_counter() - t0
    return result


# --- measuring: CLIP's opinion vs the judge's ----------------------------------------------


@torch.no_grad()
def clip_vs_judge(clip_model, images: torch.Tensor, prompts: list[str]) -> dict:
    """For images made for one-object prompts ("a red circle"): the CLIP score, how often CLIP's
    zero-shot colour and shape agree with the prompt, how often the judge does, and how often CLIP
    is fooled: it sees the prompt's colour and shape but the judge does not."""
    facts = [grammar.parse_caption(p).objects[0] for p in prompts]
    want_c = torch.tensor([shapes.COLOR_NAMES.index(f["color"]) for f in facts])
    want_s = torch.tensor([shapes.SHAPES.index(f["shape"]) for f in facts])
    clip_ok = (clip_mod.zero_shot(clip_model, images, "color") == want_c) & (
        clip_mod.zero_shot(clip_model, images, "shape") == want_s
    )
    rows = judge.score_each(images, prompts)
    color = torch.tensor([r["color"] for r in rows])
    both = torch.tensor([r["color"] and r["shape"] for r in rows])
    return {
        "CLIP score": float(clip_mod.clip_scores(clip_model, images, prompts).mean()),
        "CLIP sees colour+shape": Rate.of(clip_ok),
        "judge colour": Rate.of(color),
        "judge colour+shape": Rate.of(both),
        "fools CLIP, not the judge": Rate.of(clip_ok & ~both),
    }


# The command line's flags of `sample clipdraw` and `sample vqgan-clip` (`t2i.core.recipe`).
SAMPLE_OPTIONS = {
    "--prompt": dict(required=True),
    "--steps": dict(type=int, default=None, help="optimisation steps (default: the profile's)"),
}
