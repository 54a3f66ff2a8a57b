"""CLIPDraw (Frans, Soros & Witkowski 2021, arXiv 2106.14843): draw a prompt with strokes.

No model is trained: a set of random Bezier strokes (`raster`) is optimized with Adam so
that a frozen CLIP finds random augmentations of the drawing close to the prompt (and, with
negative prompts, far from those). The paper used 256 strokes on 224x224 with a GPU renderer
(diffvg); we use a few dozen on 32x32 with a torch one.

Serves notebook 04.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from t2i import ch03_clip as clip
from t2i.ch04_generating_with_clip import clip_optimization, raster
from t2i.core import recipe, runtime


def default_config() -> dict:
    return dict(
        strokes=runtime.pick(smoke=4, cpu=16, gpu=32),
        steps=runtime.pick(smoke=4, cpu=120, gpu=300),
        lr=0.05,
        n_views=runtime.pick(smoke=2, cpu=8, gpu=16),
        augmentation="augment",
    )


class Drawing(nn.Module):
    """B drawings of S strokes each; forward() renders them (B, 3, res, res) in [-1, 1].

    Parameters are unconstrained; sigmoids map them to widths of 1-4 pixels, and colours and
    opacities in [0, 1]. Each stroke starts as a short random curve (points within 0.15 of a
    random start), coloured at random, as in CLIPDraw.
    """

    def __init__(self, n: int, strokes: int, res: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        start = 0.1 + 0.8 * torch.rand(n, strokes, 1, 2, generator=g)
        steps = 0.15 * (torch.rand(n, strokes, 3, 2, generator=g) - 0.5)
        self.ctrl = nn.Parameter(torch.cat([start, start + steps.cumsum(2)], 2))
        self.width = nn.Parameter(torch.zeros(n, strokes))
        self.color = nn.Parameter(torch.randn(n, strokes, 4, generator=g) * 0.5 + 0.3)
        self.res = res

    def forward(self):
        width = 1 + 3 * torch.sigmoid(self.width)
        color = torch.sigmoid(4 * self.color)
        bg = (clip_optimization.BACKGROUND.to(self.ctrl.device) + 1) / 2
        return raster.render(self.ctrl, width, color, self.res, bg) * 2 - 1


def draw(
    clip_model,
    prompts: list[str],
    cfg: dict | None = None,
    negatives: list[str] | None = None,
    seed: int = 0,
    **overrides,
) -> clip_optimization.Result:
    """One drawing per prompt (batched); overrides change cfg (steps, strokes, augmentation...)."""
    cfg = {**(cfg or default_config()), **overrides}
    drawing = Drawing(len(prompts), cfg["strokes"], clip_model.res, seed)
    drawing.to(runtime.device_of(clip_model))
    return clip_optimization.optimize(
        drawing,
        clip_model,
        prompts,
        cfg["steps"],
        cfg["lr"],
        cfg["augmentation"],
        cfg["n_views"],
        negatives=negatives,
        seed=seed,
        desc="CLIPDraw",
    )


def _sampler(prompt: str, steps: int | None = None):
    model, overrides = clip.CLIP.load(), {"steps": steps} if steps else {}
    return lambda n, seed: draw(model, [prompt] * n, seed=seed, **overrides).images


# no model of its own: `python -m t2i sample clipdraw` optimises strokes
CLIPDRAW = recipe.Recipe(
    "clipdraw",
    sampler=_sampler,
    options={"sample": clip_optimization.SAMPLE_OPTIONS},
)
RECIPES = (CLIPDRAW,)
