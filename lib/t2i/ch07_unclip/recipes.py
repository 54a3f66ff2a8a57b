"""unCLIP's models declared (configs, builds, training, the recipes of the command line) and the
whole stack that chains them: caption -> prior -> decoder."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i import ch03_clip as clip
from t2i import ch06_glide as glide
from t2i.blocks.diffusion import diffusion_of, with_process
from t2i.ch06_glide import upsample
from t2i.ch07_unclip.decoder import Decoder, decode
from t2i.ch07_unclip.embeddings import embed_scale, pairs_of
from t2i.ch07_unclip.priors import (
    PCA,
    ARPrior,
    DiffusionPrior,
    sample_ar_prior,
    sample_diffusion_prior,
)
from t2i.core import checkpoint, recipe, runtime, train
from t2i.world import grammar, measures
from t2i.world.prompts import EMPTY, TOKENIZER, file_prefix


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
    cfg["data"]["clip"] = clip.default_config()  # the CLIP whose image embeddings it decodes
    return recipe.sections(cfg, **overrides)


def build_decoder(cfg: dict) -> Decoder:
    """A Decoder that starts as GLIDE's base model of configuration cfg["train"]["init"] (where
    it is set): the U-Net and text encoder copied, the two image-embedding projections at zero,
    so that the decoder begins as the text-to-image model and learns what the embedding adds."""
    model = Decoder(cfg["data"]["res"], **cfg["model"])
    init = cfg["train"].get("init")
    if init:
        base, _ = glide.GLIDE.load(init)
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
    dev = runtime.device_of(model)
    empty = TOKENIZER(EMPTY)[0]

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
        model.load_state_dict(glide.GLIDE_UPSAMPLER.load(init)[0].state_dict())
    return model


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
            clip=clip.default_config(),  # the CLIP whose embeddings it learns to map
        ),
    )
    return recipe.sections(cfg, **overrides)


def build_diffusion_prior(cfg: dict) -> DiffusionPrior:
    return DiffusionPrior(**cfg["model"])


def _prior_batches(cfg: dict, dev):
    data, schedule = pairs_of(cfg), cfg["train"]
    empty = TOKENIZER(EMPTY)[0]

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
    batches = _prior_batches(cfg, runtime.device_of(model))
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


def generate(prompts, prior="diffusion", decoder_scale=3.0, seed=0, parts=None):
    """Images for prompts through the whole stack: the chosen prior ("diffusion" or "ar") gives
    z_i, the decoder draws it with the caption. parts: a dict of already loaded models."""
    parts = parts if parts is not None else {}
    if prior == "diffusion":
        p, pd = parts.get("diffusion_prior") or PRIOR_DIFFUSION.load()
        z = sample_diffusion_prior(p, pd, prompts, seed=seed)
    elif prior == "ar":
        z = sample_ar_prior(parts.get("ar_prior") or PRIOR_AR.load(), prompts, seed=seed)
    else:
        raise ValueError(f"prior must be 'diffusion' or 'ar', not {prior!r}")
    decoder, diffusion = parts.get("decoder") or DECODER.load()
    return decode(decoder, diffusion, z, prompts, scale=decoder_scale, seed=seed)


def _sampler(prompt="a red circle", prior="diffusion", upsampled=False):
    parts = {"decoder": DECODER.load()}
    if prior == "diffusion":
        parts["diffusion_prior"] = PRIOR_DIFFUSION.load()
    else:
        parts["ar_prior"] = PRIOR_AR.load()
    upsampler = UNCLIP_UPSAMPLER.load() if upsampled else None

    def draw(n, seed):
        x = generate([prompt] * n, prior, seed=seed, parts=parts)
        return x if upsampler is None else upsample(*upsampler, x, seed=seed)

    return draw


def _evaluation(seed: int, n: int = 96) -> dict:
    """The judge on n short prompts drawn through either prior and the decoder."""
    parts = {"decoder": DECODER.load(), "diffusion_prior": PRIOR_DIFFUSION.load()}
    parts["ar_prior"] = PRIOR_AR.load()
    prompts = grammar.eval_prompts(n, 12, partial=True)
    return {
        f"{name} prior": measures.caption_table(
            generate(prompts, name, seed=seed, parts=parts), prompts
        )
        for name in ("diffusion", "ar")
    }


DECODER = recipe.Recipe("decoder", decoder_config, build_decoder, train_decoder, with_process)


PRIOR_DIFFUSION = recipe.Recipe(
    "prior-diffusion", prior_config, build_diffusion_prior, train_diffusion_prior, with_process
)


PRIOR_AR = recipe.Recipe("prior-ar", ar_prior_config, build_ar_prior, train_ar_prior)


UNCLIP_UPSAMPLER = recipe.Recipe(
    "unclip-upsampler", upsampler_config, build_upsampler, glide.train_upsampler, with_process
)


UNCLIP = recipe.Recipe(  # the whole stack: prior, decoder and upsampler
    "unclip",
    sampler=_sampler,
    evaluate=_evaluation,
    options={
        "sample": {
            "--prompt": dict(default="a red circle"),
            "--prior": dict(default="diffusion", choices=["diffusion", "ar"]),
            "--upsample": dict(action="store_true", dest="upsampled", help="2x with the upsampler"),
        },
        "evaluate": {"--n": dict(type=int, default=96, help="prompts")},
    },
    prefix=file_prefix,
)


RECIPES = (DECODER, PRIOR_DIFFUSION, PRIOR_AR, UNCLIP_UPSAMPLER, UNCLIP)
