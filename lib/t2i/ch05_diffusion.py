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

import operator

import numpy as np
import torch
import torch.nn.functional as F

from t2i.blocks.diffusion import classifier_free, classifier_grad, diffusion_of
from t2i.blocks.unet import NoisyClassifier, UNet
from t2i.core import checkpoint, recipe, runtime
from t2i.core.train import fit_config
from t2i.world import judge, shapes
from t2i.world.tokenizer import words

CLASSES = [(c, s) for c in shapes.COLOR_NAMES for s in shapes.SHAPES]
NULL = len(CLASSES)
HELD_OUT = [CLASSES.index(p) for p in shapes.HELD_OUT_PAIRS]
SEEN = [i for i in range(len(CLASSES)) if i not in HELD_OUT]
GUIDANCE = ("none", "cfg", "classifier")
SAMPLERS = ("ddim", "ddpm")


def label_of(text: str) -> int:
    """'red circle' (or 'a red circle', any case) -> class index. Any other text (two colours,
    no shape, a size the class cannot hold) raises a ValueError that names it."""
    ws = words(text)
    ws = ws[1:] if ws[:1] == ["a"] else ws
    if len(ws) != 2 or ws[0] not in shapes.COLORS or ws[1] not in shapes.SHAPES:
        raise ValueError(
            f"label {text!r} is not one colour and one shape like 'red circle' (colours: "
            f"{', '.join(shapes.COLOR_NAMES)}; shapes: {', '.join(shapes.SHAPES)})"
        )
    return CLASSES.index((ws[0], ws[1]))


def label_index(label) -> int:
    """A class index from a 'red circle' string or an integer 0 to NULL (NULL: no label)."""
    if isinstance(label, str):
        return label_of(label)
    try:
        index = operator.index(label)
    except TypeError:
        raise ValueError(f"label {label!r} is not an integer 0 to {NULL} nor a string") from None
    if not 0 <= index <= NULL:
        raise ValueError(f"label {index} is outside 0 to {NULL} ({NULL} is the null label)")
    return index


def labels_of(scenes: shapes.Scenes) -> torch.Tensor:
    """The class index of each scene's first object (single-object scenes: their class)."""
    return torch.tensor(
        [
            CLASSES.index((shapes.COLOR_NAMES[c], shapes.SHAPES[s]))
            for c, s in zip(scenes.color[:, 0], scenes.shape[:, 0])
        ]
    )


def caption_of(label: int) -> str:
    color, shape = CLASSES[label]
    return f"a {color} {shape}"


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
    ds = shapes.load_dataset(cfg["n_train"], res=cfg["res"], split="train", counts=(1,))
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

    return fit_config(
        model,
        loss_fn,
        _batches(cfg, next(model.parameters()).device),
        path=path,
        cfg=cfg,
        desc="diffusion U-Net",
        amp=amp,
        **fit_kwargs,
    )


def load(cfg: dict | None = None, retrain: bool = False):
    """(model, diffusion): from the cache, or trained now."""
    cfg = cfg or model_config()
    model = checkpoint.load_or_train("label_diffusion", cfg, build_model, train_model, retrain)
    return model, diffusion_of(cfg)


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

    return fit_config(
        model,
        loss_fn,
        _batches(cfg, next(model.parameters()).device),
        path=path,
        cfg=cfg,
        desc="noisy classifier",
        amp=amp,
        **fit_kwargs,
    )


def load_classifier(cfg: dict | None = None, retrain: bool = False) -> NoisyClassifier:
    cfg = cfg or classifier_config()
    return checkpoint.load_or_train(
        "noisy_classifier", cfg, build_classifier, train_classifier, retrain
    )


# --- sampling -----------------------------------------------------------------------------------


def sample(
    model,
    diffusion,
    labels,
    guidance: str = "cfg",
    scale: float = 3.0,
    sampler: str = "ddim",
    steps: int = 25,
    eta: float = 0.0,
    classifier=None,
    seed: int = 0,
    trace: bool = False,
):
    """Images (n, 3, res, res) in [-1, 1] for class labels (ints or 'red circle' strings).

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
    dev = next(model.parameters()).device
    y = torch.tensor([label_index(v) for v in labels], device=dev)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(y), 3, model.res, model.res, generator=gen).to(dev)
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


def balanced_labels(n_per_class: int) -> list[int]:
    """Every seen class n_per_class times (the held-out class left out)."""
    return [c for c in SEEN for _ in range(n_per_class)]


# --- measuring ------------------------------------------------------------------------------


def evaluate(images, labels) -> dict:
    """The judge on captions 'a <colour> <shape>' (colour, shape, count and 'all'), and two
    diversity numbers among the samples of one class, averaged over classes: `size_entropy`,
    the entropy in bits of the judge's small/large reading (1 for the renders' 50/50 mix, 0 when
    every sample has the same size), and `spread`, the standard deviation of the object's centre
    as a fraction of the image side (renders, uniform over the 3x3 grid: about 0.2); and
    `off_palette`, the mean `judge.off_palette` (noise left on the samples)."""
    labels = [label_index(v) for v in labels]
    table = judge.score(images, [caption_of(v) for v in labels])
    reading = judge.read(images)
    sizes, spreads = [], []
    for c in sorted(set(labels)):
        color = shapes.COLOR_NAMES.index(CLASSES[c][0])
        found = [i for i, v in enumerate(labels) if v == c and reading.present[i, color]]
        if len(found) >= 2:
            p = float(np.mean(reading.size[found, color] == shapes.SIZES.index("large")))
            sizes.append(_binary_entropy(p))
            pts = np.stack([reading.cx[found, color], reading.cy[found, color]], axis=1)
            spreads.append(float(np.sqrt(pts.var(axis=0).mean())))
    table["size_entropy"] = float(np.mean(sizes)) if sizes else 0.0
    table["spread"] = float(np.mean(spreads)) if spreads else 0.0
    table["off_palette"] = float(judge.off_palette(images).mean())
    return table


def _binary_entropy(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else float(-p * np.log2(p) - (1 - p) * np.log2(1 - p))


def guidance_sweep(model, diffusion, labels, guidance: str, scales, classifier=None, seed=4):
    """{scale: `evaluate` of samples of `labels` at that guidance scale}: notebook 05's fidelity
    and diversity curve (DDIM, 25 steps, eta = 1, the same noise at every scale)."""
    rows = {}
    for s in scales:
        x = sample(model, diffusion, labels, guidance, s, "ddim", 25, 1.0, classifier, seed=seed)
        rows[s] = evaluate(x, labels)
    return rows


# --- the recipes -------------------------------------------------------------------------------


def _sampler(label="red circle", guidance="cfg", scale=3.0, sampler="ddim", steps=25, eta=0.0):
    label = label_of(label)  # a bad label is named before any model is loaded or trained
    model, diffusion = load()  # the course's model: a seed seeds the sampling, never the model
    classifier = load_classifier() if guidance == "classifier" else None
    return lambda n, seed: sample(
        model, diffusion, [label] * n, guidance, scale, sampler, steps, eta, classifier, seed=seed
    )


def _evaluation(seed: int, n_per_class: int = 8, scale: float = 3.0) -> dict:
    """The judge and diversity of the conditional model alone and with CFG at `scale`."""
    model, diffusion = load()
    labels = balanced_labels(n_per_class)
    rows = {}
    for name, guidance, w in [("conditional", "none", 1.0), ("cfg", "cfg", scale)]:
        x = sample(model, diffusion, labels, guidance, w, steps=25, seed=seed)
        rows[name] = evaluate(x, labels)
    return rows


RECIPES = {
    "diffusion": recipe.Recipe(
        config=model_config,
        build=build_model,
        train=train_model,
        load=load,
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
    ),
    "noisy-classifier": recipe.Recipe(
        classifier_config, build_classifier, train_classifier, load_classifier
    ),
}
