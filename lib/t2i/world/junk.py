"""Adversarial images for the judge (notebook 00, tests): junk it must say "no" to.

Each kind comes with captions and the facts that must not hold: noise, blank canvases, smeared
blobs, half-erased shapes and merged pairs are no object at all, so every fact the caption states
is false (and "clean" too, but for the blank canvas); a shape of the wrong colour or the wrong
shape, an extra object, and a speckled background each falsify one fact. A judge that fits
templates but forgets to ask whether the fit is good, or reads colours from stray pixels, fails
here; `judge.rejection_table` reports how often it says "no".
"""

from __future__ import annotations

import numpy as np

from t2i.world import grammar, shapes

_BG = np.array(shapes.BACKGROUND, np.float32) / 255.0
# Facts a one-object caption states; none of them holds where there is no object.
_NO_OBJECT = ["color", "shape", "size", "position", "count", "all"]

KINDS = {
    "uniform noise": _NO_OBJECT + ["clean"],
    "gaussian noise": _NO_OBJECT + ["clean"],
    "blank canvas": _NO_OBJECT,
    "blurred blob": _NO_OBJECT + ["clean"],
    "half shape": _NO_OBJECT + ["clean"],
    "merged shapes": _NO_OBJECT + ["clean"],
    "wrong colour": ["color", "all"],
    "wrong shape": ["shape", "all"],
    "extra object": ["count", "all"],
    "speckled background": ["clean", "all"],
}


def _coverage(res: int, cx: float, cy: float, r: float, shape: str) -> np.ndarray:
    c = (np.arange(res, dtype=np.float32) + 0.5) / res
    sdf = shapes.SIGNED_DISTANCE[shape](c[None, :] - cx, c[:, None] - cy, np.float32(r))
    return np.clip(0.5 - sdf * res, 0.0, 1.0)


def _paint(alpha: np.ndarray, color: int) -> np.ndarray:
    img = _BG + alpha[..., None] * (shapes.PALETTE[color] - _BG)
    return (img * 255).round().clip(0, 255).astype(np.uint8)


def _replace_word(caption: str, old: str, new: str) -> str:
    return " ".join(new if w == old else w for w in caption.split())


def make(kind: str, n: int, res: int = 32, seed: int = 0):
    """n images (uint8, n x res x res x 3) of one junk kind, their captions, and the facts
    (`KINDS[kind]`) that the judge must find false in every one of them."""
    if kind not in KINDS:
        raise ValueError(f"unknown junk kind {kind!r}; one of {list(KINDS)}")
    rng = np.random.default_rng(seed)
    scenes = shapes.sample_scenes(n, seed=seed, split="test", counts=(1,))
    captions = grammar.caption(scenes, seed)
    images = shapes.render(scenes, res)
    coords = (np.arange(res) + 0.5) / res
    color, shape = scenes.color[:, 0], scenes.shape[:, 0]
    if kind == "uniform noise":
        images = rng.integers(0, 256, images.shape, dtype=np.uint8)
    elif kind == "gaussian noise":
        noisy = _BG + rng.normal(0, rng.uniform(0.1, 0.4, (n, 1, 1, 1)), images.shape)
        images = (noisy.clip(0, 1) * 255).round().astype(np.uint8)
    elif kind == "blank canvas":
        images[:] = shapes.BACKGROUND
    elif kind == "blurred blob":  # a Gaussian smear of the caption's colour, 2 to 5 px at 32x32
        for i in range(n):
            sigma = rng.uniform(0.06, 0.15)
            d2 = (coords[None, :] - scenes.cx[i, 0]) ** 2 + (coords[:, None] - scenes.cy[i, 0]) ** 2
            images[i] = _paint(np.exp(-d2 / (2 * sigma**2)), color[i])
    elif kind == "half shape":  # erase 35-65% of the object's area beyond a random straight cut
        dark = (images.astype(np.float32) / 255.0 - _BG).any(-1)
        for i in range(n):
            angle = rng.uniform(0, 2 * np.pi)
            if shapes.SHAPES[shape[i]] == "triangle":
                # A cut parallel to a side leaves a smaller triangle, a shape and not junk: keep
                # the cut at least 20 degrees off every side.
                angle = (
                    np.pi / 2 + rng.integers(6) * np.pi / 3 + rng.uniform(np.pi / 9, 2 * np.pi / 9)
                )
            proj = (coords[None, :] - scenes.cx[i, 0]) * np.cos(angle) + (
                coords[:, None] - scenes.cy[i, 0]
            ) * np.sin(angle)
            cut = np.quantile(proj[dark[i]], rng.uniform(0.35, 0.65))
            images[i][proj > cut] = shapes.BACKGROUND
    elif kind == "merged shapes":  # the caption's shape overlapping a second of the same colour
        for i in range(n):
            r = shapes.RADII[scenes.size[i, 0]]
            cx, cy = rng.uniform(0.35, 0.65, 2)
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.4) * r
            other = shapes.SHAPES[rng.integers(len(shapes.SHAPES))]
            alpha = np.maximum(
                _coverage(res, cx, cy, r, shapes.SHAPES[shape[i]]),
                _coverage(res, cx + dist * np.cos(angle), cy + dist * np.sin(angle), r, other),
            )
            images[i] = _paint(alpha, color[i])
    elif kind == "wrong colour":
        shift = rng.integers(1, len(shapes.COLORS), n)
        new = [shapes.COLOR_NAMES[(c + s) % len(shapes.COLORS)] for c, s in zip(color, shift)]
        captions = [
            _replace_word(t, shapes.COLOR_NAMES[c], w) for t, c, w in zip(captions, color, new)
        ]
    elif kind == "wrong shape":
        shift = rng.integers(1, len(shapes.SHAPES), n)
        new = [shapes.SHAPES[(s + k) % len(shapes.SHAPES)] for s, k in zip(shape, shift)]
        captions = [_replace_word(t, shapes.SHAPES[s], w) for t, s, w in zip(captions, shape, new)]
    elif kind == "extra object":  # two objects drawn, the caption names the first only
        two = shapes.sample_scenes(n, seed=seed, split="test", counts=(2,))
        images = shapes.render(two, res)
        captions = grammar.caption(_first_object(two), seed)
    elif kind == "speckled background":  # 3-6% of the pixels turned to palette colours
        for i in range(n):
            dots = rng.random((res, res)) < rng.uniform(0.03, 0.06)
            images[i][dots] = (shapes.PALETTE[rng.integers(0, 6, dots.sum())] * 255).round()
    return images, captions, KINDS[kind]


def _first_object(s: shapes.Scenes) -> shapes.Scenes:
    """Copies of the scenes that keep only their first object."""
    fields = {k: v.copy() for k, v in s.__dict__.items()}
    fields["count"][:] = 1
    fields["relation"][:] = -1
    for k in ("color", "shape", "size", "cell"):
        fields[k][:, 1:] = -1
    for k in ("cx", "cy"):
        fields[k][:, 1:] = np.nan
    return shapes.Scenes(**fields)
