"""The judge: reads a shapes-world image and says which facts of a caption hold.

It plays the part that Inception scores, FID and human raters played in the papers, with one
advantage: the world is synthetic, so its truth is known. The judge is hand-written pixel logic,
independent of every model the course trains (nothing learned, nothing to fool by training).

How it reads an image: every pixel is explained as the background blended with one palette
colour, x = bg + alpha * (colour - bg); each colour's alpha map is that object's soft mask (the
colours in a scene are distinct). A mask's area says whether the object is there, its centroid
gives the position, and its shape and size come by analysis by synthesis: the judge draws every
shape at both sizes on that centroid with the shapes world's own renderer and keeps the drawing
closest to the mask. An object counts only if that drawing fits the mask (soft IoU >= MIN_FIT):
noise, smears, half shapes and merged shapes are "blobs", which carry no fact. Everything else
that differs from the background is clutter, and a clean image has almost none.

Scoring a caption pairs each object it states with one readable object of the image, and reads
every fact of that object (colour, shape, size, position) from its partner: "a red circle" holds
only where one object is both red and a circle.

Serves every notebook (notebook 00 introduces it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from t2i.core import runtime
from t2i.core.stats import Rate
from t2i.world import grammar, junk, shapes

BG = torch.tensor(shapes.BACKGROUND, dtype=torch.float32) / 255.0
PAL = torch.from_numpy(shapes.PALETTE)
FACTS = ["count", "clean", "color", "shape", "size", "position", "binding", "relation"]

# Cell boundaries: halfway between the grid's column (row) centres.
_CELL_SPLITS = torch.tensor((shapes.CELL_CENTERS[:-1] + shapes.CELL_CENTERS[1:]) / 2)
# An object must cover at least this fraction of the smallest object's area to count.
_MIN_AREA = 0.35 * (3 * math.sqrt(3) / 4) * (shapes.TRIANGLE_CIRCUM * shapes.RADII[0]) ** 2


def as_unit_images(images) -> torch.Tensor:
    """Accept uint8 (n, H, W, 3) arrays or float (n, 3, H, W) tensors in [-1, 1]; return
    float (n, 3, H, W) in [0, 1].

    Another shape or dtype, and NaN or infinite values, raise a ValueError that names them.
    Float values beyond [-1, 1] (noise, a decoder's overshoot) are clamped. A float batch that
    lies in [0, 1] and spans more than half of it gets a warning, as [0, 1] images look so: in
    [-1, 1] every palette colour has a channel below -0.5, so a batch that shows any object has
    negative values (and a blank one spans nothing)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    shape = tuple(images.shape)
    if images.dtype == torch.uint8:
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"uint8 images must be (n, H, W, 3), not {shape}")
        return images.permute(0, 3, 1, 2).float() / 255.0
    if not images.is_floating_point():
        raise ValueError(
            f"images must be uint8 (n, H, W, 3) or float (n, 3, H, W) in [-1, 1], "
            f"not {images.dtype}"
        )
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"float images must be (n, 3, H, W) in [-1, 1], not {shape}")
    x = images.detach().float().cpu()
    finite = torch.isfinite(x).flatten(1).all(1)
    if not finite.all():
        where = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(
            f"images {where[:5]}{' ...' if len(where) > 5 else ''} hold "
            f"{int(x.isnan().sum())} NaN and {int(x.isinf().sum())} infinite values"
        )
    lo, hi = (x.min().item(), x.max().item()) if x.numel() else (-1.0, 1.0)
    if 0 <= lo and hi <= 1 and hi - lo > 0.5:
        runtime.warn(
            f"the images lie in [0, 1] (min {lo:.3f}, max {hi:.3f}), but the judge reads float "
            "images in [-1, 1]: pass 2 * x - 1 if they are [0, 1] images"
        )
    return ((x + 1) / 2).clamp(0, 1)


@dataclass
class Reading:
    """What the judge sees. Per image and palette colour, numpy arrays of shape (n, n_colors):
    `present` marks a readable object (a flat shape that fits a template), `blob` marks colour
    mass that is not one (noise, a smear, half a shape, two shapes merged). Per image (n,):
    `clutter`, the fraction of pixels that differ from the background and belong to no object,
    and `grain`, the RMS distance from the background colour of the pixels outside objects."""

    present: np.ndarray  # bool: a readable object of this colour
    blob: np.ndarray  # bool: mass of this colour that is no readable object
    shape: np.ndarray  # index into SHAPES (meaningful where present)
    size: np.ndarray  # index into SIZES
    cell: np.ndarray  # index into POSITIONS
    cx: np.ndarray  # centroid, fraction of width
    cy: np.ndarray
    area: np.ndarray  # fraction of the image
    fit: np.ndarray  # soft IoU of the colour's mask with its best template (0 where no mass)
    clutter: np.ndarray  # (n,) fraction of pixels
    grain: np.ndarray  # (n,) RMS per channel, in [0, 1] units

    def objects(self, i: int) -> list[dict]:
        """Image i's readable objects in readable form."""
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

    def clean(self, i: int) -> bool:
        """Image i has nothing but its readable objects on a plain background."""
        return bool(
            not self.blob[i].any() and self.clutter[i] <= MAX_CLUTTER and self.grain[i] <= MAX_GRAIN
        )


# A readable object fits its best template with at least this soft IoU. Clean renders reach
# 0.89 at 16 px and 0.96 at 32; of half shapes, merged pairs and smears, fewer than 1% do.
MIN_FIT = 0.82
# Edge softness of the templates, as a Gaussian sigma in fractions of the image side: a sharp
# render and one blurred by 1/32 of the side (a pixel at 32x32), so that a soft-edged but whole
# shape still fits; a smear does not.
EDGES = (0.0, 1 / 32)

# Foreground outside every readable object, as a fraction of the image, that still counts as a
# clean background: one stray pixel at 16x16, four at 32x32 (a speckled background exceeds it).
MAX_CLUTTER = 0.004
# The background's RMS distance from its colour (per channel, in [0, 1]) that still counts as
# plain: a render with noise of std 0.05 passes, one of std 0.1 does not.
MAX_GRAIN = 0.08


def _alpha(x: torch.Tensor):
    """Per colour, soft coverage alpha (n, C, H, W), zero where another colour explains the
    pixel better or none explains it; and the pixels no colour explains (n, H, W)."""
    v = x - BG.view(1, 3, 1, 1)
    d = PAL - BG  # (C, 3)
    alpha = torch.einsum("nkhw,ck->nchw", v, d) / (d**2).sum(1).view(1, -1, 1, 1)
    alpha = alpha.clamp(0, 1)
    resid = ((v[:, None] - alpha[:, :, None] * d.view(1, -1, 3, 1, 1)) ** 2).sum(2)
    best = resid.argmin(1, keepdim=True)
    own = torch.zeros_like(alpha).scatter_(1, best, 1.0)
    explained = resid.gather(1, best) < 0.15
    unexplained = ~explained[:, 0] & ((v**2).sum(1) > 0.15)
    return alpha * own * explained, unexplained


def read(images) -> Reading:
    """Detect each palette colour's object, measure it, and say whether it is a readable shape."""
    x = as_unit_images(images).contiguous()
    n, _, h, w = x.shape
    raw, unexplained = _alpha(x)
    # Drop isolated pixels (noise): keep mass within reach of a pixel with two or more neighbours.
    b = (raw > 0.5).float()
    k = torch.ones(1, 1, 3, 3)
    nbrs = F.conv2d(b.reshape(-1, 1, h, w), k, padding=1).view_as(b) - b
    b = b * (nbrs >= 2)
    m = raw * (F.conv2d(b.reshape(-1, 1, h, w), k, padding=1).view_as(b) > 0) * (raw > 0.1)

    area = m.sum((2, 3)) / (h * w)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    mass = m.sum((2, 3)).clamp_min(1e-6)
    cx = (m.sum(2) * xs).sum(-1) / mass
    cy = (m.sum(3) * ys).sum(-1) / mass
    massive = area >= _MIN_AREA / 4  # enough colour to be an object or to spoil the image

    # Analysis by synthesis: render every (shape, size) at the mask's centroid, keep the one
    # closest to the mask, and call the object readable only if that template fits it well.
    shape = torch.zeros(n, len(PAL), dtype=torch.long)
    size = torch.zeros_like(shape)
    fit = torch.zeros(n, len(PAL))
    covered = torch.zeros(n, h, w, dtype=torch.bool)  # pixels the readable objects account for
    idx = torch.nonzero(massive)
    if len(idx):
        obs = m[idx[:, 0], idx[:, 1]]  # (k, H, W)
        tmpl = _templates(cx[massive].numpy(), cy[massive].numpy(), h).flatten(1, 3)
        err = ((tmpl - obs[:, None]) ** 2).sum((-1, -2))
        best = err.argmin(1)
        t = tmpl[torch.arange(len(idx)), best]  # (k, H, W)
        iou = torch.minimum(t, obs).sum((1, 2)) / torch.maximum(t, obs).sum((1, 2))
        kind = best // len(EDGES)
        shape[massive], size[massive], fit[massive] = kind // 2, kind % 2, iou
        good = iou >= MIN_FIT
        halo = F.max_pool2d((t[good] > 0.05)[:, None].float(), 3, 1, 1)[:, 0] > 0
        covered.index_put_((idx[good, 0],), halo, accumulate=True)
    present = (area >= _MIN_AREA) & (fit >= MIN_FIT)
    blob = massive & ~present
    # Clutter: foreground that no readable object accounts for (speckles count, noise too).
    fg = (raw > 0.5).any(1) | unexplained
    clutter = (fg & ~covered).float().mean((1, 2))
    outside = (~covered).float()
    sq = ((x - BG.view(1, 3, 1, 1)) ** 2).mean(1)
    grain = ((sq * outside).sum((1, 2)) / outside.sum((1, 2)).clamp_min(1)).sqrt()
    col = torch.bucketize(cx.contiguous(), _CELL_SPLITS.float())
    row = torch.bucketize(cy.contiguous(), _CELL_SPLITS.float())
    fields = (present, blob, shape, size, 3 * row + col, cx, cy, area, fit, clutter, grain)
    return Reading(*(f.numpy() for f in fields))


def _templates(cx: np.ndarray, cy: np.ndarray, res: int) -> torch.Tensor:
    """Coverage maps (k, n_shapes, n_sizes, n_edges, res, res) of each shape, size and edge
    softness centred (by centroid) on each (cx, cy), from the shapes world's own signed distances:
    a sharp edge ramps over one pixel as the renderer draws it, a soft one as a blurred edge."""
    coords = (np.arange(res, dtype=np.float32) + 0.5) / res
    out = torch.empty(len(cx), len(shapes.SHAPES), len(shapes.SIZES), len(EDGES), res, res)
    for si, name in enumerate(shapes.SHAPES):
        for zi, r in enumerate(shapes.RADII):
            # A triangle's centroid sits R/4 below the centre of its box (see shapes.py).
            shift = shapes.TRIANGLE_CIRCUM * r / 4 if name == "triangle" else 0.0
            dx = coords[None, None, :] - cx[:, None, None]
            dy = coords[None, :, None] - (cy[:, None, None] - shift)
            sdf = torch.from_numpy(shapes.SIGNED_DISTANCE[name](dx, dy, np.float32(r)) * res)
            for ei, sigma in enumerate(EDGES):
                if sigma == 0:
                    out[:, si, zi, ei] = (0.5 - sdf).clamp(0.0, 1.0)
                else:
                    px = sigma * res * math.sqrt(2)
                    out[:, si, zi, ei] = 0.5 * torch.special.erfc(sdf / px)
    return out


# --- scoring captions -----------------------------------------------------------------------

# How much each stated fact weighs when the judge pairs the caption's objects with the image's.
_MATCH_WEIGHTS = {"color": 4.01, "shape": 4.0, "size": 1.0, "position": 1.0}


def _match(wanted: list[dict], seen: list[dict]) -> list[dict | None]:
    """Pair each object the caption states with a distinct object of the image (or None),
    maximizing the weighted number of facts that agree: the caption's objects are then read
    from the objects that stand for them, never from pixels elsewhere."""
    best, best_score = [None] * len(wanted), -1.0
    slots = seen + [None] * len(wanted)
    for perm in itertools.permutations(range(len(slots)), len(wanted)):
        pick = [slots[j] for j in perm]
        total = sum(
            _MATCH_WEIGHTS[key] * (o is not None and o[key] == want[key])
            for want, o in zip(wanted, pick)
            for key in want
        )
        if total > best_score:
            best, best_score = pick, total
    return best


def check(reading: Reading, i: int, facts: grammar.CaptionFacts) -> dict[str, bool]:
    """Which of a caption's facts (`grammar.parse_caption`) hold in image i: the facts the caption
    states, read from the readable object that stands for each of its objects, plus "count"
    (exactly as many objects as stated, and no unreadable blob) and "clean" (nothing else on the
    background)."""
    seen = reading.objects(i)
    found = _match(facts.objects, seen)
    out: dict[str, list[bool]] = {}
    for want, o in zip(facts.objects, found):
        for key in ("color", "shape", "size", "position"):
            if key in want:
                out.setdefault(key, []).append(o is not None and o[key] == want[key])
    out["count"] = [len(seen) == len(facts.objects) and not reading.blob[i].any()]
    out["clean"] = [reading.clean(i)]
    if len(facts.objects) > 1:
        out["binding"] = [
            all(
                o is not None and all(o[k] == want[k] for k in ("color", "shape") if k in want)
                for want, o in zip(facts.objects, found)
            )
        ]
    if facts.relation is not None and len(found) >= 2:
        a, b = found[0], found[1]
        ok = a is not None and b is not None
        if ok:
            ia = shapes.COLOR_NAMES.index(a["color"])
            ib = shapes.COLOR_NAMES.index(b["color"])
            ok = _relation_holds(
                facts.relation,
                reading.cx[i, ia] - reading.cx[i, ib],
                reading.cy[i, ia] - reading.cy[i, ib],
            )
        out["relation"] = [ok]
    result = {k: all(v) for k, v in out.items()}
    result["all"] = all(result.values())
    return result


def _relation_holds(relation: str, dx: float, dy: float) -> bool:
    return bool({"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[relation])


def score_each(images, captions: list[str]) -> list[dict[str, bool]]:
    """Per image: which of its caption's facts hold. The captions are parsed (a bad one named)
    before any image is read."""
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    facts = {c: grammar.parse_caption(c) for c in set(captions)}
    reading = read(images)
    return [check(reading, i, facts[c]) for i, c in enumerate(captions)]


def marks(images, captions: list[str]) -> list[bool]:
    """Per image: every fact of its caption holds (the judge's "all"), for a grid's ✓ and ✗."""
    return [row["all"] for row in score_each(images, captions)]


def fact_rate(images, captions: list[str]) -> float:
    """Of all the facts the captions state (each image's colour, shape, size, place, ...), the
    fraction that hold: the per-fact average that `score`'s "all" (every fact of an image) is
    stricter than."""
    hits = [v for row in score_each(images, captions) for k, v in row.items() if k != "all"]
    return sum(hits) / len(hits)


def score(images, captions: list[str] | str) -> dict:
    """The judge's table for a batch: per fact, the fraction of images where it holds (a
    `stats.Rate`, over the images whose caption states that fact, with its n and 95% interval),
    plus "all" (every stated fact holds) and "n" (images)."""
    if isinstance(captions, str):
        captions = [captions] * len(images)
    return summarize(score_each(images, captions))


def summarize(rows: list[dict[str, bool]]) -> dict:
    """`score`'s table from the per-image rows of `score_each`."""
    table = {}
    for fact in FACTS + ["all"]:
        vals = [r[fact] for r in rows if fact in r]
        if vals:
            table[fact] = Rate.of(vals)
    table["n"] = len(rows)
    return table


# --- the judge's own accuracy ---------------------------------------------------------------


def accuracy_vs_truth(images, scenes: shapes.Scenes) -> dict[str, Rate]:
    """Per fact, how often the judge's reading agrees with the ground-truth scene.

    Unlike scoring a true caption, this also punishes seeing what is not there: the readable
    colours must be exactly the scene's colours, with no blob ("count"), the background must
    read as clean, and each object's attributes must match its truth.
    """
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    r = read(images)
    hits: dict[str, list[bool]] = {f: [] for f in FACTS}
    for i in range(len(scenes)):
        truth = {scenes.color[i, j]: j for j in range(scenes.count[i])}
        hits["count"].append(
            set(truth) == set(np.flatnonzero(r.present[i])) and not r.blob[i].any()
        )
        hits["clean"].append(r.clean(i))
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
            ok = _relation_holds(rel, r.cx[i, a] - r.cx[i, b], r.cy[i, a] - r.cy[i, b])
            hits["relation"].append(ok and bool(r.present[i, a] and r.present[i, b]))
    return {f: Rate.of(v) for f, v in hits.items() if v}


def off_palette(images) -> torch.Tensor:
    """Per image: the mean distance of its pixels (RGB in [0, 1]) to the nearest colour of the
    shapes world (the palette and the background). A render is exact but for its anti-aliased
    edges (about 0.014 at 16x16); noise left on a sample raises it."""
    x = as_unit_images(images)
    world = torch.tensor([*shapes.COLORS.values(), shapes.BACKGROUND], dtype=torch.float32) / 255
    pixels = x.permute(0, 2, 3, 1).reshape(len(x), -1, 3)
    d = torch.cdist(
        pixels, world.expand(len(x), -1, -1), compute_mode="donot_use_mm_for_euclid_dist"
    )
    return d.min(-1).values.mean(1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (n, 3, H, W) images; sigma in pixels."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
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


def rejection_table(n: int = 300, res: int = 32, seed: int = 2024) -> dict[str, dict[str, Rate]]:
    """Per junk kind (`t2i.world.junk`), per fact that must not hold there: how often the judge says
    "no" (1.0 is perfect), over n images."""
    table = {}
    for kind in junk.KINDS:
        images, captions, false_facts = junk.make(kind, n, res, seed)
        rows = score_each(images, captions)
        table[kind] = {f: Rate.of(not r[f] for r in rows) for f in false_facts}
    return table
