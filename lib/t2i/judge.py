"""The judge: reads a shapes-world image and says which facts of a caption hold.

It plays the part that Inception scores, FID and human raters played in the papers, with one
advantage: the world is synthetic, so its truth is known. The judge is hand-written pixel logic,
independent of every model the course trains (nothing learned, nothing to fool by training).

How it reads an image: every pixel is explained as the background blended with one palette
colour, x = bg + alpha * (colour - bg); each colour's alpha map is that object's soft mask (the
colours in a scene are distinct). A mask's area says whether the object is there, its centroid
gives the position, and its shape and size come by analysis by synthesis: the judge draws every
shape at both sizes on that centroid with the shapes world's own renderer and keeps the drawing
closest to the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import shapes

BG = torch.tensor(shapes.BACKGROUND, dtype=torch.float32) / 255.0
PAL = torch.from_numpy(shapes.PALETTE)
FACTS = ["count", "color", "shape", "size", "position", "binding", "relation"]

# Cell boundaries: halfway between the grid's column (row) centres.
_CELL_SPLITS = torch.tensor((shapes.CELL_CENTERS[:-1] + shapes.CELL_CENTERS[1:]) / 2)
# An object must cover at least this fraction of the smallest object's area to count.
_MIN_AREA = 0.35 * (3 * math.sqrt(3) / 4) * (shapes.TRIANGLE_CIRCUM * shapes.RADII[0]) ** 2


def as_unit_images(images) -> torch.Tensor:
    """Accept uint8 (n, H, W, 3) arrays or float (n, 3, H, W) tensors in [-1, 1]; return
    float (n, 3, H, W) in [0, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float() / 255.0
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)


@dataclass
class Reading:
    """What the judge sees, per image and palette colour: numpy arrays of shape (n, n_colors)."""

    present: np.ndarray  # bool
    shape: np.ndarray  # index into SHAPES
    size: np.ndarray  # index into SIZES
    cell: np.ndarray  # index into POSITIONS
    cx: np.ndarray  # centroid, fraction of width
    cy: np.ndarray
    area: np.ndarray  # fraction of the image

    def objects(self, i: int) -> list[dict]:
        """Image i's detected objects in readable form."""
        out = []
        for c in np.flatnonzero(self.present[i]):
            out.append(
                dict(
                    color=shapes.COLOR_NAMES[c],
                    shape=shapes.SHAPES[self.shape[i, c]],
                    size=shapes.SIZES[self.size[i, c]],
                    position=shapes.POSITIONS[self.cell[i, c]],
                )
            )
        return out


def _masks(x: torch.Tensor):
    """Per colour: soft coverage alpha (n, C, H, W), zero where another colour explains better."""
    v = x - BG.view(1, 3, 1, 1)
    d = PAL - BG  # (C, 3)
    alpha = torch.einsum("nkhw,ck->nchw", v, d) / (d**2).sum(1).view(1, -1, 1, 1)
    alpha = alpha.clamp(0, 1)
    resid = ((v[:, None] - alpha[:, :, None] * d.view(1, -1, 3, 1, 1)) ** 2).sum(2)
    best = resid.argmin(1, keepdim=True)
    own = torch.zeros_like(alpha).scatter_(1, best, 1.0)
    explained = resid.gather(1, best) < 0.15
    return alpha * own * explained * (alpha > 0.35)


def read(images) -> Reading:
    """Detect each palette colour's object and measure it."""
    x = as_unit_images(images).contiguous()
    n, _, h, w = x.shape
    m = _masks(x).contiguous()
    # Drop isolated pixels (noise): keep mass within reach of a pixel with two or more neighbours.
    b = (m > 0.5).float()
    k = torch.ones(1, 1, 3, 3)
    nbrs = F.conv2d(b.reshape(-1, 1, h, w), k, padding=1).view_as(b) - b
    b = b * (nbrs >= 2)
    m = m * (F.conv2d(b.reshape(-1, 1, h, w), k, padding=1).view_as(b) > 0)

    area = m.sum((2, 3)) / (h * w)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    mass = m.sum((2, 3)).clamp_min(1e-6)
    cx = (m.sum(2) * xs).sum(-1) / mass
    cy = (m.sum(3) * ys).sum(-1) / mass
    present = area >= _MIN_AREA

    # Analysis by synthesis: render every (shape, size) at the object's centroid and keep the one
    # whose coverage map is closest to the observed mask.
    shape = torch.zeros(n, len(PAL), dtype=torch.long)
    size = torch.zeros_like(shape)
    idx = torch.nonzero(present)
    if len(idx):
        obs = m[idx[:, 0], idx[:, 1]]  # (k, H, W)
        tmpl = _templates(cx[present].numpy(), cy[present].numpy(), h)  # (k, S, 2, H, W)
        err = ((tmpl - obs[:, None, None]) ** 2).sum((-1, -2)).flatten(1)
        best = err.argmin(1)
        shape[present], size[present] = best // 2, best % 2
    col = torch.bucketize(cx.contiguous(), _CELL_SPLITS.float())
    row = torch.bucketize(cy.contiguous(), _CELL_SPLITS.float())
    fields = (present, shape, size, 3 * row + col, cx, cy, area)
    return Reading(*(f.numpy() for f in fields))


def _templates(cx: np.ndarray, cy: np.ndarray, res: int) -> torch.Tensor:
    """Coverage maps (k, n_shapes, n_sizes, res, res) of each shape and size centred (by
    centroid) on each (cx, cy), drawn with the shapes world's own renderer."""
    coords = (np.arange(res, dtype=np.float32) + 0.5) / res
    out = np.empty((len(cx), len(shapes.SHAPES), len(shapes.SIZES), res, res), np.float32)
    for si, name in enumerate(shapes.SHAPES):
        for zi, r in enumerate(shapes.RADII):
            # A triangle's centroid sits R/4 below the centre of its box (see shapes.py).
            shift = shapes.TRIANGLE_CIRCUM * r / 4 if name == "triangle" else 0.0
            dx = coords[None, None, :] - cx[:, None, None]
            dy = coords[None, :, None] - (cy[:, None, None] - shift)
            sdf = shapes.SIGNED_DISTANCE[name](dx, dy, np.float32(r))
            out[:, si, zi] = np.clip(0.5 - sdf * res, 0.0, 1.0)
    return torch.from_numpy(out)


# --- scoring captions -----------------------------------------------------------------------


def check(reading: Reading, i: int, text: str) -> dict[str, bool]:
    """Which of the caption's facts hold in image i (only the facts the caption states)."""
    facts = shapes.parse_caption(text)
    seen = reading.objects(i)
    by_color = {o["color"]: o for o in seen}
    out: dict[str, list[bool]] = {}

    def add(name, ok):
        out.setdefault(name, []).append(bool(ok))

    found = []
    for obj in facts.objects:
        if "color" in obj:
            add("color", obj["color"] in by_color)
            match = by_color.get(obj["color"])
        else:
            match = next((o for o in seen if o["shape"] == obj.get("shape")), None)
        if "shape" in obj:
            add("shape", any(o["shape"] == obj["shape"] for o in seen))
        for key in ("size", "position"):
            if key in obj:
                add(key, match is not None and match[key] == obj[key])
        found.append(match)
    add("count", len(seen) == len(facts.objects))
    if len(facts.objects) > 1:
        add(
            "binding",
            all(
                m is not None and m["shape"] == o.get("shape", m["shape"])
                for o, m in zip(facts.objects, found)
            ),
        )
    if facts.relation is not None and len(found) >= 2:
        a, b = found[0], found[1]
        ok = a is not None and b is not None
        if ok:
            ia = shapes.COLOR_NAMES.index(a["color"])
            ib = shapes.COLOR_NAMES.index(b["color"])
            dx = reading.cx[i, ia] - reading.cx[i, ib]
            dy = reading.cy[i, ia] - reading.cy[i, ib]
            ok = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[
                facts.relation
            ]
        add("relation", ok)
    result = {k: all(v) for k, v in out.items()}
    result["all"] = all(result.values())
    return result


def score_each(images, captions: list[str]) -> list[dict[str, bool]]:
    """Per image: which of its caption's facts hold."""
    reading = read(images)
    return [check(reading, i, c) for i, c in enumerate(captions)]


def score(images, captions: list[str] | str) -> dict[str, float]:
    """The judge's table for a batch: the fraction of images where each fact holds (over the
    images whose caption states that fact), plus "all" (every stated fact holds) and "n"."""
    if isinstance(captions, str):
        captions = [captions] * len(images)
    rows = score_each(images, captions)
    table = {}
    for fact in FACTS + ["all"]:
        vals = [r[fact] for r in rows if fact in r]
        if vals:
            table[fact] = sum(vals) / len(vals)
    table["n"] = len(rows)
    return table


# --- the judge's own accuracy ---------------------------------------------------------------


def accuracy_vs_truth(images, scenes: shapes.Scenes) -> dict[str, float]:
    """Per fact, how often the judge's reading agrees with the ground-truth scene.

    Unlike scoring a true caption, this also punishes seeing what is not there: the detected
    colours must be exactly the scene's colours ("count"), and each object's attributes must
    match its truth.
    """
    r = read(images)
    n = len(scenes)
    hits: dict[str, list[bool]] = {f: [] for f in FACTS}
    for i in range(n):
        truth = {scenes.color[i, j]: j for j in range(scenes.count[i])}
        hits["count"].append(set(truth) == set(np.flatnonzero(r.present[i])))
        bound = True
        for c, j in truth.items():
            ok = bool(r.present[i, c])
            hits["color"].append(ok)
            shape_ok = ok and r.shape[i, c] == scenes.shape[i, j]
            hits["shape"].append(shape_ok)
            hits["size"].append(ok and r.size[i, c] == scenes.size[i, j])
            hits["position"].append(ok and r.cell[i, c] == scenes.cell[i, j])
            bound &= shape_ok
        if scenes.count[i] > 1:
            hits["binding"].append(bound)
        if scenes.relation[i] >= 0:
            a, b = scenes.color[i, 0], scenes.color[i, 1]
            rel = shapes.RELATIONS[scenes.relation[i]]
            dx, dy = r.cx[i, a] - r.cx[i, b], r.cy[i, a] - r.cy[i, b]
            ok = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[rel]
            hits["relation"].append(bool(ok and r.present[i, a] and r.present[i, b]))
    return {f: float(np.mean(v)) for f, v in hits.items() if v}


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (n, 3, H, W) images; sigma in pixels."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def accuracy_table(
    n: int = 2000,
    resolutions=(16, 32, 64),
    blurs=(0.5, 1.0, 1.5),
    noises=(0.1, 0.2, 0.4),
    seed: int = 12345,
) -> dict[str, dict[str, float]]:
    """The judge's accuracy on n fresh renders per resolution, then at 32x32 under Gaussian blur
    (sigma in pixels) and Gaussian noise (std on the [-1, 1] pixel scale)."""
    scenes = shapes.sample_scenes(n, seed=seed, split="test")
    table = {}
    for res in resolutions:
        table[f"{res}x{res}"] = accuracy_vs_truth(shapes.render(scenes, res), scenes)
    clean = torch.from_numpy(shapes.render(scenes, 32)).permute(0, 3, 1, 2).float() / 127.5 - 1
    gen = torch.Generator().manual_seed(seed)
    for s in blurs:
        table[f"32x32 blur {s}px"] = accuracy_vs_truth(blur(clean, s), scenes)
    for s in noises:
        noisy = clean + s * torch.randn(clean.shape, generator=gen)
        table[f"32x32 noise {s}"] = accuracy_vs_truth(noisy, scenes)
    return table
