"""unCLIP, or DALL-E 2 (Ramesh et al. 2022, arXiv 2204.06125): a caption becomes a CLIP image
embedding (the prior), and the embedding becomes an image (the decoder, then an upsampler).

    caption -> CLIP text embedding z_t -> prior -> CLIP image embedding z_i -> decoder -> 2x

The CLIP is notebook 03's (`clip.get_clip`), frozen. Its embeddings are unit vectors; every model
here sees them scaled by sqrt(dim), so that each component has about unit variance (as
DALLE2-pytorch's `image_embed_scale`).
  - `Decoder`: GLIDE's caption U-Net (`glide.Text2Im`) with z_i projected and added to the time
    embedding, and projected into 4 extra context tokens (paper sec. 2.1); z_i dropped 10% and
    the caption 50% of the time, for classifier-free guidance on both. It starts as notebook
    06's GLIDE base model (`build_decoder`), where the paper trains it from scratch.
  - `DiffusionPrior`: a causal transformer over [caption tokens, z_t, timestep, noised z_i,
    query] whose query output predicts the clean z_i (sec. 2.2); 2 samples per caption, the one
    with the higher z_t . z_i kept.
  - `ARPrior`: z_i reduced by PCA, each component quantized into buckets, the codes predicted one
    by one by a causal transformer after the caption, z_t and a token for the quantized z_t . z_i
    (sampled from the upper half at generation, sec. 2.2).
  - The upsampler is notebook 06's GLIDE upsampler, fine-tuned on blurred low-resolution inputs
    without the caption (sec. C).
The manipulations of sec. 3 live here too: variations (DDIM inversion, then decoding with eta),
`slerp` interpolation, text diffs, PCA reconstructions.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i import ch03_clip as clip
from t2i import ch06_glide as glide
from t2i.blocks.diffusion import classifier_free, diffusion_of
from t2i.blocks.layers import Block, KVCache, timestep_embedding
from t2i.core import checkpoint, recipe, runtime, train
from t2i.core.stats import Rate
from t2i.front import plot
from t2i.world import judge, shapes, typography

TOKENIZER = glide.TOKENIZER
N_CONTEXT_TOKENS = 4  # z_i as 4 extra tokens of the decoder's attention context (sec. 2.1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation along the great circle from a (t = 0) to b (t = 1), row by row
    over the last dimension: sin((1 - t) w) / sin w * a + sin(t w) / sin w * b, w the angle
    between a and b. Unit vectors stay unit; x_T (not unit) keeps about its norm."""
    a_, b_ = F.normalize(a.flatten(1), dim=-1), F.normalize(b.flatten(1), dim=-1)
    w = torch.arccos((a_ * b_).sum(-1).clamp(-1 + 1e-7, 1 - 1e-7)).view(-1, *[1] * (a.dim() - 1))
    return (torch.sin((1 - t) * w) * a + torch.sin(t * w) * b) / torch.sin(w)


# --- the paired data: images, captions and their CLIP embeddings -------------------------------


def embed_scale(embed: int) -> float:
    return math.sqrt(embed)


@functools.lru_cache(maxsize=1)
def paired_data(n: int, p_partial: float, res: int, seed: int):
    """n training scenes of one or two objects with a caption each (full or partial, as GLIDE's)
    and their CLIP embeddings: dict of images (n, 3, res, res), tokens, z_img and z_txt (unit
    vectors of the frozen CLIP of notebook 03)."""
    model = clip.get_clip()
    s, captions = glide.captioned_scenes(n, seed, p_partial)
    tokens = TOKENIZER(captions)
    with torch.no_grad():
        z_img = clip.embed_images(model, shapes.render_tensor(s, model.res)).cpu()
        z_txt = torch.cat([model.encode_text(tokens[k : k + 1024]) for k in range(0, n, 1024)])
    x = shapes.render_tensor(s, res)
    return dict(images=x, tokens=tokens, z_img=z_img, z_txt=z_txt.cpu(), captions=captions)


def pairs_of(cfg: dict) -> dict:
    """`paired_data` of a config's data section."""
    d = cfg["data"]
    return paired_data(d["n_train"], d["p_partial"], d["res"], d["data_seed"])


def embed_text(prompts) -> torch.Tensor:
    """Unit CLIP text embeddings of prompts (CLIP of notebook 03)."""
    with torch.no_grad():
        return clip.get_clip().encode_text(list(prompts)).cpu()


def embed_image(images) -> torch.Tensor:
    """Unit CLIP image embeddings of images in [-1, 1], resized to CLIP's resolution."""
    model = clip.get_clip()
    if images.shape[-1] != model.res:
        images = F.interpolate(images, size=model.res, mode="bilinear", align_corners=False)
    return clip.embed_images(model, images).cpu()


# --- the decoder --------------------------------------------------------------------------------


class Decoder(glide.Text2Im):
    """eps(x_t, t, tokens, image_embed): GLIDE with the CLIP image embedding as a condition."""

    def __init__(self, res: int, embed: int, **text2im):
        super().__init__(res, **text2im)
        d = text2im["text_width"]
        self.scale = embed_scale(embed)
        self.image_cond = nn.Linear(embed, d)
        self.image_tokens = nn.Linear(embed, N_CONTEXT_TOKENS * d)

    def forward(self, x, t, tokens, image_embed):
        pooled, seq = self.text(tokens)
        z = image_embed * self.scale
        extra = self.image_tokens(z).view(len(z), N_CONTEXT_TOKENS, -1)
        context = torch.cat([extra, seq], 1)
        return self.unet(x, t, cond=pooled + self.image_cond(z), context=context)


def decoder_config(**overrides) -> dict:
    """GLIDE's base model with the CLIP image embedding as one more condition (paper sec. 2.1);
    it starts from notebook 06's trained base (train section's init; None: from scratch)."""
    cfg = glide.base_config(
        seed=5,
        p_empty=0.5,  # the caption, dropped half the time
        min_snr=None,  # unweighted: GLIDE's Min-SNR weighting is not measured on the decoder
        steps=runtime.pick(smoke=30, cpu=600, gpu=20_000),
    )
    cfg["model"]["embed"] = clip.default_config()["model"]["embed"]
    cfg["train"] |= dict(
        p_drop_embed=0.1,  # the image embedding, dropped (zeroed) 10% of the time
        init=glide.base_config(),
    )
    cfg["data"]["data_seed"] = 5  # every unCLIP model trains on the same pairs
    return recipe.sections(cfg, **overrides)


def build_decoder(cfg: dict) -> Decoder:
    """A Decoder that starts as GLIDE's base model of configuration cfg["train"]["init"] (where
    it is set): the U-Net and text encoder copied, the two image-embedding projections at zero,
    so that the decoder begins as the text-to-image model and learns what the embedding adds."""
    model = Decoder(cfg["data"]["res"], **cfg["model"])
    init = cfg["train"].get("init")
    if init:
        base, _ = glide.load_base(init)
        state = {**model.state_dict(), **base.state_dict()}  # all but the new projections
        why = checkpoint.mismatch(model, state)
        if why:
            raise ValueError(
                f"the GLIDE base of the decoder's init does not fit the decoder ({why}): give it "
                "the decoder's shape, or init=None to train from scratch"
            )
        model.load_state_dict(state)
        for p in [*model.image_cond.parameters(), *model.image_tokens.parameters()]:
            nn.init.zeros_(p)
    return model


def train_decoder(model: Decoder, cfg: dict, path=None, **fit_kwargs):
    data, schedule = pairs_of(cfg), cfg["train"]
    diffusion = diffusion_of(cfg)
    dev = next(model.parameters()).device
    empty = TOKENIZER(glide.EMPTY)[0]

    def batch_fn(step, gen):
        idx = torch.randint(0, len(data["tokens"]), (schedule["batch"],), generator=gen)
        tok, z = data["tokens"][idx].clone(), data["z_img"][idx].clone()
        tok[torch.rand(len(idx), generator=gen) < schedule["p_empty"]] = empty
        z[torch.rand(len(idx), generator=gen) < schedule["p_drop_embed"]] = 0
        return data["images"][idx].to(dev), tok.to(dev), z.to(dev)

    def loss_fn(m, batch):
        x, tok, z = batch
        return diffusion.loss(m, x, min_snr=schedule["min_snr"], tokens=tok, image_embed=z)

    return train.fit_config(
        model, loss_fn, batch_fn, path=path, cfg=cfg, desc="unCLIP decoder", amp=False, **fit_kwargs
    )


def load_decoder(cfg: dict | None = None, retrain: bool = False):
    cfg = cfg or decoder_config()
    model = checkpoint.load_or_train("unclip_decoder", cfg, build_decoder, train_decoder, retrain)
    return model, diffusion_of(cfg)


def decoder_fn(decoder, image_embed, prompts=None, scale: float = 3.0):
    """eps(x_t, t) of the decoder given embeddings (n, e) and optional captions, guided
    classifier-free against a zero embedding and the empty caption."""
    dev = next(decoder.parameters()).device
    z = image_embed.to(dev)
    prompts = [glide.EMPTY] * len(z) if prompts is None else list(prompts)
    tok = TOKENIZER(prompts).to(dev)
    null = TOKENIZER(glide.EMPTY).to(dev).expand_as(tok)
    cond = dict(tokens=tok, image_embed=z)
    uncond = dict(tokens=null, image_embed=torch.zeros_like(z))
    return classifier_free(decoder, scale, cond, uncond)


def decode(
    decoder,
    diffusion,
    image_embed,
    prompts=None,
    scale: float = 3.0,
    steps: int = 25,
    eta: float = 1.0,
    seed: int = 0,
    x_T=None,
    trace: bool = False,
):
    """Images (n, 3, res, res), on the CPU, from image embeddings (n, e) by DDIM, from noise
    drawn with `seed` or from a given x_T (n, 3, res, res)."""
    fn = decoder_fn(decoder, image_embed, prompts, scale)
    gen = torch.Generator().manual_seed(seed)
    dev = next(decoder.parameters()).device
    n, r = len(image_embed), decoder.res
    x = torch.randn(n, 3, r, r, generator=gen).to(dev) if x_T is None else x_T.to(dev)
    out = diffusion.ddim_sample(fn, x, steps, eta, None, gen, trace)
    return (out[0].cpu(), *out[1:]) if trace else out.cpu()


def invert(decoder, diffusion, images, image_embed, scale: float = 1.0, steps: int = 50):
    """x_T whose DDIM decoding (eta = 0, the same steps and scale) gives back `images`: the
    (z_i, x_T) pair of a real image that variations start from (paper sec. 3.1)."""
    fn = decoder_fn(decoder, image_embed, None, scale)
    dev = next(decoder.parameters()).device
    return diffusion.ddim_invert(fn, images.to(dev), steps)


def vary(decoder, diffusion, images, eta: float, n: int = 1, scale=1.0, steps=50, seed=0):
    """Variations of images (m, 3, res, res): their embeddings and inverted x_T decoded with
    DDIM at this eta, n per image (eta = 0: the reconstruction). Returns (m * n, ...) images,
    each image's variations together."""
    z = embed_image(images)
    x_T = invert(decoder, diffusion, images, z, scale, steps)
    z, x_T = z.repeat_interleave(n, 0), x_T.repeat_interleave(n, 0)
    return decode(decoder, diffusion, z, None, scale, steps, eta, seed, x_T)


# --- the upsampler: GLIDE's, trained on blurred inputs ----------------------------------------


def upsampler_config(**overrides) -> dict:
    """GLIDE's upsampler without the caption (always empty), its low-resolution input blurred
    by a Gaussian of random width up to `blur` pixels (unCLIP's first upsampler). It starts as
    notebook 06's upsampler (train section's init; None: from scratch)."""
    cfg = glide.upsampler_config(
        seed=6,
        p_empty=1.0,
        low_res_noise=0.0,
        steps=runtime.pick(smoke=20, cpu=100, gpu=10_000),
    )
    cfg["train"] |= dict(blur=0.8, init=glide.upsampler_config())
    return recipe.sections(cfg, **overrides)


def build_upsampler(cfg: dict) -> glide.Upsampler:
    """GLIDE's upsampler, starting from notebook 06's trained one (the train section's init)
    where it is set."""
    model = glide.build_upsampler(cfg)
    init = cfg["train"].get("init")
    if init:
        model.load_state_dict(glide.load_upsampler(init)[0].state_dict())
    return model


def load_upsampler(cfg: dict | None = None, retrain: bool = False):
    cfg = cfg or upsampler_config()
    model = checkpoint.load_or_train(
        "unclip_upsampler", cfg, build_upsampler, glide.train_upsampler, retrain
    )
    return model, diffusion_of(cfg)


def upsample(upsampler, diffusion, low_res, steps=25, seed=0):
    """2x images from decoder samples low_res (the caption is not read)."""
    prompts = [glide.EMPTY] * len(low_res)
    return glide.upsample(upsampler, diffusion, low_res, prompts, 1.0, steps, seed=seed)


# --- the diffusion prior ------------------------------------------------------------------------


class DiffusionPrior(nn.Module):
    """x0(z_i noised, t, tokens, text_embed): a causal transformer over [caption tokens, z_t, t,
    noised z_i, query]; the query's output is the predicted clean (scaled) z_i."""

    def __init__(self, d: int, layers: int, heads: int, embed: int):
        super().__init__()
        e = embed
        self.d = d
        self.tok = nn.Embedding(len(TOKENIZER), d)
        self.pos = nn.Parameter(torch.randn(TOKENIZER.context_length + 4, d) * 0.01)
        self.text_embed = nn.Linear(e, d)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.noised = nn.Linear(e, d)
        self.query = nn.Parameter(torch.randn(d) * 0.01)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, e)

    def forward(self, x, t, tokens, text_embed):
        return self.out(self.hidden(x, t, tokens, text_embed)[:, -1])

    def hidden(self, x, t, tokens, text_embed):
        """The last block's normalized outputs at every position (n, S + 4, d)."""
        tokens = tokens[:, : int(TOKENIZER.eot_index(tokens).max()) + 1]
        n = len(x)
        h = torch.cat(
            [
                self.tok(tokens),
                self.text_embed(text_embed)[:, None],
                self.time(timestep_embedding(t, self.d))[:, None],
                self.noised(x)[:, None],
                self.query.expand(n, 1, -1),
            ],
            1,
        )
        h = h + self.pos[: h.shape[1]]
        for block in self.blocks:
            h = block(h, causal=True)
        return self.ln(h)


def prior_config(**overrides) -> dict:
    """The diffusion prior: it predicts x0 (paper sec. 2.2), and embeddings are not images, so
    x0 is not clipped."""
    cfg = dict(
        seed=7,
        model=dict(
            d=runtime.pick(smoke=32, cpu=128, gpu=256),
            layers=runtime.pick(smoke=1, cpu=3, gpu=6),
            heads=4,
            embed=clip.default_config()["model"]["embed"],
        ),
        diffusion=dict(
            T=runtime.pick(smoke=100, cpu=1000, gpu=1000),
            schedule="cosine",
            prediction="x0",
            clip_x0=False,
        ),
        train=dict(
            p_drop=0.1,  # caption and z_t dropped together: the null condition of CFG
            steps=runtime.pick(smoke=30, cpu=1000, gpu=10_000),
            batch=runtime.pick(smoke=16, cpu=128, gpu=256),
            lr=1e-3,
            warmup=runtime.pick(smoke=5, cpu=100, gpu=500),
            weight_decay=0.01,
            ema=runtime.pick(smoke=None, cpu=0.995, gpu=0.999),
        ),
        data=dict(
            data_seed=5,
            n_train=runtime.pick(smoke=2_000, cpu=40_000, gpu=100_000),
            p_partial=0.5,
            res=glide.base_config()["data"]["res"],
        ),
    )
    return recipe.sections(cfg, **overrides)


def build_diffusion_prior(cfg: dict) -> DiffusionPrior:
    return DiffusionPrior(**cfg["model"])


def _prior_batches(cfg: dict, dev):
    data, schedule = pairs_of(cfg), cfg["train"]
    empty = TOKENIZER(glide.EMPTY)[0]

    def batch_fn(step, gen):
        idx = torch.randint(0, len(data["tokens"]), (schedule["batch"],), generator=gen)
        tok, zt = data["tokens"][idx].clone(), data["z_txt"][idx].clone()
        drop = torch.rand(len(idx), generator=gen) < schedule["p_drop"]
        tok[drop], zt[drop] = empty, 0
        return tok.to(dev), zt.to(dev), data["z_img"][idx].to(dev), data["z_txt"][idx].to(dev)

    return batch_fn


def _fit_prior(model, loss_fn, cfg, path, desc, **fit_kwargs):
    """Either prior's recipe: the shared pairs as batches of (tokens, z_t with the null condition
    at rate p_drop, z_i, z_t), in fp32."""
    batches = _prior_batches(cfg, next(model.parameters()).device)
    return train.fit_config(
        model, loss_fn, batches, path=path, cfg=cfg, desc=desc, amp=False, **fit_kwargs
    )


def train_diffusion_prior(model: DiffusionPrior, cfg: dict, path=None, **fit_kwargs):
    diffusion = diffusion_of(cfg)
    s = embed_scale(cfg["model"]["embed"])

    def loss_fn(m, batch):
        tok, zt, zi, _ = batch
        return diffusion.loss(m, zi * s, tokens=tok, text_embed=zt * s)

    return _fit_prior(model, loss_fn, cfg, path, "diffusion prior", **fit_kwargs)


def load_diffusion_prior(cfg: dict | None = None, retrain: bool = False):
    cfg = cfg or prior_config()
    model = checkpoint.load_or_train(
        "unclip_prior_diffusion", cfg, build_diffusion_prior, train_diffusion_prior, retrain
    )
    return model, diffusion_of(cfg)


def best_of(candidates: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """candidates (n, k, e) -> (n, e): per row, the candidate with the highest dot product with
    its text embedding (n, e) (paper sec. 2.2: k = 2)."""
    scores = (candidates * text_embed[:, None]).sum(-1)
    return candidates[torch.arange(len(candidates)), scores.argmax(1)]


@torch.no_grad()
def sample_diffusion_prior(
    prior, diffusion, prompts, scale=1.0, steps=64, candidates=2, seed=0, eta=0.0
):
    """Unit image embeddings (n, e) for prompts: `candidates` DDIM samples per prompt (with
    classifier-free guidance at `scale`), the best by z_t . z_i kept."""
    prompts = list(prompts)
    dev = next(prior.parameters()).device
    e = prior.out.out_features
    s = embed_scale(e)
    zt = embed_text(prompts)
    tok = TOKENIZER(prompts).repeat_interleave(candidates, 0).to(dev)
    zt_rep = (zt * s).repeat_interleave(candidates, 0).to(dev)
    null = TOKENIZER(glide.EMPTY).to(dev).expand_as(tok)
    fn = classifier_free(
        prior,
        scale,
        dict(tokens=tok, text_embed=zt_rep),
        dict(tokens=null, text_embed=torch.zeros_like(zt_rep)),
    )
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(tok), e, generator=gen).to(dev)
    z = F.normalize(diffusion.ddim_sample(fn, x, steps, eta, None, gen), dim=-1).cpu()
    return best_of(z.view(len(prompts), candidates, e), zt)


# --- the autoregressive prior -------------------------------------------------------------------


class PCA(nn.Module):
    """Principal components of embeddings: `fit` stores the mean and the components, most
    variance first; `encode` keeps the first k coordinates, `decode` maps them back."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.eye(dim))  # rows
        self.register_buffer("variance", torch.zeros(dim))

    @torch.no_grad()
    def fit(self, z: torch.Tensor) -> PCA:
        self.mean.copy_(z.mean(0))
        var, vecs = torch.linalg.eigh(torch.cov((z - self.mean).T.double()))
        order = var.argsort(descending=True)
        self.variance.copy_(var[order].clamp(min=0).float())
        self.components.copy_(vecs[:, order].T.float())
        return self

    def components_for(self, fraction: float) -> int:
        """How many components keep `fraction` of the variance (the paper: 319 of 1,024 keep
        99%)."""
        kept = self.variance.cumsum(0) / self.variance.sum()
        return int((kept < fraction).sum()) + 1

    def encode(self, z, k: int | None = None):
        return ((z - self.mean) @ self.components.T)[:, :k]

    def decode(self, c):
        return c @ self.components[: c.shape[1]] + self.mean


class Quantizer(nn.Module):
    """Each of k values into one of `buckets` equal-mass buckets (edges at the training data's
    quantiles); a bucket decodes to its median."""

    def __init__(self, k: int, buckets: int):
        super().__init__()
        self.register_buffer("edges", torch.zeros(k, buckets - 1))
        self.register_buffer("centres", torch.zeros(k, buckets))

    @torch.no_grad()
    def fit(self, c: torch.Tensor) -> Quantizer:
        b = self.centres.shape[1]
        self.edges.copy_(torch.quantile(c, torch.arange(1, b) / b, dim=0).T)
        self.centres.copy_(torch.quantile(c, (torch.arange(b) + 0.5) / b, dim=0).T)
        return self

    def encode(self, c):
        """Codes (n, k) long of values (n, k)."""
        return torch.stack(
            [torch.bucketize(c[:, j].contiguous(), self.edges[j]) for j in range(c.shape[1])], 1
        )

    def decode(self, codes):
        return torch.gather(self.centres.expand(len(codes), -1, -1), 2, codes[..., None])[..., 0]


class ARPrior(nn.Module):
    """p(codes | caption, z_t, dot): a causal transformer over [caption tokens, z_t, dot token,
    code_1 ... code_k]; code j is read off the output one position before it. The PCA, the
    codes' quantizer and the dot product's bucket edges are buffers, fitted before training."""

    def __init__(
        self, d: int, layers: int, heads: int, embed: int, components: int, buckets: int,
        dot_buckets: int,
    ):  # fmt: skip
        super().__init__()
        e, k = embed, components
        self.k, self.buckets = k, buckets
        self.pca = PCA(e)
        self.quantizer = Quantizer(k, buckets)
        self.register_buffer("dot_edges", torch.zeros(dot_buckets - 1))
        self.tok = nn.Embedding(len(TOKENIZER), d)
        self.pos = nn.Parameter(torch.randn(TOKENIZER.context_length, d) * 0.01)
        self.text_embed = nn.Linear(e, d)
        self.dot = nn.Embedding(dot_buckets, d)
        self.code = nn.Embedding(buckets, d)
        self.code_pos = nn.Parameter(torch.randn(k, d) * 0.01)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, buckets)

    def codes_of(self, z_img):
        return self.quantizer.encode(self.pca.encode(z_img, self.k))

    def embedding_of(self, codes):
        return F.normalize(self.pca.decode(self.quantizer.decode(codes)), dim=-1)

    def dot_bucket(self, z_txt, z_img):
        return torch.bucketize((z_txt * z_img).sum(-1).contiguous(), self.dot_edges)

    def prefix(self, tokens, z_txt, dot):
        tokens = tokens[:, : int(TOKENIZER.eot_index(tokens).max()) + 1]
        words = self.tok(tokens) + self.pos[: tokens.shape[1]]
        z = self.text_embed(z_txt * embed_scale(z_txt.shape[-1]))
        return torch.cat([words, z[:, None], self.dot(dot)[:, None]], 1)

    def run(self, h, cache=None):
        for block, c in zip(self.blocks, cache or [None] * len(self.blocks)):
            h = block(h, causal=True, cache=c)
        return self.head(self.ln(h))

    def forward(self, tokens, z_txt, dot, codes):
        """Logits (n, k, buckets) of every code given the ones before it."""
        p = self.prefix(tokens, z_txt, dot)
        h = torch.cat([p, self.code(codes[:, :-1]) + self.code_pos[: self.k - 1]], 1)
        return self.run(h)[:, p.shape[1] - 1 :]


def ar_prior_config(**overrides) -> dict:
    """The AR prior: the diffusion prior's data and schedule, its own model; no diffusion."""
    cfg = prior_config(seed=8, steps=runtime.pick(smoke=30, cpu=400, gpu=10_000))  # fewer: time
    del cfg["diffusion"]
    cfg["model"] |= dict(
        variance=0.99,  # components kept: this fraction of the variance (the paper's 319)
        buckets=runtime.pick(smoke=8, cpu=32, gpu=64),
        dot_buckets=16,
    )
    return recipe.sections(cfg, **overrides)


def build_ar_prior(cfg: dict) -> ARPrior:
    """An ARPrior with its PCA, quantizer and dot-product buckets fitted on the training data;
    its number of components is the one that keeps the model section's `variance`."""
    data, model_cfg = pairs_of(cfg), dict(cfg["model"])
    pca = PCA(model_cfg["embed"]).fit(data["z_img"])
    variance = model_cfg.pop("variance")
    model = ARPrior(**model_cfg, components=pca.components_for(variance))
    model.pca.load_state_dict(pca.state_dict())
    model.quantizer.fit(model.pca.encode(data["z_img"], model.k))
    dots = (data["z_txt"] * data["z_img"]).sum(-1)
    q = torch.arange(1, model_cfg["dot_buckets"]) / model_cfg["dot_buckets"]
    model.dot_edges.copy_(torch.quantile(dots, q))
    return model


def train_ar_prior(model: ARPrior, cfg: dict, path=None, **fit_kwargs):
    def loss_fn(m, batch):
        tok, zt, zi, zt_true = batch
        codes = m.codes_of(zi)
        dot = m.dot_bucket(zt_true, zi)
        logits = m(tok, zt, dot, codes)
        return F.cross_entropy(logits.reshape(-1, m.buckets), codes.reshape(-1))

    return _fit_prior(model, loss_fn, cfg, path, "AR prior", **fit_kwargs)


def load_ar_prior(cfg: dict | None = None, retrain: bool = False):
    cfg = cfg or ar_prior_config()
    return checkpoint.load_or_train("unclip_prior_ar", cfg, build_ar_prior, train_ar_prior, retrain)


@torch.no_grad()
def sample_ar_prior(prior: ARPrior, prompts, temperature: float = 1.0, seed: int = 0):
    """Unit image embeddings (n, e): the dot token drawn uniformly from the upper half of its
    buckets, then the k codes one at a time with a KV cache, decoded through the PCA."""
    prompts = list(prompts)
    dev = next(prior.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    n_dot = len(prior.dot_edges) + 1
    dot = torch.randint(n_dot // 2, n_dot, (len(prompts),), generator=gen).to(dev)
    cache = [KVCache() for _ in prior.blocks]
    h = prior.prefix(TOKENIZER(prompts).to(dev), embed_text(prompts).to(dev), dot)
    codes = []
    for j in range(prior.k):
        logits = prior.run(h, cache)[:, -1].float() / temperature
        c = torch.multinomial(F.softmax(logits, -1).cpu(), 1, generator=gen)[:, 0].to(dev)
        codes.append(c)
        h = (prior.code(c) + prior.code_pos[j])[:, None]
    return prior.embedding_of(torch.stack(codes, 1)).cpu()


# --- the whole stack ----------------------------------------------------------------------------


def generate(prompts, prior="diffusion", decoder_scale=3.0, seed=0, parts=None):
    """Images for prompts through the whole stack: the chosen prior ("diffusion" or "ar") gives
    z_i, the decoder draws it with the caption. parts: a dict of already loaded models."""
    parts = parts if parts is not None else {}
    if prior == "diffusion":
        p, pd = parts.get("diffusion_prior") or load_diffusion_prior()
        z = sample_diffusion_prior(p, pd, prompts, seed=seed)
    elif prior == "ar":
        z = sample_ar_prior(parts.get("ar_prior") or load_ar_prior(), prompts, seed=seed)
    else:
        raise ValueError(f"prior must be 'diffusion' or 'ar', not {prior!r}")
    decoder, diffusion = parts.get("decoder") or load_decoder()
    return decode(decoder, diffusion, z, prompts, decoder_scale, seed=seed)


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


def pca_reconstruct(pca: PCA, z, k: int):
    """Unit embeddings rebuilt from their first k principal components."""
    z = z.to(pca.mean.device)
    return F.normalize(pca.decode(pca.encode(z, k)), dim=-1).cpu()


def short_caption(color: int, shape: int) -> str:
    return f"a {shapes.COLOR_NAMES[color]} {shapes.SHAPES[shape]}"


def single_objects(n: int, seed: int, res: int):
    """n one-object test scenes: (scenes, renders at res, their CLIP image embeddings)."""
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(1,))
    z = embed_image(shapes.render_tensor(s, clip.get_clip().res))
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
    from t2i.ch01_dvae.autoencoder import psnr

    s, images, z = single_objects(n, seed, decoder.res)
    x_T = invert(decoder, diffusion, images, z, scale, steps)
    rows, out = {}, {}
    for eta in etas:
        x = decode(decoder, diffusion, z, None, scale, steps, eta, seed, x_T)
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
    x_T = invert(decoder, diffusion, images, z, scale, steps)
    rng = torch.Generator().manual_seed(seed)
    new = (torch.as_tensor(s.color[:, 0]) + torch.randint(1, 6, (n,), generator=rng)) % 6
    src = [short_caption(s.color[i, 0], s.shape[i, 0]) for i in range(n)]
    dst = [short_caption(int(new[i]), s.shape[i, 0]) for i in range(n)]
    frames, flip_at, kept = {}, [None] * n, [False] * n
    for a in amounts:
        z_a = text_diff(z, src, dst, a)
        frames[a] = decode(decoder, diffusion, z_a, None, scale, steps, 0.0, seed, x_T)
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
    res = clip.get_clip().res
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
        out = decode(decoder, diffusion, embed_image(x), None, scale, seed=seed)
        reading = judge.read(out)
        colour = [[o["color"] for o in reading.objects(i)] for i in range(n)]
        rows[row] = {
            "keeps the painted colour": Rate.of([name[truth[i]] in colour[i] for i in range(n)]),
            "draws the written colour": Rate.of([name[wrong[i]] in colour[i] for i in range(n)]),
        }
        shown = (x, out)
    return rows, shown[0], shown[1]


# --- the recipes -------------------------------------------------------------------------------


def _sampler(prompt="a red circle", prior="diffusion", upsampled=False):
    parts = {"decoder": load_decoder()}
    if prior == "diffusion":
        parts["diffusion_prior"] = load_diffusion_prior()
    else:
        parts["ar_prior"] = load_ar_prior()
    upsampler = load_upsampler() if upsampled else None

    def draw(n, seed):
        x = generate([prompt] * n, prior, seed=seed, parts=parts)
        return x if upsampler is None else upsample(*upsampler, x, seed=seed)

    return draw


def _evaluation(seed: int, n: int = 96) -> dict:
    """The judge on n short prompts drawn through either prior and the decoder."""
    parts = {"decoder": load_decoder(), "diffusion_prior": load_diffusion_prior()}
    parts["ar_prior"] = load_ar_prior()
    prompts = shapes.eval_prompts(n, 12, partial=True)
    return {
        f"{name} prior": glide.evaluate(generate(prompts, name, seed=seed, parts=parts), prompts)
        for name in ("diffusion", "ar")
    }


RECIPES = {
    "decoder": recipe.Recipe(decoder_config, build_decoder, train_decoder, load_decoder),
    "prior-diffusion": recipe.Recipe(
        prior_config, build_diffusion_prior, train_diffusion_prior, load_diffusion_prior
    ),
    "prior-ar": recipe.Recipe(ar_prior_config, build_ar_prior, train_ar_prior, load_ar_prior),
    "unclip-upsampler": recipe.Recipe(
        upsampler_config, build_upsampler, glide.train_upsampler, load_upsampler
    ),
    "unclip": recipe.Recipe(  # the whole stack: prior, decoder and upsampler
        sampler=_sampler,
        evaluate=_evaluation,
        options={
            "sample": {
                "--prompt": dict(default="a red circle"),
                "--prior": dict(default="diffusion", choices=["diffusion", "ar"]),
                "--upsample": dict(
                    action="store_true", dest="upsampled", help="2x with the upsampler"
                ),
            },
            "evaluate": {"--n": dict(type=int, default=96, help="prompts")},
        },
        prefix=glide.file_prefix,
    ),
}


def cli_vary(args):
    """`python -m t2i vary --image PNG --eta E --n N --out DIR`: variations of an image."""
    decoder, diffusion = load_decoder()
    image = torch.from_numpy(plot.read_pngs([args.image])).permute(0, 3, 1, 2).float() / 127.5 - 1
    if image.shape[-1] != decoder.res:
        image = F.interpolate(image, size=decoder.res, mode="area")
    out = vary(decoder, diffusion, image, args.eta, args.n, seed=args.seed)
    plot.save_pngs(out, args.out, f"variation_eta{args.eta:g}")
    print(f"{len(out)} variations (eta = {args.eta:g}) in {args.out}/")
