"""unCLIP's manipulations of sec. 3 and 5.1, measured by the judge: variations, text diffs and the
typographic attack, on one-object test renders."""

from __future__ import annotations

import numpy as np
import torch

from t2i import ch03_clip as clip
from t2i.ch07_unclip.decoder import decode, invert
from t2i.ch07_unclip.embeddings import embed_image, text_diff
from t2i.core.stats import Rate
from t2i.world import judge, shapes, typography
from t2i.world.measures import psnr


def short_caption(color: int, shape: int) -> str:
    return f"a {shapes.COLOR_NAMES[color]} {shapes.SHAPES[shape]}"


def single_objects(n: int, seed: int, res: int):
    """n one-object test scenes: (scenes, renders at res, their CLIP image embeddings)."""
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(1,))
    z = embed_image(shapes.render_tensor(s, clip.CLIP.load().res))
    return s, shapes.render_tensor(s, res), z


FACTS = ("color", "shape", "size", "position")


def same_facts(before, after) -> dict[str, list[bool]]:
    """Per image pair, whether the judge reads the single object of `after` with the same colour,
    shape, size and cell as that of `before` (False where either is not one clean object)."""
    a, b = judge.read(before), judge.read(after)
    out = {k: [] for k in FACTS}
    for i in range(len(before)):
        oa, ob = a.objects(i), b.objects(i)
        one = len(oa) == 1 and len(ob) == 1
        for k in FACTS:
            out[k].append(one and oa[0][k] == ob[0][k])
    return out


@torch.no_grad()
def variations(decoder, diffusion, n=48, etas=(0.0, 0.25, 0.5, 1.0), scale=1.0, steps=50, seed=31):
    """Variations of n one-object test renders (paper sec. 3.1): (z_i, x_T by DDIM inversion),
    decoded at each eta. Returns (rows {eta: PSNR and facts kept}, {eta: images}, originals)."""
    s, images, z = single_objects(n, seed, decoder.res)
    x_T = invert(decoder, diffusion, images, z, scale=scale, steps=steps)
    rows, out = {}, {}
    for eta in etas:
        x = decode(
            decoder, diffusion, z, None, scale=scale, steps=steps, eta=eta, seed=seed, x_T=x_T
        )
        kept = same_facts(images, x)
        rows[f"eta = {eta:g}"] = {
            "PSNR (dB)": round(psnr(x, images), 2),
            **{k: Rate.of(v) for k, v in kept.items()},
        }
        out[eta] = x
    return rows, out, images


@torch.no_grad()
def text_diff_sweep(decoder, diffusion, n=48, amounts=None, scale=1.0, steps=50, seed=21):
    """Text diffs on n one-object test renders: "a <colour> <shape>" -> the same with another
    colour (drawn at random), z_i slerped toward z_d by each amount, decoded from the image's own
    inverted x_T (eta = 0). Per image, the sweep *flips* where the judge first reads the new
    colour; there, the other facts (shape, size, cell) are *kept* if they match the original's.
    Returns (summary, {amount: images}, originals, the target captions)."""
    amounts = amounts or [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    s, images, z = single_objects(n, seed, decoder.res)
    x_T = invert(decoder, diffusion, images, z, scale=scale, steps=steps)
    rng = torch.Generator().manual_seed(seed)
    new = (torch.as_tensor(s.color[:, 0]) + torch.randint(1, 6, (n,), generator=rng)) % 6
    src = [short_caption(s.color[i, 0], s.shape[i, 0]) for i in range(n)]
    dst = [short_caption(int(new[i]), s.shape[i, 0]) for i in range(n)]
    frames, flip_at, kept = {}, [None] * n, [False] * n
    for a in amounts:
        z_a = text_diff(z, src, dst, a)
        frames[a] = decode(
            decoder, diffusion, z_a, None, scale=scale, steps=steps, eta=0.0, seed=seed, x_T=x_T
        )
        reading, same = judge.read(frames[a]), same_facts(images, frames[a])
        for i in range(n):
            objs = reading.objects(i)
            target = shapes.COLOR_NAMES[int(new[i])]
            if flip_at[i] is None and len(objs) == 1 and objs[0]["color"] == target:
                flip_at[i] = a
                kept[i] = all(same[k][i] for k in ("shape", "size", "position"))
    flipped = [a is not None for a in flip_at]
    at = [a for a in flip_at if a is not None]
    summary = {
        "flipped": Rate.of(flipped),
        "kept, where flipped": Rate.of([k for k, f in zip(kept, flipped) if f]),
        "mean amount at the flip": float(np.mean(at)) if at else float("nan"),
    }
    return summary, frames, images, dst


@torch.no_grad()
def typographic_variations(decoder, diffusion, n=48, scale=3.0, seed=7):
    """The paper's typographic attack (sec. 5.1): one-object renders with another colour's name
    written in, embedded by CLIP and decoded; does the decoder keep the painted colour or draw
    the written one? Rows for the clean and the written-on images; (rows, attacked images,
    decoded attacked)."""
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(1,))
    res = clip.CLIP.load().res
    clean = shapes.render(s, res)
    truth = s.color[:, 0]
    name = shapes.COLOR_NAMES
    rng = np.random.default_rng(seed)
    wrong = (truth + rng.integers(1, len(shapes.COLORS), n)) % len(shapes.COLORS)
    words = [name[k] for k in wrong]
    attacked = typography.stamp(clean, words, typography.free_row(s, res))
    rows, shown = {}, None
    for row, imgs in [("clean image", clean), ("a wrong colour written in", attacked)]:
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        out = decode(decoder, diffusion, embed_image(x), None, scale=scale, seed=seed)
        reading = judge.read(out)
        colour = [[o["color"] for o in reading.objects(i)] for i in range(n)]
        rows[row] = {
            "keeps the painted colour": Rate.of([name[truth[i]] in colour[i] for i in range(n)]),
            "draws the written colour": Rate.of([name[wrong[i]] in colour[i] for i in range(n)]),
        }
        shown = (x, out)
    return rows, shown[0], shown[1]
