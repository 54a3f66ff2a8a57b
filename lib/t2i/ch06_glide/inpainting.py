"""Inpainting, as GLIDE fine-tunes for it: the masks of fine-tuning, the two ways to fill
erased pixels (the fine-tuned `Inpainter`, or naive known-pixel replacement with the base
model), and the erase-an-object task that measures them."""

from __future__ import annotations

import numpy as np
import torch

from t2i.blocks.diffusion import seeded_noise
from t2i.ch06_glide.models import Inpainter
from t2i.ch06_glide.sampling import guided_model
from t2i.core import runtime
from t2i.core.stats import Rate
from t2i.world import grammar, judge, shapes


def random_masks(n: int, res: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 1, res, res) masks, 1 where pixels are known and 0 where erased: half of them a
    rectangle of a quarter to three quarters of each side, half a blob of two or three discs."""
    yy, xx = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    erased = torch.zeros(n, res, res, dtype=torch.bool)
    u = torch.rand(n, 8, generator=gen)
    for i in range(n):
        if i % 2 == 0:
            h, w = (res * (0.25 + 0.5 * u[i, :2])).long()
            y0, x0 = (u[i, 2] * (res - h + 1)).long(), (u[i, 3] * (res - w + 1)).long()
            erased[i, y0 : y0 + h, x0 : x0 + w] = True
        else:
            for _ in range(2 + int(u[i, 4] < 0.5)):
                cy, cx = torch.rand(2, generator=gen) * res
                r = res * (0.12 + 0.13 * float(torch.rand(1, generator=gen)))
                erased[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    return (~erased).float()[:, None]


def square_masks(centres: torch.Tensor, half: torch.Tensor, res: int) -> torch.Tensor:
    """(n, 1, res, res) masks erasing a square of half-side half[i] (pixels) around each centre
    (x, y), given as fractions of the side."""
    grid = torch.arange(res) + 0.5
    cx, cy = (centres[:, None, None, k] * res for k in (0, 1))
    h = half.float()[:, None, None]
    erased = ((grid[None, None, :] - cx).abs() < h) & ((grid[None, :, None] - cy).abs() < h)
    return (~erased).float()[:, None]


@torch.no_grad()
def inpaint(model, diffusion, image, mask, prompts, *, scale=3.0, steps=25, eta=1.0, seed=0):
    """Fill the erased pixels (mask = 0) of image (n, 3, r, r) to fit the prompts.

    With an `Inpainter`, the model sees the known pixels and the mask. With a plain `Text2Im`,
    the naive method: at every step the known pixels of x_t are replaced by the original noised
    to the same level, so the model only ever sees them as noise. Either way the known pixels
    of the result are the original's exactly."""
    prompts = [prompts] * len(image) if isinstance(prompts, str) else list(prompts)
    dev = runtime.device_of(model)
    image, mask = image.to(dev), mask.to(dev).expand(-1, 1, -1, -1)
    fitted = isinstance(model, Inpainter)
    inputs = dict(image=image, mask=mask) if fitted else {}
    fn, _ = guided_model(model, prompts, "cfg", scale=scale, **inputs)
    gen = torch.Generator().manual_seed(seed)
    x = seeded_noise(image.shape, gen, dev)
    ts = diffusion.timesteps(steps)
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        if not fitted:
            noise = seeded_noise(image.shape, gen, dev)
            noised = diffusion.q_sample(image, torch.full((len(x),), t), noise)
            x = mask * noised + (1 - mask) * x
        x, _ = diffusion.ddim_step(fn, x, t, t_prev, eta, None, gen)
    return (mask * image + (1 - mask) * x).cpu()


def inpaint_task(n: int, res: int, seed: int = 77):
    """n two-object test scenes with the second object erased by a square around its cell:
    (images, masks (1 = known), the erased object's full caption, scenes), as an editor erases
    an object and names what to draw there. A success puts the erased object back."""
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(2,))
    images = shapes.render_tensor(s, res)
    centres = torch.from_numpy(np.stack([s.cx[:, 1], s.cy[:, 1]], 1)).float()
    masks = square_masks((centres * res).round() / res, torch.full((n,), round(res * 0.2)), res)
    return images, masks, grammar.caption(shapes.alone(s, 1), seed=seed), s


def inpaint_score(out, task) -> dict:
    """Per method: `in_mask`, the erased object (its colour and shape) found by the judge with
    its centre inside the erased square; `seam`, the mean jump in colour across the mask's edge
    beyond the real image's jump there (0 = as smooth as the real thing); `known_exact`."""
    images, masks, _, s = task
    reading = judge.read(out)
    res = images.shape[-1]
    hits = []
    for i in range(len(out)):
        c = s.color[i, 1]
        ok = bool(reading.present[i, c]) and not reading.blob[i, c]
        ok = ok and reading.shape[i, c] == s.shape[i, 1]
        if ok:
            x, y = int(reading.cx[i, c] * res), int(reading.cy[i, c] * res)
            ok = masks[i, 0, min(y, res - 1), min(x, res - 1)] == 0
        hits.append(ok)
    known = masks.expand_as(images).bool()
    return {
        "in_mask": Rate.of(hits),
        "seam": float(_edge_jump(out, masks) - _edge_jump(images, masks)),
        "known_exact": bool(torch.equal(out.cpu()[known], images[known])),
    }


def _edge_jump(x, masks) -> torch.Tensor:
    """Mean absolute colour difference between horizontally or vertically adjacent pixels of
    which one is known and the other erased."""
    x = x.cpu()
    jumps = []
    for dim in (2, 3):
        a, b = x.narrow(dim, 0, x.shape[dim] - 1), x.narrow(dim, 1, x.shape[dim] - 1)
        ma, mb = masks.narrow(dim, 0, x.shape[dim] - 1), masks.narrow(dim, 1, x.shape[dim] - 1)
        edge = (ma != mb).expand_as(a)
        jumps.append((a - b).abs()[edge])
    return torch.cat(jumps).mean()
