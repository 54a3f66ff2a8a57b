"""Pictures for the notebooks: image grids with captions, before/after rows, animations."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from t2i.core import runtime
from t2i.core.stats import Rate


def to_numpy_images(images) -> np.ndarray:
    """(n, H, W, 3) floats in [0, 1] from uint8 (n, H, W, 3) arrays or (n, 3, H, W) tensors in
    [-1, 1]."""
    if torch.is_tensor(images):
        x = images.detach().float().cpu()
        return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    x = np.asarray(images)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x


def show_grid(
    images, captions=None, ncols: int = 8, size: float = 1.4, title=None, wrap=22, marks=None
):
    """A grid of images, each with its (wrapped) caption above it, and with marks (one bool per
    image, e.g. the judge's "all": `judge.marks`) a ✓ or ✗ before the caption. Returns the
    figure."""
    x = to_numpy_images(images)
    n = len(x)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    if marks is not None:
        texts = captions if captions is not None else [""] * len(marks)
        captions = [("✓ " if m else "✗ ") + str(c) for m, c in zip(marks, texts)]
    extra = 0.35 if captions is not None else 0.0
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * size, nrows * (size + extra)), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i], interpolation="nearest")
            if captions is not None:
                ax.set_title("\n".join(textwrap.wrap(str(captions[i]), wrap)), fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def before_after(rows: dict, ncols: int | None = None, size: float = 1.2, titles=None):
    """Rows of images with a label each, e.g. {"original": x, "reconstruction": y}; titles, if
    given, head the columns. Labels are wrapped to the row's height."""
    arrays = {k: to_numpy_images(v) for k, v in rows.items()}
    ncols = ncols or max(len(v) for v in arrays.values())
    fig, axes = plt.subplots(
        len(arrays), ncols, figsize=(ncols * size, len(arrays) * size), squeeze=False
    )
    for r, (label, x) in enumerate(arrays.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(x):
                ax.imshow(x[c], interpolation="nearest")
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel("\n".join(textwrap.wrap(label, max(8, int(size * 12)))), fontsize=8)
    for c, title in enumerate(titles or []):
        axes[0, c].set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def animate(frames, captions=None, interval: int = 120, size: float = 1.4):
    """An animation of a list of image batches (e.g. x_t along a sampler), shown as a grid per
    frame. Returns an IPython HTML object (a self-contained player) for a notebook."""
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    batches = [to_numpy_images(f) for f in frames]
    n = len(batches[0])
    fig, axes = plt.subplots(1, n, figsize=(n * size, size + 0.3), squeeze=False)
    ims = []
    for i, ax in enumerate(axes[0]):
        ax.axis("off")
        ims.append(ax.imshow(batches[0][i], interpolation="nearest"))
        if captions is not None:
            ax.set_title(str(captions[i]), fontsize=7)
    label = fig.suptitle("frame 0", fontsize=8)

    def draw(k):
        for i, im in enumerate(ims):
            im.set_data(batches[k][i])
        label.set_text(f"frame {k + 1} / {len(batches)}")
        return ims

    anim = FuncAnimation(fig, draw, frames=len(batches), interval=interval, blit=False)
    html = HTML(anim.to_jshtml())
    plt.close(fig)
    return html


def markdown_table(rows: dict[str, dict], digits: int = 3):
    """A dict of rows {name: {column: value}} as a Markdown table (display it in a notebook).
    A `stats.Rate` shows with its 95% interval; a row of rates with one n gets an "n" column."""
    from IPython.display import Markdown

    rows = {name: _with_n(r) for name, r in rows.items()}
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    cols = [c for c in cols if c != "n"] + (["n"] if "n" in cols else [])

    def fmt(v):
        if isinstance(v, Rate):
            lo, hi = v.interval()
            return f"{v:.{digits}f} [{lo:.{digits - 1}f}, {hi:.{digits - 1}f}]"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    return Markdown("\n".join(lines))


def print_table(rows: dict[str, dict], as_json: bool = False, digits: int = 3) -> None:
    """Print rows {name: {column: value}} for the command line: one JSON object (a Rate as
    {"value", "n", "interval95"}), or the Markdown table of `markdown_table`."""
    import json

    if as_json:

        def plain(v):
            if isinstance(v, Rate):
                return {"value": round(float(v), 4), "n": v.n, "interval95": v.interval()}
            return round(v, 4) if isinstance(v, float) else v

        print(json.dumps({k: {c: plain(v) for c, v in r.items()} for k, r in rows.items()}))
    else:
        print(markdown_table(rows, digits).data)


def _with_n(row: dict) -> dict:
    """The row with an "n" entry: its rates' n, or their range where they differ."""
    ns = [v.n for v in row.values() if isinstance(v, Rate)]
    if "n" in row or not ns:
        return row
    return {**row, "n": ns[0] if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}"}


def read_pngs(paths) -> np.ndarray:
    """Image files of one size as uint8 (n, H, W, 3), the judge's input."""
    images = []
    for path in paths:
        img = plt.imread(path)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (img.clip(0, 1) * 255).round().astype(np.uint8)
        if images and img.shape != images[0].shape:
            raise ValueError(f"{path}: size {img.shape[:2]} differs from {images[0].shape[:2]}")
        images.append(img)
    return np.stack(images)


def save_pngs(images, out: str, prefix: str, start: int = 0) -> list:
    """Write images (as `to_numpy_images` accepts) to out/prefix-000.png, ... (numbered from
    `start`); returns the paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_numpy_images(images), start):
        paths.append(folder / f"{prefix}-{i:03d}.png")
        with runtime.atomic_path(paths[-1]) as tmp:  # an interrupt leaves no half-written file
            plt.imsave(tmp, img.clip(0, 1), format="png")
    return paths


def save_batches(draw, n: int, out: str, prefix: str, batch: int = 256) -> list:
    """n images drawn `batch` at a time by draw(start, count) and written by `save_pngs` as each
    batch comes, with a progress bar: a large request never builds one huge batch, and an
    interrupted one keeps what it drew. Returns the paths."""
    from tqdm.auto import tqdm

    paths = []
    with tqdm(total=n, desc=f"sampling {prefix}", unit="image") as bar:
        for start in range(0, n, batch):
            count = min(batch, n - start)
            paths += save_pngs(draw(start, count), out, prefix, start)
            bar.update(count)
    return paths
