"""`--seed` of `python -m t2i sample / evaluate` seeds the sampling, never the model: every model
the command loads is the course's default one (its config, hence its cache key, unchanged)."""

import pytest
import torch

from t2i import ch02_dalle as dalle
from t2i import ch03_clip as clip
from t2i import ch05_diffusion as label_diffusion
from t2i.ch01_dvae import dvae, vqvae
from t2i.core import checkpoint, runtime
from t2i.front import cli, plot


@pytest.fixture(autouse=True)
def smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_PROFILE", "smoke")
    monkeypatch.setenv("T2I_DATA", str(tmp_path))


@pytest.fixture
def loads(monkeypatch):
    """Record (name, cfg) of every model loaded, and hand back an untrained one (no training)."""
    seen = []

    def fake_load_or_train(name, cfg, build, train, retrain=False):
        seen.append((name, cfg))
        torch.manual_seed(0)
        return build(cfg).to(runtime.device()).eval()

    monkeypatch.setattr(checkpoint, "load_or_train", fake_load_or_train)
    return seen


def test_sample_diffusion_seed_seeds_the_sampling_not_the_model(loads, monkeypatch, tmp_path):
    seeds = []
    real_sample = label_diffusion.sample

    def recording_sample(*args, **kwargs):
        seeds.append(kwargs.get("seed"))
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(label_diffusion, "sample", recording_sample)
    out = tmp_path / "out"
    cli.main(["sample", "diffusion", "--seed", "3", "--n", "2", "--steps", "2", "--out", str(out)])
    assert loads == [("diffusion", label_diffusion.model_config())]
    assert loads[0][1]["seed"] == 0
    assert seeds == [3]
    assert len(list(out.glob("*.png"))) == 2


def test_sample_diffusion_with_classifier_guidance_loads_default_models(loads, tmp_path):
    argv = ["sample", "diffusion", "--seed", "3", "--n", "1", "--steps", "2"]
    cli.main(argv + ["--guidance", "classifier", "--out", str(tmp_path / "out")])
    assert loads == [
        ("diffusion", label_diffusion.model_config()),
        ("noisy-classifier", label_diffusion.classifier_config()),
    ]


def test_evaluate_diffusion_seed_keeps_the_default_model(loads, monkeypatch, capsys):
    seeds = []

    def blank_sample(model, diffusion, labels, *args, seed=0, **kwargs):  # no sampling: fast
        seeds.append(seed)
        return torch.zeros(len(labels), 3, model.res, model.res)

    monkeypatch.setattr(label_diffusion, "sample", blank_sample)
    cli.main(["evaluate", "diffusion", "--seed", "3", "--n-per-class", "1", "--json"])
    assert loads == [("diffusion", label_diffusion.model_config())]
    assert seeds == [3, 3]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["sample", "dvae", "--n", "2"], lambda: [("dvae", dvae.default_config())]),
        (["sample", "vqvae", "--n", "2"], lambda: [("vqvae", vqvae.default_config())]),
        (
            ["sample", "dalle", "--n", "1", "--prompt", "a red circle"],
            lambda: [("dalle", dalle.default_config()), ("vqvae", vqvae.default_config())],
        ),
        (
            ["sample", "clipdraw", "--n", "1", "--steps", "1", "--prompt", "a red circle"],
            lambda: [("clip", clip.default_config())],
        ),
        (
            ["sample", "vqgan-clip", "--n", "1", "--steps", "1", "--prompt", "a red circle"],
            lambda: [("clip", clip.default_config()), ("vqvae", vqvae.default_config())],
        ),
    ],
    ids=["dvae", "vqvae", "dalle", "clipdraw", "vqgan-clip"],
)
def test_sample_seed_never_changes_a_model(loads, tmp_path, argv, expected):
    cli.main(argv + ["--seed", "3", "--out", str(tmp_path / "out")])
    assert sorted(loads, key=str) == sorted(expected(), key=str)
    assert all(cfg.get("seed", 0) == 0 for _, cfg in loads)


def test_unclip_sample_and_vary_write_their_images(loads, tmp_path):
    out, varied = tmp_path / "out", tmp_path / "varied"
    cli.main(["sample", "unclip", "--n", "2", "--prompt", "a red circle", "--out", str(out)])
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    assert {"decoder", "prior-diffusion"} <= {name for name, _ in loads}
    cli.main(["vary", "--image", str(pngs[0]), "--eta", "0.5", "--n", "3", "--out", str(varied)])
    assert len(list(varied.glob("*.png"))) == 3


def _same_files(a, b) -> bool:
    return [p.read_bytes() for p in sorted(a)] == [p.read_bytes() for p in sorted(b)]


def test_sample_pngs_are_those_drawn_in_one_call(loads, tmp_path):
    """Drawn in batches, a request that fits one batch gives the PNGs of one call, byte for byte."""
    out = tmp_path / "out"
    argv = ["sample", "diffusion", "--n", "3", "--steps", "2", "--eta", "1", "--seed", "3"]
    cli.main(argv + ["--out", str(out)])
    model, diffusion = label_diffusion.DIFFUSION.load()
    x = label_diffusion.sample(
        model,
        diffusion,
        ["red circle"] * 3,
        guidance="cfg",
        scale=3.0,
        sampler="ddim",
        steps=2,
        eta=1.0,
        classifier=None,
        seed=3,
    )
    assert _same_files(out.glob("*.png"), plot.save_pngs(x, str(tmp_path / "one"), "red_circle"))

    out = tmp_path / "dalle"
    cli.main(["sample", "dalle", "--n", "2", "--prompt", "a red circle", "--out", str(out)])
    x = dalle.generate(dalle.DALLE.load(), ["a red circle"] * 2, seed=0)
    assert _same_files(out.glob("*.png"), plot.save_pngs(x, str(tmp_path / "one_d"), "dalle"))


def test_a_large_sample_request_is_drawn_in_batches(loads, monkeypatch, tmp_path):
    calls = []

    def blank_sample(model, diffusion, labels, *args, seed=0, **kwargs):
        calls.append((len(labels), seed))
        return torch.zeros(len(labels), 3, model.res, model.res)

    monkeypatch.setattr(label_diffusion, "sample", blank_sample)
    out = tmp_path / "out"
    cli.main(["sample", "diffusion", "--n", "300", "--seed", "3", "--out", str(out)])
    assert calls == [(256, 3), (44, 3 + 256)]
    assert len(list(out.glob("red_circle-*.png"))) == 300
