"""CLIP's two towers, its contrastive loss and the data it trains on (partial captions, and
words written into images), its config, build and training."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i.blocks.layers import Block
from t2i.core import recipe, runtime, train
from t2i.world import grammar, shapes, typography
from t2i.world.prompts import TOKENIZER


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
    dev = runtime.device_of(model)

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
