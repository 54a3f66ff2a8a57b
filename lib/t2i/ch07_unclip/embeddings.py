"""CLIP's embeddings as unCLIP uses them: the paired training data (images, captions and their
frozen CLIP embeddings), embedding new images and texts, and the geometry of the sphere they live
on (slerp, text diffs, PCA reconstructions)."""

from __future__ import annotations

import functools
import json
import math

import torch
import torch.nn.functional as F

from t2i import ch03_clip as clip
from t2i.world import shapes
from t2i.world.prompts import TOKENIZER, captioned_scenes


def embed_scale(embed: int) -> float:
    return math.sqrt(embed)


@functools.lru_cache(maxsize=1)
def paired_data(n: int, p_partial: float, res: int, seed: int, clip_config: str):
    """n training scenes of one or two objects with a caption each (full or partial, as GLIDE's)
    and their CLIP embeddings: dict of images (n, 3, res, res), tokens, z_img and z_txt (unit
    vectors of the frozen CLIP of notebook 03 whose config is the JSON text `clip_config`)."""
    model = clip.CLIP.load(json.loads(clip_config))
    s, captions = captioned_scenes(n, seed, p_partial)
    tokens = TOKENIZER(captions)
    with torch.no_grad():
        z_img = clip.embed_images(model, shapes.render_tensor(s, model.res)).cpu()
        z_txt = torch.cat([model.encode_text(tokens[k : k + 1024]) for k in range(0, n, 1024)])
    x = shapes.render_tensor(s, res)
    return dict(images=x, tokens=tokens, z_img=z_img, z_txt=z_txt.cpu(), captions=captions)


def pairs_of(cfg: dict) -> dict:
    """`paired_data` of a config's data section."""
    d = cfg["data"]
    clip_config = json.dumps(d["clip"], sort_keys=True)
    return paired_data(d["n_train"], d["p_partial"], d["res"], d["data_seed"], clip_config)


def embed_text(prompts) -> torch.Tensor:
    """Unit CLIP text embeddings of prompts (CLIP of notebook 03)."""
    with torch.no_grad():
        return clip.CLIP.load().encode_text(list(prompts)).cpu()


def embed_image(images) -> torch.Tensor:
    """Unit CLIP image embeddings of images in [-1, 1], resized to CLIP's resolution."""
    model = clip.CLIP.load()
    if images.shape[-1] != model.res:
        images = F.interpolate(images, size=model.res, mode="bilinear", align_corners=False)
    return clip.embed_images(model, images).cpu()


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation along the great circle from a (t = 0) to b (t = 1), row by row
    over the last dimension: sin((1 - t) w) / sin w * a + sin(t w) / sin w * b, w the angle
    between a and b. Unit vectors stay unit; x_T (not unit) keeps about its norm."""
    a_, b_ = F.normalize(a.flatten(1), dim=-1), F.normalize(b.flatten(1), dim=-1)
    w = torch.arccos((a_ * b_).sum(-1).clamp(-1 + 1e-7, 1 - 1e-7)).view(-1, *[1] * (a.dim() - 1))
    return (torch.sin((1 - t) * w) * a + torch.sin(t * w) * b) / torch.sin(w)


def cosine(a, b) -> float:
    """Mean cosine similarity of matching rows."""
    return float(F.cosine_similarity(a, b, dim=-1).mean())


def text_diff(z_img, from_texts, to_texts, amount: float):
    """Text diff (paper sec. 3.3): z_d = normalize(z_t(to) - z_t(from)), and each image
    embedding moved along the great circle toward its z_d by `amount` (0: unchanged, 1: z_d)."""
    n = len(z_img)
    from_texts = [from_texts] * n if isinstance(from_texts, str) else list(from_texts)
    to_texts = [to_texts] * n if isinstance(to_texts, str) else list(to_texts)
    z_d = F.normalize(embed_text(to_texts) - embed_text(from_texts), dim=-1)
    return slerp(z_img, z_d, amount)
