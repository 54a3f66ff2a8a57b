"""The course's measures on top of the judge: the caption table every text-to-image chapter
reports (with "drawn" and "objects"), the label table of notebook 05 (with the diversity numbers
the guidance sweep trades), and PSNR of reconstructions."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from t2i.core.stats import Rate
from t2i.world import judge, shapes
from t2i.world.classes import CLASSES, caption_of, label_index


def caption_table(images, prompts) -> dict:
    """The judge's table, plus two combined facts: "drawn", every named object's colour and
    shape right (the bar of one-object prompts), and "objects", every named object there with
    its colour (count and colour right, the bar of two-object prompts)."""
    rows = judge.score_each(images, prompts)
    table = judge.summarize(rows)
    table["drawn"] = Rate.of([r.get("color", True) and r["shape"] for r in rows])
    table["objects"] = Rate.of([r["count"] and r.get("color", True) for r in rows])
    return table


def label_table(images, labels) -> dict:
    """The judge on captions 'a <colour> <shape>' (colour, shape, count and 'all'), and two
    diversity numbers among the samples of one class, averaged over classes: `size_entropy`,
    the entropy in bits of the judge's small/large reading (1 for the renders' 50/50 mix, 0 when
    every sample has the same size), and `spread`, the standard deviation of the object's centre
    as a fraction of the image side (renders, uniform over the 3x3 grid: about 0.2); and
    `off_palette`, the mean `judge.off_palette` (noise left on the samples)."""
    labels = [label_index(v) for v in labels]
    table = judge.score(images, [caption_of(v) for v in labels])
    reading = judge.read(images)
    sizes, spreads = [], []
    for c in sorted(set(labels)):
        color = shapes.COLOR_NAMES.index(CLASSES[c][0])
        found = [i for i, v in enumerate(labels) if v == c and reading.present[i, color]]
        if len(found) >= 2:
            p = float(np.mean(reading.size[found, color] == shapes.SIZES.index("large")))
            sizes.append(_binary_entropy(p))
            pts = np.stack([reading.cx[found, color], reading.cy[found, color]], axis=1)
            spreads.append(float(np.sqrt(pts.var(axis=0).mean())))
    table["size_entropy"] = float(np.mean(sizes)) if sizes else 0.0
    table["spread"] = float(np.mean(spreads)) if spreads else 0.0
    table["off_palette"] = float(judge.off_palette(images).mean())
    return table


def _binary_entropy(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else float(-p * np.log2(p) - (1 - p) * np.log2(1 - p))


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2): 10 log10(4/MSE)."""
    mse = F.mse_loss(x.float().clamp(-1, 1), y.float().clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-10))
