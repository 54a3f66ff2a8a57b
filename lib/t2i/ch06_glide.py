"""GLIDE (Nichol et al. 2021, arXiv 2112.10741): diffusion conditioned on a caption, for
notebook 06 (and the decoder of 07, which adds a CLIP image embedding to it).

The models follow glide-text2im's `text2im_model.py`, small:
  - `TextEncoder`: a transformer over the caption tokens without a causal mask; padding
    positions get a learned embedding of their own (GLIDE's `xf_padding`).
  - `Text2Im`: the course's U-Net (`t2i.blocks.unet.UNet`) whose time embedding gets the projected
    output of the caption's last token (`cond`), and whose every attention layer reads all the
    caption's token outputs as extra keys and values (`context`). It starts as notebook 05's
    trained label model (`start_from_label_model`), where the paper trains from scratch.
  - `Upsampler`: the same, with the bilinearly upsampled low-resolution image as 3 extra input
    channels (GLIDE's `SuperResText2ImUNet`).
  - `Inpainter`: the same, with the masked image and the mask as 4 extra input channels
    (GLIDE's `InpaintText2ImUNet`), fine-tuned from the base model.
  - `NoisedCLIP`: CLIP whose image tower reads x_t and t, for CLIP guidance (GLIDE sec. 3.3).
Classifier-free guidance uses the empty caption as the null condition: 20% of training captions
are emptied (GLIDE sec. 4). Training captions mix full ones with partial ones ("a red circle"),
so what a student types is in distribution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i import ch03_clip as clip
from t2i import ch05_diffusion as label_diffusion
from t2i.blocks.diffusion import classifier_free, diffusion_of, gradient_guidance
from t2i.blocks.layers import Block
from t2i.blocks.unet import Embedding, Encoder, UNet
from t2i.core import checkpoint, recipe, runtime, train
from t2i.core.stats import Rate
from t2i.front import plot
from t2i.world import judge, shapes
from t2i.world.tokenizer import Tokenizer

TOKENIZER = clip.TOKENIZER  # one caption tokenizer for CLIP, the noised CLIP and GLIDE
EMPTY = ""  # the null caption of classifier-free guidance


class TextEncoder(nn.Module):
    """Caption tokens (B, S) -> (pooled (B, d), tokens (B, S, d)): GLIDE's text transformer.

    No causal mask: every token sees the whole caption. Padding positions get a learned
    embedding in place of the pad token's, and the last position's output is the pooled vector
    (GLIDE uses xf_out[:, -1])."""

    def __init__(self, d: int, layers: int, heads: int, tokenizer: Tokenizer = TOKENIZER):
        super().__init__()
        self.pad_id = tokenizer.pad_id
        self.tok = nn.Embedding(len(tokenizer), d)
        self.pos = nn.Parameter(torch.randn(tokenizer.context_length, d) * 0.01)
        self.padding = nn.Parameter(torch.randn(d) * 0.01)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, tokens):
        pad = (tokens == self.pad_id)[..., None]
        x = torch.where(pad, self.padding, self.tok(tokens)) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        return x[:, -1], x


class Text2Im(nn.Module):
    """eps(x_t, t, tokens): the text-conditional U-Net of GLIDE."""

    extra_channels = 0

    def __init__(
        self,
        res: int,
        ch: int,
        mults,
        blocks: int,
        attn_res,
        heads: int,
        text_width: int,
        text_layers: int,
        coords: bool,
    ):
        super().__init__()
        self.res = res
        self.text = TextEncoder(text_width, text_layers, heads)
        self.unet = UNet(
            res=res,
            in_ch=3 + self.extra_channels,
            ch=ch,
            mults=tuple(mults),
            blocks=blocks,
            attn_res=tuple(attn_res),
            heads=heads,
            cond_dim=text_width,
            context_dim=text_width,
            coords=coords,
        )

    def inputs(self, x):
        return x

    def forward(self, x, t, tokens, **inputs):
        pooled, seq = self.text(tokens)
        return self.unet(self.inputs(x, **inputs), t, cond=pooled, context=seq)


class Upsampler(Text2Im):
    """eps(x_t, t, tokens, low_res): super-resolution conditioned on the caption and on the
    low-resolution image, upsampled bilinearly and stacked onto x_t as 3 more channels."""

    extra_channels = 3

    def inputs(self, x, low_res):
        up = F.interpolate(low_res, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, up], 1)


class Inpainter(Text2Im):
    """eps(x_t, t, tokens, image, mask): inpainting conditioned on the known pixels (the image
    times the mask, mask = 1 where known) and the mask, as 4 more input channels."""

    extra_channels = 4

    def inputs(self, x, image, mask):
        return torch.cat([x, image * mask, mask], 1)


# --- configuration ------------------------------------------------------------------------------


def base_config(**overrides) -> dict:
    """Notebook 05's label model (`label_diffusion.model_config`) with a caption in place of the
    label: the same U-Net, schedule and training, a text transformer beside it, twice the steps
    of noise and scenes (one and two objects, full and partial captions); 16x16 on the cpu
    profile. Its U-Net starts as 05's trained label model (train section's init; None: from
    scratch), where the paper trains from scratch: notebook 06 measures what it gains. Overrides
    go to the section that holds each key."""
    cfg = label_diffusion.model_config(
        T=runtime.pick(smoke=100, cpu=500, gpu=1000),
        n_train=runtime.pick(smoke=2_000, cpu=40_000, gpu=100_000),
    )
    del cfg["train"]["p_null"]
    cfg["model"] |= dict(
        heads=4,
        text_width=runtime.pick(smoke=16, cpu=64, gpu=128),
        text_layers=runtime.pick(smoke=1, cpu=2, gpu=3),
        coords=True,
    )
    cfg["train"] |= dict(
        p_empty=0.2,  # captions emptied for classifier-free guidance
        steps=runtime.pick(smoke=30, cpu=1000, gpu=20_000),
        init=label_diffusion.model_config(),
    )
    cfg["data"] |= dict(counts=[1, 2], count_probs=[1, 1], p_partial=0.5)
    return recipe.sections(cfg, **overrides)


def build_base(cfg: dict) -> Text2Im:
    """A Text2Im that starts, where the train section's init is set, as notebook 05's label model
    of that configuration (`start_from_label_model`)."""
    model = Text2Im(cfg["data"]["res"], **cfg["model"])
    if cfg["train"].get("init"):
        label_model, _ = label_diffusion.load(cfg["train"]["init"])
        start_from_label_model(model.unet, label_model)
    return model


def start_from_label_model(unet: UNet, label_model: UNet) -> None:
    """Copy a trained label model's U-Net into a caption model's: every weight but the label
    embedding, which the caption replaces. The caption's projections keep their initialisation;
    the input's coordinate channels get zero weights, so the image is read as 05 read it."""
    own = unet.state_dict()
    copied = {k: v for k, v in label_model.state_dict().items() if not k.startswith("embed.label")}
    inp = "encoder.inp.weight"  # (out, in, 3, 3): zero weights for the extra input channels
    copied[inp] = F.pad(
        copied[inp], (0, 0, 0, 0, 0, max(0, own[inp].shape[1] - copied[inp].shape[1]))
    )
    state = {**own, **copied}
    why = checkpoint.mismatch(unet, state)
    if why:
        raise ValueError(
            f"the label model of the base's init does not fit its U-Net ({why}): give both the "
            "same ch, mults, blocks and attn_res, or init=None to train from scratch"
        )
    unet.load_state_dict(state)


# --- training data ------------------------------------------------------------------------------


def captioned_scenes(n: int, seed: int, p_partial: float, counts=(1, 2), count_probs=None):
    """n training scenes and one caption each: full ("a small red circle at the top left") or,
    with probability p_partial, partial, each of size, colour and place kept with probability
    1/2."""
    probs = tuple(count_probs) if count_probs else None
    s = shapes.sample_scenes(n, seed=seed, split="train", counts=tuple(counts), count_probs=probs)
    return s, shapes.shorten(s, shapes.caption(s, seed=seed), p_partial, seed + 1)


def _batches(cfg: dict, dev, res_list, objects: bool = False):
    """batch_fn giving (images at each res in res_list..., tokens) with captions emptied at
    rate p_empty; with objects=True also, for one object of each scene drawn at random, its
    centre (x, y) (B, 2) and the tokens of its own caption (emptied with the scene's)."""
    data, batch_size, p_empty = cfg["data"], cfg["train"]["batch"], cfg["train"]["p_empty"]
    s, captions = captioned_scenes(
        data["n_train"], cfg["seed"], data["p_partial"], data["counts"], data["count_probs"]
    )
    images = [shapes.render_tensor(s, r) for r in res_list]
    tokens, empty = TOKENIZER(captions), TOKENIZER(EMPTY)[0]
    if objects:
        xy = torch.from_numpy(np.stack([s.cx, s.cy], -1)).float()  # (n, 3, 2)
        count = torch.from_numpy(s.count)
        own = [TOKENIZER(shapes.caption(shapes.alone(s, j), cfg["seed"])) for j in range(2)]
        own = torch.stack(own, 1)  # (n, 2, L): each of the first two objects' own caption

    def batch_fn(step, gen):
        idx = torch.randint(0, len(tokens), (batch_size,), generator=gen)
        emptied = torch.rand(len(idx), generator=gen) < p_empty
        tok = tokens[idx].clone()
        tok[emptied] = empty
        batch = [x[idx].to(dev) for x in images] + [tok.to(dev)]
        if objects:
            j = (torch.rand(len(idx), generator=gen) * count[idx]).long().clamp(max=1)
            tok_j = own[idx, j].clone()
            tok_j[emptied] = empty
            batch += [xy[idx, j].to(dev), tok_j.to(dev)]
        return batch

    return batch_fn


def train_base(model: Text2Im, cfg: dict, path=None, **fit_kwargs):
    """Fit eps(x_t, t, caption) with L_simple, Min-SNR weighted where the train section's min_snr
    is set (fp32: see label_diffusion.train_model)."""
    diffusion, min_snr = diffusion_of(cfg), cfg["train"]["min_snr"]

    def loss_fn(m, batch):
        x, tok = batch
        return diffusion.loss(m, x, min_snr=min_snr, tokens=tok)

    dev = next(model.parameters()).device
    return train.fit_config(
        model,
        loss_fn,
        _batches(cfg, dev, [cfg["data"]["res"]]),
        path=path,
        cfg=cfg,
        desc="GLIDE base",
        amp=False,
        **fit_kwargs,
    )


def load_base(cfg: dict | None = None, retrain: bool = False):
    """(model, diffusion): GLIDE's base model from the cache, or trained now."""
    cfg = cfg or base_config()
    model = checkpoint.load_or_train("glide_base", cfg, build_base, train_base, retrain)
    return model, diffusion_of(cfg)


def upsampler_config(**overrides) -> dict:
    """The 2x upsampler: trained on random crops of a quarter of the target's area (unCLIP sec.
    C), so a step costs what a base step costs; fully convolutional, it then runs at 2x."""
    cfg = base_config(
        seed=3,
        res=runtime.pick(smoke=8, cpu=16, gpu=32),  # the training crop
        coords=False,  # crops: the low-resolution image says where things are
        p_empty=0.1,
        steps=runtime.pick(smoke=20, cpu=200, gpu=10_000),
        init=None,  # its input and crops differ from the label model's
    )
    cfg["data"]["out_res"] = runtime.pick(smoke=16, cpu=32, gpu=64)
    cfg["train"]["low_res_noise"] = 0.05
    return recipe.sections(cfg, **overrides)


def train_upsampler(model: Upsampler, cfg: dict, path=None, **fit_kwargs):
    """Fit eps(x_t, t, caption, low_res) on crops: a random window of the full-resolution image
    and the window of the low-resolution image it comes from, lightly noised so that the model
    tolerates the base model's imperfect samples (and blurred, where the train section's blur is
    set)."""
    diffusion, schedule = diffusion_of(cfg), cfg["train"]
    dev = next(model.parameters()).device
    big, small = cfg["data"]["out_res"], cfg["data"]["out_res"] // 2
    crop = cfg["data"]["res"]
    batches = _batches(cfg, dev, [big, small])

    def loss_fn(m, batch):
        hi, lo, tok = batch
        oy, ox = (2 * int(v) for v in torch.randint(0, (big - crop) // 2 + 1, (2,)))
        hi = hi[:, :, oy : oy + crop, ox : ox + crop]
        lo = lo[:, :, oy // 2 : (oy + crop) // 2, ox // 2 : (ox + crop) // 2]
        if schedule.get("blur"):  # unCLIP's corruption: a Gaussian blur of random width
            lo = judge.blur(lo, float(torch.empty(()).uniform_(0.1, schedule["blur"])))
        level = torch.rand(len(lo), 1, 1, 1, device=lo.device)
        lo = lo + schedule["low_res_noise"] * level * torch.randn_like(lo)
        return diffusion.loss(m, hi, min_snr=schedule["min_snr"], tokens=tok, low_res=lo)

    return train.fit_config(
        model,
        loss_fn,
        batches,
        path=path,
        cfg=cfg,
        desc="GLIDE upsampler",
        amp=False,
        **fit_kwargs,
    )


def build_upsampler(cfg: dict) -> Upsampler:
    model = Upsampler(cfg["data"]["res"], **cfg["model"])
    model.res = cfg["data"]["out_res"]
    return model


def load_upsampler(cfg: dict | None = None, retrain: bool = False):
    cfg = cfg or upsampler_config()
    model = checkpoint.load_or_train(
        "glide_upsampler", cfg, build_upsampler, train_upsampler, retrain
    )
    return model, diffusion_of(cfg)


def inpainter_config(**overrides) -> dict:
    """The inpainting model: the base model's weights, fine-tuned with random regions erased,
    and with a share p_object of the masks a square erasing one whole object (what a user
    erases to have it redrawn: the random masks rarely take a whole object away). With
    object_caption, such a square comes with the erased object's own caption, as an editor
    names what to draw there; with erased_only, the loss counts the erased pixels only (the
    known ones are the model's input, and the result keeps them anyway). In notebook 06's test
    (96 scenes, cpu profile, the erased object's caption as the prompt): p_object 0.5 put the
    object back in 0.60 [0.50, 0.70] of them, p_object 0.8 in 0.83 [0.75, 0.89]; the naive
    method in 0.15 [0.09, 0.23]."""
    cfg = dict(
        seed=4,
        model=dict(base=base_config()),
        train=dict(
            erased_only=True,
            min_snr=5.0,  # as the base model
            steps=runtime.pick(smoke=20, cpu=250, gpu=5_000),
            lr=1e-3,
            warmup=runtime.pick(smoke=5, cpu=50, gpu=200),
            ema=runtime.pick(smoke=None, cpu=0.99, gpu=0.999),
        ),
        data=dict(p_object=0.8, object_caption=True),
    )
    return recipe.sections(cfg, **overrides)


def random_masks(n: int, res: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 1, res, res) masks, 1 where pixels are known and 0 where erased: half of them a
    rectangle of a quarter to three quarters of each side, half a blob of two or three discs."""
    yy, xx = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    erased = torch.zeros(n, res, res, dtype=torch.bool)
    u = torch.rand(n, 8, generator=gen)
    for i in range(n):
        if i % 2 == 0:
            h, w = (res * (0.25 + 0.5 * u[i, :2])).long()
            y0, x0 = (u[i, 2] * (res - h + 1)).long(), (u[i, 3] * (res - w + 1)).long()
            erased[i, y0 : y0 + h, x0 : x0 + w] = True
        else:
            for _ in range(2 + int(u[i, 4] < 0.5)):
                cy, cx = torch.rand(2, generator=gen) * res
                r = res * (0.12 + 0.13 * float(torch.rand(1, generator=gen)))
                erased[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    return (~erased).float()[:, None]


def square_masks(centres: torch.Tensor, half: torch.Tensor, res: int) -> torch.Tensor:
    """(n, 1, res, res) masks erasing a square of half-side half[i] (pixels) around each centre
    (x, y), given as fractions of the side."""
    grid = torch.arange(res) + 0.5
    cx, cy = (centres[:, None, None, k] * res for k in (0, 1))
    h = half.float()[:, None, None]
    erased = ((grid[None, None, :] - cx).abs() < h) & ((grid[None, :, None] - cy).abs() < h)
    return (~erased).float()[:, None]


def build_inpainter(cfg: dict) -> Inpainter:
    """An Inpainter that starts as the base model: its weights copied, the 4 new input channels
    starting at zero (so it begins by ignoring them, as GLIDE's fine-tuning does). The input
    channels are [x_t, masked image, mask, coordinates]."""
    base_cfg = cfg["model"]["base"]
    model = Inpainter(base_cfg["data"]["res"], **base_cfg["model"])
    base, _ = load_base(base_cfg)
    state = base.state_dict()
    w = state["unet.encoder.inp.weight"]
    new = w.new_zeros(w.shape[0], 4, *w.shape[2:])
    state["unet.encoder.inp.weight"] = torch.cat([w[:, :3], new, w[:, 3:]], 1)
    model.load_state_dict(state)
    return model


def train_inpainter(model: Inpainter, cfg: dict, path=None, **fit_kwargs):
    base, schedule = cfg["model"]["base"], cfg["train"]
    diffusion = diffusion_of(base)
    dev = next(model.parameters()).device
    mask_gen = torch.Generator().manual_seed(cfg["seed"])

    def loss_fn(m, batch):
        x, tok, centres, own = batch
        res = x.shape[-1]
        mask = random_masks(len(x), res, mask_gen)
        whole = torch.rand(len(x), generator=mask_gen) < cfg["data"]["p_object"]
        half = res * (0.15 + 0.15 * torch.rand(len(x), generator=mask_gen))
        mask[whole] = square_masks(centres[whole].cpu(), half[whole], res)
        mask = mask.to(dev)
        if cfg["data"]["object_caption"]:  # an erased object comes with its own caption
            tok = torch.where(whole.to(dev)[:, None], own, tok)
        where = 1 - mask if schedule["erased_only"] else None
        return diffusion.loss(
            m, x, min_snr=schedule["min_snr"], where=where, tokens=tok, image=x, mask=mask
        )

    return train.fit_config(
        model,
        loss_fn,
        _batches({**base, "seed": cfg["seed"]}, dev, [base["data"]["res"]], objects=True),
        path=path,
        cfg=cfg,
        desc="GLIDE inpainting",
        amp=False,
        **fit_kwargs,
    )


def load_inpainter(cfg: dict | None = None, retrain: bool = False):
    cfg = cfg or inpainter_config()
    model = checkpoint.load_or_train(
        "glide_inpaint", cfg, build_inpainter, train_inpainter, retrain
    )
    return model, diffusion_of(cfg["model"]["base"])


# --- sampling -----------------------------------------------------------------------------------


def guided_model(model, prompts, guidance="cfg", scale=3.0, noised_clip=None, **inputs):
    """(fn(x_t, t), cond_fn) for the sampler: the caption model with its guidance.

    guidance: "none" (the caption model alone), "cfg" (classifier-free against the empty
    caption, scale w in u + w (c - u)), or "clip" (the caption model steered by the gradient of
    a noised CLIP's image-text similarity times `scale`). `inputs` are the extra inputs of an
    upsampler (low_res) or inpainter (image, mask), one per prompt."""
    dev = next(model.parameters()).device
    tok = TOKENIZER(list(prompts)).to(dev)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    if guidance == "cfg":
        null = TOKENIZER(EMPTY).to(dev).expand_as(tok)
        cond, uncond = dict(tokens=tok, **inputs), dict(tokens=null, **inputs)
        return classifier_free(model, scale, cond, uncond), None
    if guidance not in ("none", "clip"):
        raise ValueError(f"guidance must be 'none', 'cfg' or 'clip', not {guidance!r}")
    fn = lambda xt, t: model(xt, t, tokens=tok, **inputs)  # noqa: E731
    if guidance == "none":
        return fn, None
    if noised_clip is None:
        raise ValueError("CLIP guidance needs a noised CLIP (glide.load_noised_clip())")
    return fn, clip_grad(noised_clip, list(prompts), scale)


def sample(
    model,
    diffusion,
    prompts,
    guidance: str = "cfg",
    scale: float = 3.0,
    steps: int = 25,
    eta: float = 1.0,
    seed: int = 0,
    noised_clip=None,
    trace: bool = False,
    **inputs,
):
    """Images (n, 3, res, res) in [-1, 1] for caption prompts, by DDIM (eta = 1 by default:
    at 25 steps, eta = 0 left background noise in notebook 05). See `guided_model`."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    fn, cond_fn = guided_model(model, prompts, guidance, scale, noised_clip, **inputs)
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    x = torch.randn(len(prompts), 3, model.res, model.res, generator=gen).to(dev)
    return diffusion.ddim_sample(fn, x, steps, eta, cond_fn, gen, trace)


def upsample(upsampler, diffusion, low_res, prompts, scale=1.0, steps=25, eta=1.0, seed=0):
    """The second stage: 2x images from base samples low_res (n, 3, r, r) and their captions."""
    return sample(upsampler, diffusion, prompts, "cfg", scale, steps, eta, seed, low_res=low_res)


@torch.no_grad()
def inpaint(model, diffusion, image, mask, prompts, scale=3.0, steps=25, eta=1.0, seed=0):
    """Fill the erased pixels (mask = 0) of image (n, 3, r, r) to fit the prompts.

    With an `Inpainter`, the model sees the known pixels and the mask. With a plain `Text2Im`,
    the naive method: at every step the known pixels of x_t are replaced by the original noised
    to the same level, so the model only ever sees them as noise. Either way the known pixels
    of the result are the original's exactly."""
    prompts = [prompts] * len(image) if isinstance(prompts, str) else list(prompts)
    dev = next(model.parameters()).device
    image, mask = image.to(dev), mask.to(dev).expand(-1, 1, -1, -1)
    fitted = isinstance(model, Inpainter)
    inputs = dict(image=image, mask=mask) if fitted else {}
    fn, _ = guided_model(model, prompts, "cfg", scale, **inputs)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(image.shape, generator=gen).to(dev)
    ts = diffusion.timesteps(steps)
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        if not fitted:
            noise = torch.randn(image.shape, generator=gen).to(dev)
            noised = diffusion.q_sample(image, torch.full((len(x),), t), noise)
            x = mask * noised + (1 - mask) * x
        x, _ = diffusion.ddim_step(fn, x, t, t_prev, eta, None, gen)
    return mask * image + (1 - mask) * x


# --- noised CLIP and CLIP guidance --------------------------------------------------------------


class NoisedImageEncoder(nn.Module):
    """CLIP's image tower for noised images: the U-Net's down path reading (x_t, t), pooled and
    projected to the joint embedding."""

    def __init__(self, res, ch, mults, embed):
        super().__init__()
        emb_dim = 4 * ch
        self.embed = Embedding(ch, emb_dim, 0, 0)
        self.encoder = Encoder(res, 3, ch, tuple(mults), 1, (), 4, emb_dim, None)
        c = self.encoder.out_channels
        self.head = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU())
        self.proj = nn.Linear(c, embed)

    def forward(self, x, t):
        h, _ = self.encoder(x, self.embed(t))
        return self.proj(self.head(h).mean((2, 3)))


class NoisedCLIP(nn.Module):
    """A CLIP (t2i.ch03_clip) whose image encoder sees noised images x_t with their timestep."""

    def __init__(self, res: int, ch: int, mults, d: int, layers: int, embed: int):
        super().__init__()
        self.image = NoisedImageEncoder(res, ch, mults, embed)
        self.text = clip.TextEncoder(len(TOKENIZER), TOKENIZER.context_length, d, layers, 4, embed)
        self.log_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def encode_image(self, x, t):
        return F.normalize(self.image(x, t).float(), dim=-1)

    def encode_text(self, texts):
        dev = self.log_scale.device
        tok = TOKENIZER(texts).to(dev) if not torch.is_tensor(texts) else texts.to(dev)
        return F.normalize(self.text(tok).float(), dim=-1)

    def forward(self, x, t, tokens):
        scale = self.log_scale.clamp(max=clip.LOG_MAX_SCALE).exp()  # as CLIP.scale
        return scale * self.encode_image(x, t) @ self.encode_text(tokens).T


def noised_clip_config(**overrides) -> dict:
    """The noised CLIP of CLIP guidance: its images are the base model's x_t at every t."""
    base = base_config()
    cfg = dict(
        seed=2,
        model=dict(
            ch=runtime.pick(smoke=8, cpu=32, gpu=64),
            mults=[1, 2],
            d=runtime.pick(smoke=32, cpu=64, gpu=128),
            layers=2,
            embed=runtime.pick(smoke=32, cpu=64, gpu=128),
        ),
        diffusion=base["diffusion"],  # it reads the base model's x_t: the same process
        train=dict(
            p_empty=0.0,
            steps=runtime.pick(smoke=30, cpu=250, gpu=4000),
            batch=runtime.pick(smoke=16, cpu=128, gpu=256),
            lr=2e-3,
            warmup=runtime.pick(smoke=5, cpu=50, gpu=200),
        ),
        data=base["data"],  # and the base model's scenes and captions
    )
    return recipe.sections(cfg, **overrides)


def build_noised_clip(cfg: dict) -> NoisedCLIP:
    return NoisedCLIP(cfg["data"]["res"], **cfg["model"])


def train_noised_clip(model: NoisedCLIP, cfg: dict, path=None, **fit_kwargs):
    """Contrastive loss (CLIP eq. in its fig. 3) on (x_t, caption) pairs at random t. Two images
    whose captions are the same text are both positives of it."""
    diffusion = diffusion_of(cfg)
    dev = next(model.parameters()).device

    def loss_fn(m, batch):
        x, tok = batch
        t = torch.randint(0, diffusion.T, (len(x),), device=x.device)
        logits = m(diffusion.q_sample(x, t), t, tok)
        same = (tok[:, None] == tok[None]).all(-1)
        acc = (logits.argmax(1) == torch.arange(len(x), device=x.device)).float().mean()
        return clip.contrastive_loss(logits, same), {"acc": acc.item()}

    return train.fit_config(
        model,
        loss_fn,
        _batches(cfg, dev, [cfg["data"]["res"]]),
        path=path,
        cfg=cfg,
        desc="noised CLIP",
        amp=False,
        **fit_kwargs,
    )


def load_noised_clip(cfg: dict | None = None, retrain: bool = False) -> NoisedCLIP:
    cfg = cfg or noised_clip_config()
    return checkpoint.load_or_train(
        "noised_clip", cfg, build_noised_clip, train_noised_clip, retrain
    )


def clip_grad(noised_clip: NoisedCLIP, prompts: list[str], scale: float):
    """cond_fn of CLIP guidance (GLIDE eq. 3): scale * grad_x (f(x_t, t) . g(c)), the noised
    CLIP's image embedding against the caption's text embedding."""
    with torch.no_grad():
        text = noised_clip.encode_text(prompts)
    return gradient_guidance(lambda x, t: (noised_clip.encode_image(x, t) * text).sum(-1), scale)


# --- measuring ----------------------------------------------------------------------------------


def evaluate(images, prompts) -> dict:
    """The judge's table, plus two combined facts: "drawn", every named object's colour and
    shape right (the bar of one-object prompts), and "objects", every named object there with
    its colour (count and colour right, the bar of two-object prompts)."""
    rows = judge.score_each(images, prompts)
    table = judge.summarize(rows)
    table["drawn"] = Rate.of([r.get("color", True) and r["shape"] for r in rows])
    table["objects"] = Rate.of([r["count"] and r.get("color", True) for r in rows])
    return table


FAILURES = ("right", "both colours, one not a single object", "one colour only", "other")


def failure_kinds(images, prompts) -> list[str]:
    """How each sample of a multi-object prompt went, by the judge's reading of the colours the
    prompt names (one of FAILURES): "right" (count and colours right); "both colours, one not a
    single object" (every named colour there, one as mass that fits no one template: an extra
    object of that colour, or a smear); "one colour only" (a named colour missing, nothing of
    another colour: both objects in one colour, or one object alone); "other"."""
    reading, kinds = judge.read(images), []
    for i, prompt in enumerate(prompts):
        facts = shapes.parse_caption(prompt)
        row = judge.check(reading, i, facts)
        named = [shapes.COLOR_NAMES.index(o["color"]) for o in facts.objects if "color" in o]
        mass = reading.present[i] | reading.blob[i]
        if row["count"] and row.get("color", True):
            kinds.append(FAILURES[0])
        elif mass[named].all() and reading.blob[i][named].any():
            kinds.append(FAILURES[1])
        elif mass[named].sum() == 1 and mass.sum() == 1:
            kinds.append(FAILURES[2])
        else:
            kinds.append(FAILURES[3])
    return kinds


# --- inpainting: the task and its measure ------------------------------------------------------


def inpaint_task(n: int, res: int, seed: int = 77):
    """n two-object test scenes with the second object erased by a square around its cell:
    (images, masks (1 = known), the erased object's full caption, scenes), as an editor erases
    an object and names what to draw there. A success puts the erased object back."""
    s = shapes.sample_scenes(n, seed=seed, split="test", counts=(2,))
    images = shapes.render_tensor(s, res)
    centres = torch.from_numpy(np.stack([s.cx[:, 1], s.cy[:, 1]], 1)).float()
    masks = square_masks((centres * res).round() / res, torch.full((n,), round(res * 0.2)), res)
    return images, masks, shapes.caption(shapes.alone(s, 1), seed=seed), s


def inpaint_score(out, task) -> dict:
    """Per method: `in_mask`, the erased object (its colour and shape) found by the judge with
    its centre inside the erased square; `seam`, the mean jump in colour across the mask's edge
    beyond the real image's jump there (0 = as smooth as the real thing); `known_exact`."""
    images, masks, _, s = task
    reading = judge.read(out)
    res = images.shape[-1]
    hits = []
    for i in range(len(out)):
        c = s.color[i, 1]
        ok = bool(reading.present[i, c]) and not reading.blob[i, c]
        ok = ok and reading.shape[i, c] == s.shape[i, 1]
        if ok:
            x, y = int(reading.cx[i, c] * res), int(reading.cy[i, c] * res)
            ok = masks[i, 0, min(y, res - 1), min(x, res - 1)] == 0
        hits.append(ok)
    known = masks.expand_as(images).bool()
    return {
        "in_mask": Rate.of(hits),
        "seam": float(_edge_jump(out, masks) - _edge_jump(images, masks)),
        "known_exact": bool(torch.equal(out.cpu()[known], images[known])),
    }


def _edge_jump(x, masks) -> torch.Tensor:
    """Mean absolute colour difference between horizontally or vertically adjacent pixels of
    which one is known and the other erased."""
    x = x.cpu()
    jumps = []
    for dim in (2, 3):
        a, b = x.narrow(dim, 0, x.shape[dim] - 1), x.narrow(dim, 1, x.shape[dim] - 1)
        ma, mb = masks.narrow(dim, 0, x.shape[dim] - 1), masks.narrow(dim, 1, x.shape[dim] - 1)
        edge = (ma != mb).expand_as(a)
        jumps.append((a - b).abs()[edge])
    return torch.cat(jumps).mean()


# --- the recipes -------------------------------------------------------------------------------


def file_prefix(prompt: str, **_) -> str:
    """Sample files' name for a prompt: its words as the tokenizer reads them, joined by _."""
    words = TOKENIZER.decode(TOKENIZER.encode(prompt)).replace(",", "").replace(" ", "_")
    return words or "empty"


def _sampler(prompt="a red circle above a blue square", guidance="cfg", scale=3.0, steps=25,
             upsampled=False):  # fmt: skip
    model, diffusion = load_base()
    noised_clip = load_noised_clip() if guidance == "clip" else None
    upsampler = load_upsampler() if upsampled else None

    def draw(n, seed):
        prompts = [prompt] * n
        x = sample(model, diffusion, prompts, guidance, scale, steps, seed=seed,
                   noised_clip=noised_clip)  # fmt: skip
        if upsampler is not None:
            x = upsample(*upsampler, x, prompts, steps=steps, seed=seed)
        return x

    return draw


def _evaluation(seed: int, n: int = 96, scale: float = 3.0) -> dict:
    """The judge on the four prompt sets of notebook 06 (one and two objects, full and short)."""
    model, diffusion = load_base()
    sets = {
        "one object, full": shapes.eval_prompts(n, 11),
        "one object, short": shapes.eval_prompts(n, 12, partial=True),
        "two objects, full": shapes.eval_prompts(n, 13, counts=(2,)),
        "two objects, short": shapes.eval_prompts(n, 14, counts=(2,), partial=True),
    }
    return {
        name: evaluate(sample(model, diffusion, ps, "cfg", scale, seed=seed), ps)
        for name, ps in sets.items()
    }


RECIPES = {
    "glide": recipe.Recipe(
        config=base_config,
        build=build_base,
        train=train_base,
        load=load_base,
        sampler=_sampler,
        evaluate=_evaluation,
        options={
            "sample": {
                "--prompt": dict(default="a red circle above a blue square"),
                "--guidance": dict(default="cfg", choices=["none", "cfg", "clip"]),
                "--scale": dict(type=float, default=3.0),
                "--steps": dict(type=int, default=25),
                "--upsample": dict(
                    action="store_true", dest="upsampled", help="2x with the upsampler"
                ),
            },
            "evaluate": {
                "--n": dict(type=int, default=96, help="prompts per set"),
                "--scale": dict(type=float, default=3.0),
            },
        },
        prefix=file_prefix,
    ),
    "glide-upsampler": recipe.Recipe(
        upsampler_config, build_upsampler, train_upsampler, load_upsampler
    ),
    "glide-inpaint": recipe.Recipe(
        inpainter_config, build_inpainter, train_inpainter, load_inpainter
    ),
    "noised-clip": recipe.Recipe(
        noised_clip_config, build_noised_clip, train_noised_clip, load_noised_clip
    ),
}


def cli_inpaint(args):
    """`python -m t2i inpaint --image PNG --mask PNG --prompt TEXT --out DIR`: the mask's dark
    pixels (< 0.5) are erased and filled; both files at the base model's resolution."""
    model, diffusion = load_inpainter()
    image = torch.from_numpy(plot.read_pngs([args.image])).permute(0, 3, 1, 2).float() / 127.5 - 1
    mask = torch.from_numpy(plot.read_pngs([args.mask])).float().mean(-1)[:, None] / 255
    if image.shape[-1] != model.res or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"image and mask must both be {model.res}x{model.res} (got {tuple(image.shape[-2:])} "
            f"and {tuple(mask.shape[-2:])})"
        )
    mask = (mask >= 0.5).float()
    images, masks = image.repeat(args.n, 1, 1, 1), mask.repeat(args.n, 1, 1, 1)
    out = inpaint(model, diffusion, images, masks, args.prompt, seed=args.seed)
    plot.save_pngs(out, args.out, "inpainted")
    print(f"{len(out)} inpainted images in {args.out}/")
