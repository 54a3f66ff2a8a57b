"""Datasets of the shapes world: scenes, their renders and captions, generated deterministically
for a seed and cached as .npz files under data/datasets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from t2i.core import checkpoint, runtime
from t2i.world.grammar import caption
from t2i.world.shapes import VERSION, Scenes, render, sample_scenes


@dataclass
class ShapesDataset:
    """Images (uint8, n x res x res x 3), their captions and their scenes."""

    images: np.ndarray
    captions: list[str]
    scenes: Scenes

    def __len__(self) -> int:
        return len(self.captions)

    def tensor(self, idx=slice(None)):
        """Images as a float tensor in [-1, 1], shape (n, 3, res, res)."""
        x = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0


def make_dataset(n: int, res: int = 32, seed: int = 0, split: str = "train", counts=(1, 2, 3)):
    """Generate n scenes, their images at res x res and their captions (deterministic)."""
    scenes = sample_scenes(n, seed=seed, split=split, counts=counts)
    return ShapesDataset(render(scenes, res), caption(scenes, seed), scenes)


def load_dataset(n: int, res: int = 32, seed: int = 0, split: str = "train", counts=(1, 2, 3)):
    """`make_dataset`, cached as a .npz under data/datasets (it is cheap, but not free). A
    cached file that cannot be read (truncated, corrupt) is set aside as NAME.misfit, with a
    warning that names it, and the dataset generated again."""
    name = f"shapes-{split}-n{n}-r{res}-s{seed}-c{''.join(map(str, counts))}-v{VERSION}.npz"
    path = runtime.data_dir() / "datasets" / name
    if path.exists():
        try:
            with np.load(path) as z:
                scenes = Scenes(**{k: z[k] for k in Scenes.__dataclass_fields__})
                ds = ShapesDataset(z["images"], [str(c) for c in z["captions"]], scenes)
            if ds.images.shape != (n, res, res, 3) or len(ds) != n:
                raise ValueError(f"{len(ds)} captions, images {ds.images.shape}: not this set")
            return ds
        except Exception as err:  # truncated, corrupt, or not this dataset
            checkpoint.set_aside(
                path, f"could not be read ({type(err).__name__}: {err})", "generating it again"
            )
    ds = make_dataset(n, res, seed, split, counts)
    with runtime.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=ds.images, captions=np.array(ds.captions), **ds.scenes.__dict__)
    return ds
