"""CLIP: contrastive language-image pre-training (Radford et al. 2021, arXiv 2103.00020).

Two towers map an image and a caption into one space; training pulls the N matching pairs of a
batch together and pushes the N^2 - N others apart (the symmetric InfoNCE loss of the paper's
Figure 3 pseudocode):

    logits = exp(t) * normalize(I) @ normalize(T).T        t learnable, init log(1/0.07), <= log 100
    loss   = (cross_entropy(logits, targets) + cross_entropy(logits.T, targets.T)) / 2

Image tower: a small CNN that keeps the 4x4 spatial grid to the end (flattened, not pooled), so
position survives; at 32x32 it is several times cheaper than a ViT on CPU. Text tower: a causal
transformer (`layers.Block`) whose feature at the EOT token is the caption's embedding, as in
openai/CLIP's model.py.

Duplicates: a partial caption ("a red circle") is true of every red circle in the batch, so the
diagonal is not the only right answer. The target of row i spreads its probability equally over
every image that caption i truly describes (known from the scenes), instead of calling those
images negatives.

Serves notebook 03; notebooks 04, 06 and 07 build on its model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i.blocks.layers import Block, count_parameters
from t2i.core import recipe, runtime, train
from t2i.core.stats import Rate
from t2i.world import datasets, grammar, judge, shapes, typography
from t2i.world.prompts import TOKENIZER

# --- the two towers ---------------------------------------------------------------------------


def _conv(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.GELU())


class ImageEncoder(nn.Module):
    """CNN: a 2x2 patchify stem, then stride-2 stages down to 4x4, flattened and projected."""

    def __init__(self, res: int, width: int, embed: int):
        super().__init__()
        layers = [nn.Conv2d(3, width, 2, 2), nn.GroupNorm(8, width), nn.GELU()]
        c = width
        for k in range(int(math.log2(res // 8))):
            c_out = min(width * 2 ** (k + 1), 4 * width)
            layers += [_conv(c, c), _conv(c, c_out, stride=2)]
            c = c_out
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(c * 16, embed)

    def forward(self, x):
        return self.proj(self.net(x).flatten(1))


class TextEncoder(nn.Module):
    """Causal transformer over [BOS, words, EOS, PAD...]; the EOS feature is the output."""

    def __init__(self, vocab: int, context: int, d: int, layers: int, heads: int, embed: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(context, d) * 0.01)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.proj = nn.Linear(d, embed, bias=False)

    def forward(self, tokens):
        # Columns after the longest caption's EOT are padding no EOT can see (causal): drop them.
        tokens = tokens[:, : int(TOKENIZER.eot_index(tokens).max()) + 1]
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, causal=True)  # causal: the EOT token has read the whole caption
        x = self.ln(x)
        return self.proj(eot_pool(x, tokens))


def eot_pool(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The feature (B, d) at each sequence's EOT position of x (B, T, d)."""
    return x[torch.arange(len(x), device=x.device), TOKENIZER.eot_index(tokens)]


LOG_MAX_SCALE = math.log(100.0)  # the temperature's bound: logits scaled by at most 100


class CLIPModel(nn.Module):
    """An image tower and a text tower into one embedding space, and the learned temperature."""

    def __init__(self, res: int, width: int, d: int, layers: int, heads: int, embed: int):
        super().__init__()
        self.visual = ImageEncoder(res, width, embed)
        self.text = TextEncoder(len(TOKENIZER), TOKENIZER.context_length, d, layers, heads, embed)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.res = res

    def scale(self) -> torch.Tensor:
        """exp(t), at most 100 (paper sec. 2.5: "clipped to prevent scaling the logits by more
        than 100"). Training keeps the parameter t itself at most log 100 (`clamp_scale_`, after
        every step), so the clamp here passes t its gradient; it only caps a t set by hand."""
        return self.logit_scale.clamp(max=LOG_MAX_SCALE).exp()

    @torch.no_grad()
    def clamp_scale_(self) -> None:
        """Clip the learnable log-scale t to at most log 100, in place (after an update)."""
        self.logit_scale.clamp_(max=LOG_MAX_SCALE)

    def encode_image(self, x):
        """Unit-norm embeddings (B, embed) of images (B, 3, res, res) in [-1, 1]."""
        return F.normalize(self.visual(x).float(), dim=-1)

    def encode_text(self, texts):
        """Unit-norm embeddings of captions (a list of strings, or a token tensor)."""
        tokens = TOKENIZER(texts) if not torch.is_tensor(texts) else texts
        tokens = tokens.to(self.logit_scale.device)
        return F.normalize(self.text(tokens).float(), dim=-1)

    def forward(self, images, texts):
        """Logits (B_images, B_texts): scaled cosine similarities."""
        return self.scale() * self.encode_image(images) @ self.encode_text(texts).T


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor | None = None):
    """Symmetric InfoNCE over a square logits matrix (images x texts).

    positives: optional bool (B, B), True where text j truly describes image i (the diagonal
    and any duplicates); each row's (and column's) target is uniform over its positives.
    """
    if positives is None:
        positives = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    p = positives.float()
    loss_i = F.cross_entropy(logits, p / p.sum(1, keepdim=True))
    loss_t = F.cross_entropy(logits.T, p.T / p.T.sum(1, keepdim=True))
    return (loss_i + loss_t) / 2


# --- training data: shapes-world pairs, some captions partial, some images with words -------

_ANY = -1


def make_pairs(n: int, seed: int, cfg: dict):
    """n training pairs: images (n, 3, res, res) in [-1, 1], captions, and the (n, n) matrix of
    which caption truly describes which image.

    cfg is a config's data section. One-object scenes get a partial caption with probability
    cfg["partial"] (each of size,
    colour and position kept with probability 1/2), so short prompts like "a red circle" are
    in distribution. A fraction cfg["text_images"] of one-object images carry their colour's
    name written in ink (text that agrees with the picture, like a label on a product); a
    fraction cfg["grey_text"] of those have their object painted grey, so that only the word
    tells the colour the caption names (text that carries what the pixels do not, as on the
    internet's signs and products). A fraction cfg["word_only"] of the other images are just a
    written word captioned by that word: the toy version of the text-bearing images CLIP
    learned to read from.
    """
    rng = np.random.default_rng(seed)
    s = shapes.sample_scenes(n, seed=seed, split="train")
    images = shapes.render(s, cfg["res"])
    captions = grammar.caption(s, seed=seed)
    one = s.count == 1
    # What each one-object caption claims (size, colour, shape, cell); _ANY where unsaid.
    claim = np.full((n, 4), _ANY)
    claim[one] = np.stack([s.size[one, 0], s.color[one, 0], s.shape[one, 0], s.cell[one, 0]], 1)
    for i in np.flatnonzero(one & (rng.random(n) < cfg["partial"])):
        keep = rng.random(3) < 0.5
        captions[i] = grammar.partial_caption(s, i, keep, rng)
        claim[i, [0, 1, 3]] = np.where(keep, claim[i, [0, 1, 3]], _ANY)
    text = np.flatnonzero(one & (rng.random(n) < cfg["text_images"]))
    grey = np.random.default_rng([seed, 1]).random(len(text)) < cfg["grey_text"]
    images[text] = labelled(s[text], images[text], grey)
    word_only = np.flatnonzero(~one & (rng.random(n) < cfg["word_only"]))
    vocab = shapes.COLOR_NAMES + shapes.SHAPES
    picks = [vocab[k] for k in rng.integers(len(vocab), size=len(word_only))]
    images[word_only] = shapes.BACKGROUND
    images[word_only] = typography.stamp(
        images[word_only], picks, rng.integers(1, cfg["res"] - 6, len(word_only))
    )
    for i, w in zip(word_only, picks):
        captions[i] = w
    one[word_only] = False
    # Caption i describes image j when both are one-object and every claim of i holds in j.
    truth = np.stack([s.size[:, 0], s.color[:, 0], s.shape[:, 0], s.cell[:, 0]], 1)
    holds = ((claim[:, None] == _ANY) | (claim[:, None] == truth[None])).all(-1)
    positives = (holds & one[:, None] & one[None]).T | np.eye(n, dtype=bool)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, captions, torch.from_numpy(positives)


GREY = (120, 120, 120)


def labelled(s: shapes.Scenes, images: np.ndarray, grey) -> np.ndarray:
    """Renders of one-object scenes (`shapes.render`) with their colour's name written in ink,
    the object painted GREY (edges kept) where grey[i] is true: then only the word tells its
    colour."""
    colors = s.color[:, 0]
    bg = np.array(shapes.BACKGROUND, np.float32)
    paint = np.array(list(shapes.COLORS.values()), np.float32)[colors] - bg
    d = images.astype(np.float32) - bg
    # How much of each pixel is the object's paint: 1 inside, 0 on the background, between on edges.
    alpha = np.einsum("nhwc,nc->nhw", d, paint / (paint**2).sum(-1, keepdims=True))[..., None]
    painted_grey = bg + alpha.clip(0, 1) * (np.array(GREY, np.float32) - bg)
    images = np.where(np.asarray(grey)[:, None, None, None], np.round(painted_grey), images)
    names = [shapes.COLOR_NAMES[c] for c in colors]
    res = images.shape[1]
    return typography.stamp(images.astype(np.uint8), names, typography.free_row(s, res))


# --- configuration and training -----------------------------------------------------------


def default_config(**overrides) -> dict:
    """The CLIP of the active profile; overrides go to the section that holds each key."""
    cfg = dict(
        seed=0,
        model=dict(
            width=runtime.pick(smoke=8, cpu=32, gpu=64),
            d=runtime.pick(smoke=32, cpu=128, gpu=256),
            layers=runtime.pick(smoke=1, cpu=2, gpu=4),
            heads=4,
            embed=runtime.pick(smoke=32, cpu=128, gpu=256),
        ),
        train=dict(
            batch=runtime.pick(smoke=32, cpu=256, gpu=512),
            steps=runtime.pick(smoke=30, cpu=600, gpu=3000),
            lr=runtime.pick(smoke=2e-3, cpu=1e-3, gpu=5e-4),
            warmup=runtime.pick(smoke=5, cpu=50, gpu=200),
            weight_decay=0.1,
        ),
        data=dict(
            res=runtime.image_size(), partial=0.5, text_images=0.3, word_only=0.3, grey_text=0.0
        ),
    )
    return recipe.sections(cfg, **overrides)


def build(cfg: dict) -> CLIPModel:
    return CLIPModel(cfg["data"]["res"], **cfg["model"])


def train_clip(model: CLIPModel, cfg: dict, path=None, live_plot: bool = True) -> train.History:
    """Fit CLIP with the course's trainer on freshly drawn pairs every step."""
    dev = next(model.parameters()).device

    def batch_fn(step, gen):
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        x, captions, pos = make_pairs(cfg["train"]["batch"], seed, cfg["data"])
        return x.to(dev), TOKENIZER(captions).to(dev), pos.to(dev)

    def loss_fn(m, batch):
        x, tokens, pos = batch
        logits = m(x, tokens)
        acc = (logits.argmax(1) == torch.arange(len(x), device=x.device)).float().mean()
        return contrastive_loss(logits, pos), {"scale": m.scale().item(), "acc": acc.item()}

    return train.fit_config(
        model,
        loss_fn,
        batch_fn,
        no_decay=train.gains_and_biases,  # as CLIP and open_clip: no decay on gains, biases, t
        after_step=CLIPModel.clamp_scale_,
        path=path,
        cfg=cfg,
        desc="CLIP",
        live_plot=live_plot,
    )


def reading_config(grey_text: float, **overrides) -> dict:
    """The typographic attack as an ablation of the data: the course's CLIP fine-tuned on data
    where a share grey_text of the written words carry the colour (on a grey object), or none
    (grey_text 0: every word agrees with the paint, as in the course's CLIP's data)."""
    base = default_config()
    cfg = dict(
        seed=1,
        model=dict(base=base),
        train=dict(
            base["train"], steps=runtime.pick(smoke=10, cpu=75, gpu=500), lr=5e-4, warmup=20
        ),
        data=dict(base["data"], grey_text=grey_text),
    )
    return recipe.sections(cfg, **overrides)


def build_reading(cfg: dict) -> CLIPModel:
    """A CLIP that starts as the course's CLIP (cfg["model"]["base"])."""
    model = build(cfg["model"]["base"])
    model.load_state_dict(CLIP.load(cfg["model"]["base"]).state_dict())
    return model


def get_reading_clip(grey_text: float) -> CLIPModel:
    """The course's CLIP fine-tuned by `reading_config(grey_text)`, from the cache or now."""
    return CLIP_READING.load(reading_config(grey_text))


# --- zero-shot classification -------------------------------------------------------------

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


# --- retrieval, binding, typography, context length ------------------------------------------


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


READING_DATA = {"words agree with the paint": 0.0, "half the words carry the colour": 0.5}


def typographic_ablation(n: int = 300, seed: int = 7) -> dict[str, dict[str, Rate]]:
    """The attack (sentence templates) on two fine-tunes of the course's CLIP that differ only
    in their data (READING_DATA: the share of worded images whose object is grey)."""
    return {
        name: typographic_attack(get_reading_clip(grey), n, seed)["sentence templates"]
        for name, grey in READING_DATA.items()
    }


# --- reranking generated samples ------------------------------------------------------------


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


# --- the recipe --------------------------------------------------------------------------------


def _evaluation(seed: int) -> dict:
    """Zero-shot accuracy per attribute, retrieval and the binding test, as rows (seed 0: the
    notebook's test sets)."""
    model = CLIP.load()
    rows = zero_shot_table(model, seed=1234 + seed)
    return rows | {
        "retrieval": retrieval(model, seed=4321 + seed),
        "binding": binding_test(model, seed=99 + seed),
    }


CLIP = recipe.Recipe(
    "clip",
    config=default_config,
    build=build,
    train=train_clip,
    describe=lambda m: f"CLIP: {count_parameters(m):,} parameters, scale {m.scale():.1f}",
    evaluate=_evaluation,
)
CLIP_READING = recipe.Recipe("clip-reading", reading_config, build_reading, train_clip)
RECIPES = (CLIP,)
