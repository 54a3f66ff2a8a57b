"""DALL-E (Ramesh et al. 2021, arXiv 2102.12092): a decoder-only transformer over one stream of
[text tokens, image tokens], trained to predict the next token.

Text comes first (DALL-E: 256 BPE tokens, ours: 20 word tokens), then the image's tokens from a
frozen tokenizer in raster order (DALL-E: 32x32 = 1,024 dVAE codes out of 8,192, ours: 8x8 = 64
VQ-VAE codes). As in the paper:
  - every text position has its own padding token, so "no word here" is still informative;
  - text positions get a learned position embedding, image positions a row plus a column one;
  - one output head over text and image vocabularies, with a logits mask so text positions can
    only predict text and image positions only image codes;
  - the cross-entropy losses are weighted 1/8 for text and 7/8 for image (section 2.2);
  - attention is causal: text sees earlier text, image tokens see all text and earlier image
    tokens. DALL-E used sparse patterns for image-to-image attention (row, column, and a
    convolutional one in the last layer; appendix B.1): `attention_mask` draws them and
    `layers=` picks one per layer.
Sampling draws one image token at a time with a temperature and top-k filter, many samples per
caption in one batch, optionally starting from the first rows of a real image ("primed").
A key/value cache (`layers.KVCache`, one per layer) keeps what each layer computed for the prefix,
so each step feeds only the newest token (use_cache=False reruns the whole prefix every step, the
same tokens for ~39x the work; the benchmark measures both).

Serves notebook 02.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from t2i.blocks.layers import Block, KVCache, count_parameters
from t2i.ch01_dvae import vqvae
from t2i.core import recipe, runtime, train
from t2i.world import datasets, grammar, judge, shapes, tokenizer

TEXT_WEIGHT, IMAGE_WEIGHT = 1 / 8, 7 / 8
PATTERNS = ("dense", "row", "column", "conv")


def default_config(**overrides) -> dict:
    """The DALL-E of the active profile; overrides go to the section that holds each key."""
    cfg = dict(
        seed=0,
        model=runtime.pick(
            smoke=dict(d=32, n_layers=2, n_heads=2),
            cpu=dict(d=128, n_layers=4, n_heads=4),
            gpu=dict(d=256, n_layers=8, n_heads=8),
        )
        | dict(
            text_len=20,
            layers="dense",  # or a list of PATTERNS, one per layer
            tokenizer=vqvae.default_config(),
        ),
        train=runtime.pick(
            smoke=dict(steps=20, batch=8, warmup=5),
            cpu=dict(steps=1000, batch=64, warmup=100),
            gpu=dict(steps=20_000, batch=128, warmup=500),
        )
        | dict(lr=1e-3, weight_decay=0.01, ema=0.995),
        # p_partial: one- and two-object captions made partial ("a red circle"), as CLIP's and
        # GLIDE's are, so that what a student types is in distribution
        data=dict(n_train=runtime.pick(smoke=512, cpu=20_000, gpu=100_000), p_partial=0.3),
    )
    return recipe.sections(cfg, **overrides)


# --- masks ----------------------------------------------------------------------------------


def attention_mask(text_len: int, grid: int, pattern: str = "dense", kernel: int = 1):
    """(T, T) bool over the stream [text_len text tokens, grid*grid image tokens]: True where a
    query (row) may attend to a key (column). Text is causal over text; image tokens see all
    text; image-to-image follows `pattern` (always causal):
      dense   every earlier image token;
      row     earlier tokens of the same image row;
      column  earlier tokens of the same image column;
      conv    earlier tokens within `kernel` rows and columns (a (2k+1)x(2k+1) window).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, not {pattern!r}")
    n = grid * grid
    T = text_len + n
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    r, c = torch.arange(n) // grid, torch.arange(n) % grid
    same_row = r[:, None] == r[None, :]
    same_col = c[:, None] == c[None, :]
    near = ((r[:, None] - r[None, :]).abs() <= kernel) & ((c[:, None] - c[None, :]).abs() <= kernel)
    allowed = {"dense": torch.ones(n, n, dtype=torch.bool), "row": same_row, "column": same_col}
    allowed["conv"] = near
    mask[text_len:, text_len:] &= allowed[pattern]
    return mask


# --- the model ------------------------------------------------------------------------------


class DALLETransformer(nn.Module):
    """Transformer over [text, image] tokens; `vae` is the frozen image tokenizer."""

    def __init__(self, vae, d=128, n_layers=4, n_heads=4, text_len=20, layers="dense", grid=8):
        super().__init__()
        self.vae = vae.requires_grad_(False)
        self.tok = tokenizer.Tokenizer(context_length=text_len)
        self.text_len, self.grid, self.K = text_len, grid, vae.K
        self.text_vocab = len(self.tok) + text_len  # words + one padding token per position
        self.text_emb = nn.Embedding(self.text_vocab, d)
        self.text_pos = nn.Embedding(text_len, d)
        self.image_emb = nn.Embedding(self.K, d)
        self.row_emb, self.col_emb = nn.Embedding(self.grid, d), nn.Embedding(self.grid, d)
        self.blocks = nn.ModuleList(Block(d, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.text_vocab + self.K)
        layers = [layers] * n_layers if isinstance(layers, str) else list(layers)
        masks = [attention_mask(text_len, self.grid, p) for p in layers]
        self.register_buffer("masks", torch.stack(masks), persistent=False)
        # Logits mask: position p predicts token p + 1, text up to text_len - 2, then image.
        T = text_len + self.grid**2
        is_text_target = torch.arange(T) < text_len - 1
        vocab_is_text = torch.arange(self.text_vocab + self.K) < self.text_vocab
        self.register_buffer(
            "logits_mask", is_text_target[:, None] == vocab_is_text[None, :], persistent=False
        )

    def text_tokens(self, captions: list[str]) -> torch.Tensor:
        """(B, text_len) ids, every PAD replaced by its position's own padding token."""
        ids = self.tok(captions, truncate=True)
        pos = torch.arange(self.text_len).expand_as(ids)
        ids = torch.where(ids == self.tok.pad_id, len(self.tok) + pos, ids)
        return ids.to(runtime.device_of(self))

    def forward(self, text, image, cache=None):
        """text (B, text_len), image (B, n) with n <= 64 -> logits (B, text_len + n, vocab),
        where position p predicts token p + 1; the wrong modality's logits are -inf.
        cache: optional list of one `KVCache` per block holding the first P positions; only the
        positions after them are computed (and added to it): logits (B, text_len + n - P, vocab)."""
        P = 0 if cache is None else len(cache[0])
        i, n = max(P - self.text_len, 0), image.shape[1]
        j = torch.arange(i, n, device=image.device)
        x = torch.cat(
            [
                self.text_emb(text[:, P:]) + self.text_pos.weight[P:],
                self.image_emb(image[:, i:])
                + self.row_emb(j // self.grid)
                + self.col_emb(j % self.grid),
            ],
            1,
        )
        T = self.text_len + n
        for block, mask, c in zip(self.blocks, self.masks, cache or [None] * len(self.blocks)):
            x = block(x, mask=mask[P:T, :T], cache=c)
        logits = self.head(self.ln(x)).float()
        return logits.masked_fill(~self.logits_mask[P:T], float("-inf"))

    def loss(self, text, image):
        """(text loss + 7 image loss) / 8 (the paper's weighting). Returns (loss, logs)."""
        logits = self(text, image[:, :-1])
        targets = torch.cat([text[:, 1:], image + self.text_vocab], 1)
        ce = F.cross_entropy(rearrange(logits, "b t v -> b v t"), targets, reduction="none")
        text_loss, image_loss = ce[:, : self.text_len - 1].mean(), ce[:, self.text_len - 1 :].mean()
        loss = TEXT_WEIGHT * text_loss + IMAGE_WEIGHT * image_loss
        return loss, {"text": text_loss.item(), "image": image_loss.item()}


# --- sampling -------------------------------------------------------------------------------


def top_k_filter(logits, top_k: int | float | None):
    """Keep the top_k largest logits (others -> -inf). An int is a count of codes; a float in
    (0, 1) is the fraction of the vocabulary kept (DALLE-pytorch's filter_thres=0.9 keeps the top
    10%, i.e. top_k=0.1 here). None keeps everything."""
    if top_k is None:
        return logits
    k = top_k if isinstance(top_k, int) else max(1, int(round(top_k * logits.shape[-1])))
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@torch.no_grad()
def sample_tokens(model, text, temperature=1.0, top_k=None, seed=0, prime=None, use_cache=True):
    """Image token grids (B, 8, 8) for text ids (B, text_len), one token at a time. prime: an
    optional (B, m) long tensor of the first m image tokens, kept as they are. use_cache: feed only
    the newest token to the transformer, reading the prefix's keys and values from a `KVCache`
    per layer; False reruns the whole prefix every step (the same tokens, ~39x the work)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (lower is greedier)")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dev = runtime.device_of(model)
    text = text.to(dev)
    image = torch.zeros(len(text), 0, dtype=torch.long, device=dev)
    if prime is not None:
        image = prime.to(dev).long()
    n = model.grid**2
    cache = [KVCache() for _ in model.blocks] if use_cache else None
    while image.shape[1] < n:
        logits = model(text, image, cache)[:, -1, model.text_vocab :]
        probs = F.softmax(top_k_filter(logits, top_k) / temperature, -1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=gen).to(dev)
        image = torch.cat([image, nxt], 1)
    return rearrange(image, "b (h w) -> b h w", h=model.grid)


@torch.no_grad()
def generate(
    model,
    prompts: list[str],
    temperature: float = 1.0,
    top_k=None,
    seed: int = 0,
    prime=None,
    batch: int = 256,
    use_cache: bool = True,
):
    """Images (N, 3, 32, 32) in [-1, 1] (64x64 on gpu), one per prompt (repeat a prompt for
    many samples; they are drawn in batches). use_cache: see `sample_tokens`."""
    model.eval()
    out = []
    for i in range(0, len(prompts), batch):
        text = model.text_tokens(prompts[i : i + batch])
        p = None if prime is None else prime[i : i + batch].flatten(1)
        idx = sample_tokens(model, text, temperature, top_k, seed + i, p, use_cache)
        out.append(model.vae.decode_tokens(idx).cpu())
    return torch.cat(out)


def complete(model, images, captions, rows: int = 3, n: int = 1, **kwargs):
    """The paper's "optional image start": keep the first `rows` token rows of real images and
    let the model write the rest; n samples per image. Returns (primed grids, samples)."""
    idx = model.vae.tokens(images.to(runtime.device_of(model)))
    prime = idx[:, :rows].repeat_interleave(n, 0)
    prompts = [c for c in captions for _ in range(n)]
    return prime, generate(model, prompts, prime=prime, **kwargs)


# --- the fixed prompt set and its measure ---------------------------------------------------


def prompt_set(
    n_single: int = 96, n_double: int = 48, n_heldout: int = 48, seed: int = 4242, control=False
):
    """Fixed evaluation prompts: single objects, two objects, held-out compositions, and with
    control, a matched seen control: test-split scenes with the held-out set's object counts
    (as many one- and two-object prompts), whose colour-shape pairs were all seen in training."""
    single = shapes.sample_scenes(n_single, seed=seed, split="test", counts=(1,))
    double = shapes.sample_scenes(n_double, seed=seed + 1, split="test", counts=(2,))
    held = shapes.sample_scenes(n_heldout, seed=seed + 2, split="heldout", counts=(1, 2))
    out = {
        "single object": grammar.caption(single, seed),
        "two objects": grammar.caption(double, seed + 1),
        "held-out": grammar.caption(held, seed + 2),
    }
    if control:
        out["seen control"] = [
            caption
            for k in (1, 2)
            for caption in grammar.caption(
                shapes.sample_scenes(int((held.count == k).sum()), seed + 2 + k, "test", (k,)),
                seed + 2 + k,
            )
        ]
    return out


def evaluate(model, temperatures=(1.0, 0.5), top_k=None, seed=0, prompts=None):
    """The judge's table {f"{set} @ T={t}": {fact: accuracy}} on the fixed prompt set."""
    prompts = prompts or prompt_set()
    table = {}
    for t in temperatures:
        for name, caps in prompts.items():
            images = generate(model, caps, temperature=t, top_k=top_k, seed=seed)
            table[f"{name} @ T={t}"] = judge.score(images, caps)
    return table


# --- training -------------------------------------------------------------------------------


def build(cfg: dict) -> DALLETransformer:
    model = dict(cfg["model"])
    tokens = model.pop("tokenizer")
    grid = tokens["data"]["res"] // 4  # the tokenizer downsamples by 4 per side
    return DALLETransformer(vqvae.VQVAE.load(cfg=tokens), grid=grid, **model)


@torch.no_grad()
def tokenize_dataset(
    model: DALLETransformer, n: int, seed: int = 0, p_partial: float = 0.0, batch=1000
):
    """(text ids, image token grids flattened) of n training scenes, with the frozen tokenizer.
    With probability p_partial a one- or two-object scene's caption is partial: each of size,
    colour and place kept with probability 1/2 (`grammar.partial_caption`)."""
    data = datasets.load_dataset(n, res=4 * model.grid, seed=seed)
    captions = grammar.shorten(data.scenes, data.captions, p_partial, seed + 1)
    dev = runtime.device_of(model)
    x = data.tensor()
    grids = [model.vae.tokens(x[i : i + batch].to(dev)).cpu() for i in range(0, n, batch)]
    image = rearrange(torch.cat(grids), "b h w -> b (h w)")
    return model.text_tokens(captions), image


def train_model(model: DALLETransformer, cfg: dict, path, live_plot: bool = True):
    model.vae.eval()
    data = cfg["data"]
    text, image = tokenize_dataset(model, data["n_train"], cfg["seed"], data["p_partial"])
    dev = runtime.device()

    def batch_fn(step, gen):
        idx = torch.randint(0, len(text), (cfg["train"]["batch"],), generator=gen)
        return text[idx].to(dev), image[idx].to(dev)

    return train.fit_config(
        model,
        lambda m, b: m.loss(*b),
        batch_fn,
        path=path,
        cfg=cfg,
        desc="DALL-E",
        live_plot=live_plot,
        params=[p for p in model.parameters() if p.requires_grad],
    )


# --- the recipe --------------------------------------------------------------------------------


def _sampler(prompt: str, temperature: float = 1.0, top_k: int | None = None):
    model = DALLE.load()
    return lambda n, seed: generate(model, [prompt] * n, temperature, top_k, seed)


def _ready(model: DALLETransformer, cfg: dict) -> DALLETransformer:
    model.vae.eval()  # its tokenizer stays frozen, in eval mode
    return model


DALLE = recipe.Recipe(
    "dalle",
    config=default_config,
    build=build,
    train=train_model,
    ready=_ready,
    describe=lambda model: f"DALL-E: {count_parameters(model):,} trainable parameters",
    sampler=_sampler,
    evaluate=lambda seed, top_k=None: evaluate(DALLE.load(), seed=seed, top_k=top_k),
    options={
        "sample": {
            "--prompt": dict(required=True),
            "--temperature": dict(type=float, default=1.0),
            "--top-k": dict(type=int, default=None),
        },
        "evaluate": {"--top-k": dict(type=int, default=None)},
    },
)
RECIPES = (DALLE,)
