"""Every model of the library at the gpu profile, built on the CPU and trained for one step on a
batch of 2 real renders with its own training function: shapes, dtypes, 64x64 images where the
gpu profile uses them, a finite loss and parameters that moved. Every recipe of `t2i.core.recipe`
takes that step; the first models are also checked shape by shape."""

import math

import pytest
import torch

from t2i import ch02_dalle as dalle
from t2i import ch03_clip as clip
from t2i import ch05_diffusion as label_diffusion
from t2i.ch01_dvae import dvae, vqvae
from t2i.core import checkpoint, runtime
from t2i.front import cli
from t2i.world import classes, shapes

ONE_STEP = dict(steps=1, warmup=1, batch=2, n_train=2)  # one optimizer step on 2 renders


@pytest.fixture(autouse=True)
def gpu_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_PROFILE", "gpu")
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    monkeypatch.setenv("T2I_AMP", "0")  # fp32 on every CPU, so dtypes do not depend on the CPU
    torch.manual_seed(0)


def renders(res: int, n: int = 2) -> torch.Tensor:
    """n real renders (n, 3, res, res) in [-1, 1] on the course's device."""
    images = shapes.render(shapes.sample_scenes(n, seed=0), res)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1).to(runtime.device())


def trainable(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def check_one_step(model, hist, before: dict, everywhere: bool = True):
    """One finite loss; every parameter the loss reached (a non-zero gradient) moved, and with
    `everywhere` the gradient reached every parameter. (A U-Net's zero-initialised output
    convolutions keep the layers before them gradient-free until they have taken a step.)"""
    assert hist.done and len(hist.loss) == 1 and math.isfinite(hist.loss[0])
    params = dict(model.named_parameters())
    moved = {n for n, p in before.items() if not torch.equal(p, params[n].detach())}
    reached = {n for n in before if params[n].grad is not None and params[n].grad.any()}
    assert reached <= moved, sorted(reached - moved)
    assert reached
    if everywhere:
        assert reached == set(before), sorted(set(before) - reached)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_gpu_profile_is_active_with_64px_images():
    assert runtime.profile() == "gpu" and runtime.image_size() == 64


def test_dvae_gpu_profile_one_step():
    cfg = dvae.default_config(**ONE_STEP)
    assert cfg["data"]["res"] == 64
    model = dvae.build(cfg).to(runtime.device())
    x = renders(64)
    with torch.no_grad():
        logits = model.encode(x)
        assert logits.shape == (2, cfg["model"]["K"], 16, 16) and logits.dtype == torch.float32
        assert model(x).shape == (2, 3, 64, 64) and model(x).dtype == torch.float32
    before = trainable(model)
    check_one_step(model, dvae.train_model(model, cfg, None, live_plot=False), before)


def test_vqvae_gpu_profile_one_step():
    cfg = vqvae.default_config(**ONE_STEP)
    assert cfg["data"]["res"] == 64
    model = vqvae.build(cfg).to(runtime.device())
    x = renders(64)
    with torch.no_grad():
        idx = model.tokens(x)
        assert idx.shape == (2, 16, 16) and idx.dtype == torch.int64
        assert model(x).shape == (2, 3, 64, 64) and model(x).dtype == torch.float32
    before, codebook = trainable(model), model.codebook.clone()
    check_one_step(model, vqvae.train_model(model, cfg, None, live_plot=False), before)
    assert not torch.equal(model.codebook, codebook)  # the EMA codebook moved too


def test_dalle_gpu_profile_one_step(monkeypatch):
    cfg = dalle.default_config(**ONE_STEP)
    text_len = cfg["model"]["text_len"]
    assert cfg["model"]["tokenizer"]["data"]["res"] == 64
    # An untrained tokenizer of the gpu profile, instead of training one for 20,000 steps.
    monkeypatch.setattr(
        vqvae.VQVAE, "load", lambda cfg=None, retrain=False: vqvae.build(cfg).requires_grad_(False)
    )
    model = dalle.build(cfg).to(runtime.device())
    assert model.grid == 16
    x = renders(64)
    with torch.no_grad():
        text = model.text_tokens(["a red circle", "a blue square above a green triangle"])
        image = model.vae.tokens(x).flatten(1)
        logits = model(text, image[:, :-1])
    assert text.shape == (2, text_len) and image.shape == (2, 256)
    assert logits.shape == (2, text_len + 255, model.text_vocab + model.K)
    assert logits.dtype == torch.float32
    before = trainable(model)
    check_one_step(model, dalle.train_model(model, cfg, None, live_plot=False), before)


def test_clip_gpu_profile_one_step():
    cfg = clip.default_config(steps=1, warmup=1, batch=2)  # fresh pairs each step: no n_train
    assert cfg["data"]["res"] == 64
    model = clip.build(cfg).to(runtime.device())
    x = renders(64)
    with torch.no_grad():
        logits = model(x, ["a red circle", "a blue square"])
        assert logits.shape == (2, 2) and logits.dtype == torch.float32
        assert model.encode_image(x).shape == (2, cfg["model"]["embed"])
    before = trainable(model)
    check_one_step(model, clip.train_clip(model, cfg, None, live_plot=False), before)


def test_class_diffusion_gpu_profile_one_step():
    cfg = label_diffusion.model_config(**ONE_STEP)
    res, T = cfg["data"]["res"], cfg["diffusion"]["T"]
    assert res == 32  # the gpu profile's diffusion model works at 32x32
    model = label_diffusion.build_model(cfg).to(runtime.device())
    x, t = renders(res), torch.tensor([0, T - 1], device=runtime.device())
    y = torch.tensor([0, classes.NULL], device=runtime.device())
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == (2, 3, res, res) and out.dtype == torch.float32
    before = trainable(model)
    hist = label_diffusion.train_model(model, cfg, live_plot=False)
    check_one_step(model, hist, before, everywhere=False)


def test_noisy_classifier_gpu_profile_one_step():
    cfg = label_diffusion.classifier_config(**ONE_STEP)
    model = label_diffusion.build_classifier(cfg).to(runtime.device())
    T = cfg["diffusion"]["T"]
    x, t = renders(cfg["data"]["res"]), torch.tensor([0, T - 1], device=runtime.device())
    with torch.no_grad():
        logits = model(x, t)
    assert logits.shape == (2, classes.NULL) and logits.dtype == torch.float32
    before = trainable(model)
    hist = label_diffusion.train_classifier(model, cfg, live_plot=False)
    check_one_step(model, hist, before, everywhere=False)


def one_step(cfg: dict) -> dict:
    """cfg with ONE_STEP's keys set in whichever sections hold them, in it and in the configs
    it nests (a tokenizer, a base model, a model to start from)."""
    out = {}
    for name, section in cfg.items():
        if isinstance(section, dict):
            section = {k: one_step(v) if isinstance(v, dict) and "train" in v else v
                       for k, v in section.items()}  # fmt: skip
            section |= {k: v for k, v in ONE_STEP.items() if k in section}
        out[name] = section
    return out


TRAINED = [name for name, r in cli.recipes().items() if r.config is not None]


@pytest.mark.parametrize("name", TRAINED)
def test_every_recipe_takes_one_step_at_the_gpu_profile(name, monkeypatch):
    """Models that a recipe builds on (a tokenizer, CLIP, a base to start from) come untrained:
    the point is that every model of the gpu profile builds and steps, not what it learns."""

    def untrained(name, cfg, build, train, retrain=False):
        return build(one_step(cfg)).to(runtime.device()).eval()

    monkeypatch.setattr(checkpoint, "load_or_train", untrained)
    r = cli.recipes()[name]
    cfg = one_step(r.config())
    model = r.build(cfg).to(runtime.device())
    before = trainable(model)
    check_one_step(model, r.train(model, cfg, None, live_plot=False), before, everywhere=False)
