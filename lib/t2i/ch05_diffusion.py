"""The label-conditional recipe of notebook 05: a U-Net diffusion model on class labels, a
noise-aware classifier, sampling with either guidance, and the judge's measurements.

A class is a (colour, shape) pair of a single-object scene: 6 x 3 = 18 classes, plus a null label
(index 18) used for classifier-free guidance (Ho & Salimans 2022: drop the label 10-20% of the
time). The held-out pair of the shapes world (purple triangle) is never in a training scene, so its
label embedding is never trained: we keep the class (so labels stay colour x shape) but leave it
out of every measured number, and the notebook shows what the model draws for it.
The cpu profile works at 16x16 (the papers' cascades start small too; GLIDE's upsampler brings
it to 32x32 in notebook 06); the judge reads 16x16 exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2i.blocks.diffusion import (
    classifier_free,
    classifier_grad,
    diffusion_of,
    seeded_noise,
    with_process,
)
from t2i.blocks.unet import NoisyClassifier, UNet
from t2i.core import recipe, runtime
from t2i.core.train import fit_config
from t2i.world import datasets, shapes
from t2i.world.classes import CLASSES, NULL, balanced_labels, label_index, label_of
from t2i.world.measures import label_table

GUIDANCE = ("none", "cfg", "classifier")
SAMPLERS = ("ddim", "ddpm")


def model_config(**overrides) -> dict:
    """The diffusion model's config for the active profile (its cache key); overrides go to the
    section that holds each key. Beside model, train and data, a diffusion model's config has
    the diffusion process it is trained for (`GaussianDiffusion`'s arguments)."""
    cfg = dict(
        seed=0,
        model=dict(
            ch=runtime.pick(smoke=8, cpu=32, gpu=64),
            mults=runtime.pick(smoke=[1, 2], cpu=[1, 2], gpu=[1, 2, 2]),
            blocks=1,
            attn_res=[8],
        ),
        diffusion=dict(
            T=runtime.pick(smoke=100, cpu=250, gpu=1000), schedule="cosine", prediction="eps"
        ),
        train=dict(
            min_snr=5.0,  # Min-SNR-gamma loss weighting (Hang et al. 2023), gamma = 5
            p_null=0.15,  # labels dropped for classifier-free guidance
            steps=runtime.pick(smoke=30, cpu=550, gpu=20_000),
            batch=runtime.pick(smoke=16, cpu=64, gpu=128),
            lr=2e-3,
            warmup=runtime.pick(smoke=5, cpu=100, gpu=500),
            ema=runtime.pick(smoke=None, cpu=0.995, gpu=0.999),
        ),
        data=dict(
            res=runtime.pick(smoke=16, cpu=16, gpu=32),
            n_train=runtime.pick(smoke=2_000, cpu=20_000, gpu=50_000),
        ),
    )
    return recipe.sections(cfg, **overrides)


def classifier_config(**overrides) -> dict:
    """The noise-aware classifier's config (smaller than the U-Net: down path only)."""
    cfg = dict(
        seed=1,
        model=dict(
            ch=runtime.pick(smoke=8, cpu=16, gpu=32),
            mults=runtime.pick(smoke=[1, 2], cpu=[1, 2], gpu=[1, 2, 2]),
        ),
        diffusion=dict(T=runtime.pick(smoke=100, cpu=250, gpu=1000), schedule="cosine"),
        train=dict(
            steps=runtime.pick(smoke=30, cpu=400, gpu=4000),
            batch=runtime.pick(smoke=16, cpu=64, gpu=128),
            lr=2e-3,
            warmup=runtime.pick(smoke=5, cpu=50, gpu=200),
        ),
        data=dict(
            res=runtime.pick(smoke=16, cpu=16, gpu=32),
            n_train=runtime.pick(smoke=2_000, cpu=20_000, gpu=50_000),
        ),
    )
    return recipe.sections(cfg, **overrides)


def dataset(cfg: dict):
    """Single-object training scenes of a config's data section: images in [-1, 1], labels."""
    ds = datasets.load_dataset(cfg["n_train"], res=cfg["res"], split="train", counts=(1,))
    labels = torch.from_numpy(ds.scenes.color[:, 0] * len(shapes.SHAPES) + ds.scenes.shape[:, 0])
    return ds.tensor(), labels.long()


def _batches(cfg, dev):
    x, y = dataset(cfg["data"])
    batch, p_null = cfg["train"]["batch"], cfg["train"].get("p_null")

    def batch_fn(step, gen):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb, yb = x[idx], y[idx]
        if p_null is not None:  # drop labels for classifier-free guidance
            yb = torch.where(torch.rand(len(yb), generator=gen) < p_null, NULL, yb)
        return xb.to(dev), yb.to(dev)

    return batch_fn


def build_model(cfg: dict) -> UNet:
    m = cfg["model"]
    return UNet(
        res=cfg["data"]["res"],
        ch=m["ch"],
        mults=tuple(m["mults"]),
        blocks=m["blocks"],
        attn_res=tuple(m["attn_res"]),
        n_classes=NULL,
    )


def train_model(model, cfg, path=None, amp=False, **fit_kwargs):
    """Train in fp32 by default: on a 2-core AVX-512 CPU a step of the cpu U-Net took 200 ms in
    fp32 and 236 ms under bf16 autocast (oneDNN's bf16 convolution backward is slow at these
    sizes; benchmarks/bench_diffusion.py speed)."""
    diffusion = diffusion_of(cfg)

    def loss_fn(m, batch):
        x, y = batch
        return diffusion.loss(m, x, min_snr=cfg["train"]["min_snr"], y=y)

    batches = _batches(cfg, runtime.device_of(model))
    return fit_config(model, loss_fn, batches, cfg, path, "diffusion U-Net", amp=amp, **fit_kwargs)


def build_classifier(cfg: dict) -> NoisyClassifier:
    m = cfg["model"]
    return NoisyClassifier(NULL, res=cfg["data"]["res"], ch=m["ch"], mults=tuple(m["mults"]))


def train_classifier(model, cfg, path=None, amp=False, **fit_kwargs):
    diffusion = diffusion_of(cfg)

    def loss_fn(m, batch):
        x, y = batch
        t = torch.randint(0, diffusion.T, (len(x),), device=x.device)
        logits = m(diffusion.q_sample(x, t), t)
        acc = (logits.argmax(1) == y).float().mean()
        return F.cross_entropy(logits.float(), y), {"accuracy": acc}

    batches = _batches(cfg, runtime.device_of(model))
    return fit_config(model, loss_fn, batches, cfg, path, "noisy classifier", amp=amp, **fit_kwargs)


# --- sampling -----------------------------------------------------------------------------------


def sample(
    model,
    diffusion,
    labels,
    *,
    guidance: str = "cfg",
    scale: float = 3.0,
    sampler: str = "ddim",
    steps: int = 25,
    eta: float = 0.0,
    classifier=None,
    seed: int = 0,
    trace: bool = False,
):
    """Images (n, 3, res, res), on the CPU in [-1, 1], for class labels (ints or 'red circle'
    strings).

    guidance: "none" (the conditional model alone), "cfg" (classifier-free, `scale` = w in
    u + w (c - u)), or "classifier" (the null-label model, i.e. unconditional, steered by the
    noisy classifier's gradient times `scale`). sampler: "ddpm" (all T steps) or "ddim" (at
    most T steps). A bad label, guidance or sampler raises a ValueError that names it.
    """
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance {guidance!r} is not one of {GUIDANCE}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not one of {SAMPLERS}")
    if guidance == "classifier" and classifier is None:
        raise ValueError("classifier guidance needs a classifier: pass classifier=...")
    dev = runtime.device_of(model)
    y = torch.tensor([label_index(v) for v in labels], device=dev)
    gen = torch.Generator().manual_seed(seed)
    x = seeded_noise((len(y), 3, model.res, model.res), gen, dev)
    cond_fn = None
    if guidance == "cfg":
        fn = classifier_free(model, scale, dict(y=y), dict(y=torch.full_like(y, NULL)))
    elif guidance == "classifier":
        null = torch.full_like(y, NULL)
        fn = lambda xt, t: model(xt, t, null)  # noqa: E731
        cond_fn = classifier_grad(classifier, y, scale)
    else:
        fn = lambda xt, t: model(xt, t, y)  # noqa: E731
    if sampler == "ddpm":
        return diffusion.ddpm_sample(fn, x, cond_fn, gen, trace)
    return diffusion.ddim_sample(fn, x, steps, eta, cond_fn, gen, trace)


def renders(labels, res: int, seed: int = 0) -> torch.Tensor:
    """Real images (n, 3, res, res) in [-1, 1] of the given classes, sizes and places drawn as in
    the data: the reference that samples are compared with, on equal n."""
    s = shapes.sample_scenes(len(labels), seed=seed, split="test", counts=(1,))
    s.color[:, 0] = [shapes.COLOR_NAMES.index(CLASSES[v][0]) for v in labels]
    s.shape[:, 0] = [shapes.SHAPES.index(CLASSES[v][1]) for v in labels]
    return shapes.render_tensor(s, res)


# --- measuring ------------------------------------------------------------------------------


def guidance_sweep(model, diffusion, labels, guidance: str, scales, classifier=None, seed=4):
    """{scale: `evaluate` of samples of `labels` at that guidance scale}: notebook 05's fidelity
    and diversity curve (DDIM, 25 steps, eta = 1, the same noise at every scale)."""
    rows = {}
    for s in scales:
        x = sample(
            model,
            diffusion,
            labels,
            guidance=guidance,
            scale=s,
            sampler="ddim",
            steps=25,
            eta=1.0,
            classifier=classifier,
            seed=seed,
        )
        rows[s] = label_table(x, labels)
    return rows


# --- the recipes -------------------------------------------------------------------------------


def _sampler(label="red circle", **options):
    """draw(n, seed) for `sample diffusion`; options: guidance, scale, sampler, steps, eta."""
    label = label_of(label)  # a bad label is named before any model is loaded or trained
    model, diffusion = DIFFUSION.load()  # a seed seeds the sampling, never the model
    if options.get("guidance") == "classifier":
        options["classifier"] = NOISY_CLASSIFIER.load()
    return lambda n, seed: sample(model, diffusion, [label] * n, seed=seed, **options)


def _evaluation(seed: int, n_per_class: int = 8, scale: float = 3.0) -> dict:
    """The judge and diversity of the conditional model alone and with CFG at `scale`."""
    model, diffusion = DIFFUSION.load()
    labels = balanced_labels(n_per_class)
    rows = {}
    for name, guidance, w in [("conditional", "none", 1.0), ("cfg", "cfg", scale)]:
        x = sample(model, diffusion, labels, guidance=guidance, scale=w, steps=25, seed=seed)
        rows[name] = label_table(x, labels)
    return rows


DIFFUSION = recipe.Recipe(
    "diffusion",
    config=model_config,
    build=build_model,
    train=train_model,
    ready=with_process,
    sampler=_sampler,
    evaluate=_evaluation,
    options={
        "sample": {
            "--label": dict(default="red circle", help='e.g. "red circle"'),
            "--guidance": dict(default="cfg", choices=GUIDANCE),
            "--scale": dict(type=float, default=3.0),
            "--sampler": dict(default="ddim", choices=SAMPLERS),
            "--steps": dict(type=int, default=25),
            "--eta": dict(type=float, default=0.0),
        },
        "evaluate": {
            "--n-per-class": dict(type=int, default=8),
            "--scale": dict(type=float, default=3.0),
        },
    },
    prefix=lambda label="red circle", **_: label.replace(" ", "_"),
)
NOISY_CLASSIFIER = recipe.Recipe(
    "noisy-classifier", classifier_config, build_classifier, train_classifier
)
RECIPES = (DIFFUSION, NOISY_CLASSIFIER)
