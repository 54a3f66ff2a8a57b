"""The shapes world: a synthetic captioned dataset whose truth is known.

Each image holds one to three flat-coloured shapes on a plain background; each caption comes
from a small grammar. Scenes are sampled and rendered with vectorized numpy, so 50,000 images
take seconds. Every image keeps its ground-truth scene, which is what lets the judge
(`t2i.world.judge`) check a generated image against its caption.

Layout: the canvas is a 3x3 grid of cells; each object sits in its own cell (with a little
jitter), and objects in one scene never share a colour and never sit in neighbouring cells,
so they never overlap. Some compositions are held out of every training split on purpose
(see `HELD_OUT_PAIRS`, `HELD_OUT_COMBOS`): the toy version of DALL-E's avocado armchair.

Serves every notebook (notebook 00 introduces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERSION = 1  # bump when the generator changes, so cached datasets are regenerated

# --- the vocabulary: public constants ---------------------------------------------------------

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "cyan": (40, 200, 210),
}
SHAPES: list[str] = ["circle", "square", "triangle"]
SIZES: list[str] = ["small", "large"]
BACKGROUND: tuple[int, int, int] = (235, 235, 235)

COLOR_NAMES = list(COLORS)
PALETTE = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.float32) / 255.0

# Half-extent of an object as a fraction of the image side, per size (small, large).
RADII = (0.13, 0.2)
JITTER = 0.02
# Centres of the grid's columns (and rows), pulled in from 1/6 and 5/6 so nothing is clipped.
CELL_CENTERS = np.array([0.24, 0.5, 0.76])
# Shape outlines relative to that half-extent, chosen so the three shapes look equally big.
SQUARE_HALF = 0.88  # half side of a square
TRIANGLE_CIRCUM = 1.25  # circumradius of an (apex-up, equilateral) triangle

# The 3x3 grid: column names, row names, and the phrase for each cell (row, col).
COLS = ["left", "center", "right"]
ROWS = ["top", "middle", "bottom"]
POSITIONS: list[str] = [
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
]  # index = 3 * row + col
RELATIONS: list[str] = ["left of", "right of", "above", "below"]

# Held out of every training split: a colour-shape pair never seen in any training scene, and a
# two-object combination whose parts are seen only apart.
HELD_OUT_PAIRS: list[tuple[str, str]] = [("purple", "triangle")]
HELD_OUT_COMBOS: list[tuple[tuple[str, str], tuple[str, str]]] = [
    (("red", "circle"), ("blue", "square"))
]


@dataclass
class Scenes:
    """Ground truth of a batch of scenes; object slots past `count` are -1."""

    count: np.ndarray  # (n,) objects per scene, 1..3
    color: np.ndarray  # (n, 3) index into COLOR_NAMES
    shape: np.ndarray  # (n, 3) index into SHAPES
    size: np.ndarray  # (n, 3) index into SIZES
    cell: np.ndarray  # (n, 3) index into POSITIONS
    cx: np.ndarray  # (n, 3) centre x as a fraction of the width
    cy: np.ndarray  # (n, 3) centre y as a fraction of the height
    relation: np.ndarray  # (n,) index into RELATIONS (object 0 relative to object 1) or -1

    def __len__(self) -> int:
        return len(self.count)

    def __getitem__(self, idx) -> Scenes:
        return Scenes(**{k: v[idx] for k, v in self.__dict__.items()})

    def objects(self, i: int) -> list[dict]:
        """Scene i as a list of readable objects."""
        return [
            dict(
                color=COLOR_NAMES[self.color[i, j]],
                shape=SHAPES[self.shape[i, j]],
                size=SIZES[self.size[i, j]],
                position=POSITIONS[self.cell[i, j]],
            )
            for j in range(self.count[i])
        ]


def alone(s: Scenes, j: int) -> Scenes:
    """Object j of each scene by itself, as a one-object scene (object 0 where a scene has no
    object j): the caption of what an editor erases and asks to have drawn again."""
    k = np.minimum(j, s.count - 1)
    rows = np.arange(len(s))

    def pick(a, fill):
        out = np.full_like(a, fill)
        out[:, 0] = a[rows, k]
        return out

    return Scenes(
        count=np.ones_like(s.count),
        color=pick(s.color, -1),
        shape=pick(s.shape, -1),
        size=pick(s.size, -1),
        cell=pick(s.cell, -1),
        cx=pick(s.cx, np.nan),
        cy=pick(s.cy, np.nan),
        relation=np.full_like(s.relation, -1),
    )


# Pairs of cells that are not neighbours (Chebyshev distance 2): objects there cannot overlap.
_FAR_PAIRS = np.array(
    [
        (a, b)
        for a in range(9)
        for b in range(9)
        if max(abs(a // 3 - b // 3), abs(a % 3 - b % 3)) == 2
    ]
)
_CORNERS = np.array([0, 2, 6, 8])


def _sample_cells(rng: np.random.Generator, count: np.ndarray) -> np.ndarray:
    n = len(count)
    cell = np.full((n, 3), -1)
    one, two, three = count == 1, count == 2, count == 3
    cell[one, 0] = rng.integers(0, 9, one.sum())
    cell[two, :2] = _FAR_PAIRS[rng.integers(0, len(_FAR_PAIRS), two.sum())]
    # Three objects: three of the four corners, in random order.
    corners = np.argsort(rng.random((three.sum(), 4)), axis=1)[:, :3]
    cell[three] = _CORNERS[corners]
    return cell


def _pair_mask(color, shape, valid, pair) -> np.ndarray:
    c, s = COLOR_NAMES.index(pair[0]), SHAPES.index(pair[1])
    return (color == c) & (shape == s) & valid


def _held_out(color, shape, valid) -> np.ndarray:
    """Per scene: does it contain a held-out pair or combination?"""
    bad = np.zeros(len(color), dtype=bool)
    for pair in HELD_OUT_PAIRS:
        bad |= _pair_mask(color, shape, valid, pair).any(1)
    for a, b in HELD_OUT_COMBOS:
        has_a = _pair_mask(color, shape, valid, a).any(1)
        has_b = _pair_mask(color, shape, valid, b).any(1)
        bad |= has_a & has_b
    return bad


def held_out_scenes(scenes: Scenes) -> np.ndarray:
    """Per scene: does it hold a held-out pair or combination (none of the train split does)?"""
    return _held_out(scenes.color, scenes.shape, scenes.color >= 0)


def _sample_attributes(rng, n, count):
    valid = np.arange(3)[None, :] < count[:, None]
    # Distinct colours per scene: the first three of a random permutation.
    color = np.argsort(rng.random((n, len(COLORS))), axis=1)[:, :3]
    shape = rng.integers(0, len(SHAPES), (n, 3))
    size = rng.integers(0, len(SIZES), (n, 3))
    return valid, color, shape, size


def sample_scenes(
    n: int,
    seed: int = 0,
    split: str = "train",
    counts: tuple[int, ...] = (1, 2, 3),
    count_probs: tuple[float, ...] | None = None,
) -> Scenes:
    """Draw n random scenes.

    split: "train" or "test" exclude the held-out compositions; "heldout" draws only scenes
    that contain one (a held-out pair, or for two or more objects, a held-out combination).
    """
    if split not in ("train", "test", "heldout"):
        raise ValueError(f"split must be 'train', 'test' or 'heldout', not {split!r}")
    rng = np.random.default_rng(seed)
    p = np.array(count_probs or [2.0 ** -(c - 1) for c in counts])  # 1 : 1/2 : 1/4 by default
    count = rng.choice(np.array(counts), size=n, p=p / p.sum())
    valid, color, shape, size = _sample_attributes(rng, n, count)
    # Redraw the scenes on the wrong side of the split until none is left (vectorized rejection).
    want_heldout = split == "heldout"
    if want_heldout:
        _force_held_out(rng, count, color, shape)
    for _ in range(100):
        wrong = _held_out(color, shape, valid) != want_heldout
        if not wrong.any():
            break
        _, color[wrong], shape[wrong], size[wrong] = _sample_attributes(
            rng, wrong.sum(), count[wrong]
        )
        if want_heldout:
            sub_c, sub_s = color[wrong], shape[wrong]
            _force_held_out(rng, count[wrong], sub_c, sub_s)
            color[wrong], shape[wrong] = sub_c, sub_s
    else:
        raise RuntimeError("could not draw scenes for this split")

    cell = _sample_cells(rng, count)
    row, col = cell // 3, cell % 3
    jitter = rng.uniform(-JITTER, JITTER, (2, n, 3))
    cx = np.where(valid, CELL_CENTERS[col] + jitter[0], np.nan)
    cy = np.where(valid, CELL_CENTERS[row] + jitter[1], np.nan)
    for arr in (color, shape, size, cell):
        arr[~valid] = -1
    # The relation of object 0 to object 1 in two-object scenes: the axis on which they differ
    # by two cells (a random one of the two for diagonal pairs).
    relation = np.full(n, -1)
    two = count == 2
    dcol = col[:, 0] - col[:, 1]
    drow = row[:, 0] - row[:, 1]
    use_row = (dcol == 0) | ((drow != 0) & (rng.random(n) < 0.5))
    rel = np.where(use_row, np.where(drow < 0, 2, 3), np.where(dcol < 0, 0, 1))
    relation[two] = rel[two]
    return Scenes(count, color, shape, size, cell, cx, cy, relation)


def _force_held_out(rng, count, color, shape):
    """Plant a held-out composition in each scene (in place), keeping colours distinct."""
    n = len(count)
    rows = np.arange(n)
    pick = rng.integers(0, len(HELD_OUT_PAIRS) + len(HELD_OUT_COMBOS), n)
    pick[count == 1] = rng.integers(0, len(HELD_OUT_PAIRS), (count == 1).sum())
    for k, pair in enumerate(HELD_OUT_PAIRS):
        sel = pick == k
        _plant(color, shape, rows[sel], rng.integers(0, count[sel]), pair)
    for k, combo in enumerate(HELD_OUT_COMBOS):
        sel = pick == len(HELD_OUT_PAIRS) + k
        for slot, pair in enumerate(combo):
            _plant(color, shape, rows[sel], np.full(sel.sum(), slot), pair)


def _plant(color, shape, rows, slot, pair):
    """Give object `slot` of scenes `rows` the (colour, shape) pair; a scene's other object
    that already had that colour takes the planted object's old colour."""
    c, s = COLOR_NAMES.index(pair[0]), SHAPES.index(pair[1])
    old = color[rows, slot].copy()
    for k in range(3):
        clash = (color[rows, k] == c) & (slot != k)
        color[rows[clash], k] = old[clash]
    color[rows, slot] = c
    shape[rows, slot] = s


# --- rendering ------------------------------------------------------------------------------


def render(scenes: Scenes, res: int = 32, chunk: int = 4096) -> np.ndarray:
    """Render scenes to uint8 images of shape (n, res, res, 3), anti-aliased edges."""
    out = np.empty((len(scenes), res, res, 3), dtype=np.uint8)
    for start in range(0, len(scenes), chunk):
        out[start : start + chunk] = _render_chunk(scenes[start : start + chunk], res)
    return out


def render_tensor(scenes: Scenes, res: int = 32):
    """`render` as the models' input: a float tensor (n, 3, res, res) in [-1, 1]."""
    import torch

    return torch.from_numpy(render(scenes, res)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _render_chunk(s: Scenes, res: int) -> np.ndarray:
    coords = (np.arange(res, dtype=np.float32) + 0.5) / res
    img = np.empty((len(s), res, res, 3), dtype=np.float32)
    img[:] = np.array(BACKGROUND, dtype=np.float32) / 255.0
    for j in range(3):
        for kind in range(len(SHAPES)):
            idx = np.nonzero((s.count > j) & (s.shape[:, j] == kind))[0]
            if len(idx) == 0:
                continue
            r = np.array(RADII, dtype=np.float32)[s.size[idx, j]][:, None, None]
            dx = coords[None, None, :] - s.cx[idx, j, None, None].astype(np.float32)
            dy = coords[None, :, None] - s.cy[idx, j, None, None].astype(np.float32)
            sdf = SIGNED_DISTANCE[SHAPES[kind]](dx, dy, r)
            # Coverage of a pixel from the signed distance measured in pixels (anti-aliasing).
            alpha = np.clip(0.5 - sdf * res, 0.0, 1.0)[..., None]
            col = PALETTE[s.color[idx, j]][:, None, None, :]
            img[idx] += alpha * (col - img[idx])
    return np.round(img * 255).astype(np.uint8)


def _circle(dx, dy, r):
    return np.sqrt(dx**2 + dy**2) - r


def _square(dx, dy, r):
    return np.maximum(np.abs(dx), np.abs(dy)) - SQUARE_HALF * r


def _triangle(dx, dy, r):
    # Equilateral, apex up, its bounding box centred on (cx, cy): the max over its three edges'
    # half-plane distances (normals point down, up-left and up-right in image coordinates).
    R = TRIANGLE_CIRCUM * r
    dy = dy - R / 4  # the centroid sits R/4 below the centre of the bounding box
    s3 = np.sqrt(3) / 2
    return np.maximum(np.maximum(dy, -0.5 * dy + s3 * dx), -0.5 * dy - s3 * dx) - R / 2


# Signed distance (negative inside) from offsets (dx, dy) to an outline of half-extent r.
SIGNED_DISTANCE = {"circle": _circle, "square": _square, "triangle": _triangle}
