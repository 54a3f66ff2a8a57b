"""What CLIP is used for, each measured on the shapes world: search, zero-shot classification
(one prompt against a template ensemble), retrieval, attribute binding, the typographic attack,
and reranking DALL-E's samples."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from t2i.ch03_clip.model import CLIPModel
from t2i.core import runtime
from t2i.core.stats import Rate
from t2i.world import datasets, judge, shapes, typography

PREFIXES = ["a", "there is a", "a picture of a", "an image of a"]


POSITION_PHRASES = [
    "at the top left", "at the top", "at the top right", "on the left", "in the center",
    "on the right", "at the bottom left", "at the bottom", "at the bottom right",
]  # fmt: skip


# Class names per attribute, in the order of the shapes world's indices.
CLASSES = {
    "color": shapes.COLOR_NAMES,
    "shape": shapes.SHAPES,
    "size": shapes.SIZES,
    "position": POSITION_PHRASES,
}


# Templates per attribute ("{}" is the class name); the first one is the single-prompt baseline,
# the ensemble uses them all, like the 80 ImageNet templates of openai/CLIP's notebook.
TEMPLATES = {
    "color": [f"{p} {{}} {s}" for p in PREFIXES for s in shapes.SHAPES],
    "shape": [f"{p} {z}{{}}" for z in ["", "small ", "large "] for p in PREFIXES],
    "size": [f"{p} {{}} {s}" for p in PREFIXES for s in shapes.SHAPES],
    "position": [f"{p} {s} {{}}" for p in PREFIXES for s in shapes.SHAPES],
}


@torch.no_grad()
def class_embeddings(model: CLIPModel, classes: list[str], templates: list[str]) -> torch.Tensor:
    """(n_classes, embed): each class's template embeddings averaged, then renormalised."""
    texts = [t.format(c) for c in classes for t in templates]
    emb = model.encode_text(texts).view(len(classes), len(templates), -1)
    return F.normalize(emb.mean(1), dim=-1)


@torch.no_grad()
def embed_images(model: CLIPModel, images, batch: int = 512) -> torch.Tensor:
    """Unit embeddings of images ((n, 3, H, W) in [-1, 1], or uint8 (n, H, W, 3))."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    dev = model.logit_scale.device
    return torch.cat(
        [model.encode_image(images[k : k + batch].to(dev)) for k in range(0, len(images), batch)]
    )


@torch.no_grad()
def search(model: CLIPModel, image_emb: torch.Tensor, text: str, k: int = 8):
    """Text-to-image retrieval: (indices, cosines) of the k images, of those embedded in
    image_emb (see `embed_images`), nearest to the text."""
    best = (image_emb @ model.encode_text([text])[0]).topk(k)
    return best.indices, best.values


@torch.no_grad()
def zero_shot(model: CLIPModel, images, attribute: str, templates: list[str] | None = None):
    """Predicted class index per image for an attribute, from text prompts alone (by default
    the attribute's whole template ensemble)."""
    classes = class_embeddings(model, CLASSES[attribute], templates or TEMPLATES[attribute])
    return (embed_images(model, images) @ classes.T).argmax(1).cpu()


def single_object_test(n: int, seed: int = 1234, res: int | None = None):
    """Fresh one-object renders of the test split and their true class per attribute."""
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(1,))
    truth = {"color": s.color[:, 0], "shape": s.shape[:, 0], "size": s.size[:, 0],
             "position": s.cell[:, 0]}  # fmt: skip
    return shapes.render(s, res or runtime.image_size()), truth


def zero_shot_table(
    model: CLIPModel, n: int = 600, seed: int = 1234, blur: float = 0.0
) -> dict[str, dict[str, Rate]]:
    """Zero-shot accuracy per attribute on one-object renders, blurred by a Gaussian of `blur`
    pixels where it is set (a harder test): one template vs the ensemble."""
    images, truth = single_object_test(n, seed, model.res)
    if blur:
        images = judge.blur(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, blur)
    table = {}
    for name, first in [("one template", 1), ("ensemble", None)]:
        table[name] = {
            a: Rate.of(zero_shot(model, images, a, TEMPLATES[a][:first]).numpy() == truth[a])
            for a in CLASSES
        }
    return table


@torch.no_grad()
def retrieval(model: CLIPModel, n: int = 1000, seed: int = 4321) -> dict[str, float]:
    """Recall@1 and @5 among n held-out test pairs, text->image and image->text."""
    ds = datasets.make_dataset(n, res=model.res, seed=seed, split="test")
    sim = embed_images(model, ds.images) @ _embed_texts(model, ds.captions).T  # (images, texts)
    out = {}
    for name, s in [("text->image", sim.T), ("image->text", sim)]:
        rank = (s > s.diag()[:, None]).sum(1)  # how many beat the right answer
        out[f"{name} R@1"] = Rate.of(rank < 1)
        out[f"{name} R@5"] = Rate.of(rank < 5)
    return out


@torch.no_grad()
def _embed_texts(model: CLIPModel, texts: list[str], batch: int = 512) -> torch.Tensor:
    return torch.cat([model.encode_text(texts[k : k + batch]) for k in range(0, len(texts), batch)])


def _noun(s, i, j, color=None):
    c = shapes.COLOR_NAMES[s.color[i, j] if color is None else color]
    return f"{shapes.SIZES[s.size[i, j]]} {c} {shapes.SHAPES[s.shape[i, j]]}"


@torch.no_grad()
def binding_test(model: CLIPModel, n: int = 400, seed: int = 99) -> dict[str, float]:
    """Attribute binding: for two-object test scenes, how often CLIP scores the true caption
    above the one with the two colours swapped ("a red square above a blue circle" vs "a blue
    square above a red circle"), per relation word ("and" = no relation stated)."""
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(2,))
    images = shapes.render(s, model.res)
    relations = shapes.RELATIONS + ["and"]
    true, swapped, rel = [], [], []
    for i in range(n):
        r = shapes.RELATIONS[s.relation[i]] if i % 5 else "and"
        word = "and a" if r == "and" else ("to the " + r if "of" in r else r) + " a"
        a, b = _noun(s, i, 0), _noun(s, i, 1)
        a2, b2 = _noun(s, i, 0, s.color[i, 1]), _noun(s, i, 1, s.color[i, 0])
        true.append(f"a {a} {word} {b}")
        swapped.append(f"a {a2} {word} {b2}")
        rel.append(r)
    img = embed_images(model, images)
    wins = (img * _embed_texts(model, true)).sum(1) > (img * _embed_texts(model, swapped)).sum(1)
    rel = np.array(rel)
    out = {r: Rate.of(wins.numpy()[rel == r]) for r in relations if (rel == r).any()}
    out["all"] = Rate.of(wins)
    return out


@torch.no_grad()
def typographic_attack(
    model: CLIPModel, n: int = 300, seed: int = 7
) -> dict[str, dict[str, float]]:
    """Zero-shot colour on one-object renders, clean and with another colour's name written in.

    Two kinds of class prompts: the sentence templates, and the bare colour name ("red"), the
    way text-bearing images were captioned. "follows the word": CLIP answers the written colour
    instead of the painted one.
    """
    images, truth = single_object_test(n, seed, model.res)
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(1,))
    rng = np.random.default_rng(seed)
    wrong = (truth["color"] + rng.integers(1, len(shapes.COLORS), n)) % len(shapes.COLORS)
    words = [shapes.COLOR_NAMES[k] for k in wrong]
    attacked = typography.stamp(images, words, typography.free_row(s, model.res))
    out = {}
    for name, templates in [("sentence templates", TEMPLATES["color"]), ("bare label", ["{}"])]:
        clean = zero_shot(model, images, "color", templates).numpy()
        pred = zero_shot(model, attacked, "color", templates).numpy()
        out[name] = {
            "clean accuracy": Rate.of(clean == truth["color"]),
            "accuracy with a wrong word": Rate.of(pred == truth["color"]),
            "follows the word": Rate.of(pred == wrong),
        }
    return out


@torch.no_grad()
def clip_scores(model: CLIPModel, images, captions: list[str]) -> torch.Tensor:
    """Cosine similarity between each image and its caption (n,)."""
    return (embed_images(model, images) * _embed_texts(model, captions)).sum(1).cpu()


def rerank(model: CLIPModel, images: torch.Tensor, prompts: list[str], n_keep: int = 1):
    """Images (P * N, ...) holding N samples for each of P prompts (prompt-major): the n_keep
    best per prompt by CLIP score, as DALL-E reranked 512 samples with CLIP (P * n_keep, ...)."""
    n = len(images) // len(prompts)
    captions = [p for p in prompts for _ in range(n)]
    scores = clip_scores(model, images, captions).view(len(prompts), n)
    best = scores.topk(n_keep, dim=1).indices + torch.arange(len(prompts))[:, None] * n
    return images[best.flatten()]


def best_of_n(scores: torch.Tensor, correct: torch.Tensor, ns=(1, 4, 16, 64)) -> dict:
    """How often the top-CLIP-score sample of n is correct, for scores and correct (P, M):
    M samples of each of P prompts, cut into M // n disjoint groups of n (averaged over all)."""
    out = {}
    for n in ns:
        groups = scores.shape[1] // n
        s = scores[:, : groups * n].reshape(len(scores), groups, n)
        c = correct[:, : groups * n].reshape(len(scores), groups, n).float()
        out[n] = Rate.of(c.gather(2, s.argmax(2, keepdim=True)).flatten() > 0)
    return out
