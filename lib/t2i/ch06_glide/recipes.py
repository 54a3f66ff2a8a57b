"""GLIDE's four models declared: configs, builds, training, and the recipes of the command line."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from t2i import ch03_clip as clip
from t2i import ch05_diffusion as label_diffusion
from t2i.blocks.diffusion import diffusion_of, with_process
from t2i.blocks.unet import UNet
from t2i.ch06_glide.inpainting import random_masks, square_masks
from t2i.ch06_glide.models import Inpainter, Text2Im, Upsampler
from t2i.ch06_glide.noised_clip import NoisedCLIP
from t2i.ch06_glide.sampling import sample, upsample
from t2i.core import checkpoint, recipe, runtime, train
from t2i.world import grammar, judge, shapes
from t2i.world.measures import caption_table
from t2i.world.prompts import EMPTY, TOKENIZER, captioned_scenes, file_prefix


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
        label_model, _ = label_diffusion.DIFFUSION.load(cfg["train"]["init"])
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
        own = [TOKENIZER(grammar.caption(shapes.alone(s, j), cfg["seed"])) for j in range(2)]
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

    dev = runtime.device_of(model)
    batches = _batches(cfg, dev, [cfg["data"]["res"]])
    return train.fit_config(
        model, loss_fn, batches, cfg, path, "GLIDE base", amp=False, **fit_kwargs
    )


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
    dev = runtime.device_of(model)
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
        model, loss_fn, batches, cfg, path, "GLIDE upsampler", amp=False, **fit_kwargs
    )


def build_upsampler(cfg: dict) -> Upsampler:
    model = Upsampler(cfg["data"]["res"], **cfg["model"])
    model.res = cfg["data"]["out_res"]
    return model


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


def build_inpainter(cfg: dict) -> Inpainter:
    """An Inpainter that starts as the base model: its weights copied, the 4 new input channels
    starting at zero (so it begins by ignoring them, as GLIDE's fine-tuning does). The input
    channels are [x_t, masked image, mask, coordinates]."""
    base_cfg = cfg["model"]["base"]
    model = Inpainter(base_cfg["data"]["res"], **base_cfg["model"])
    base, _ = GLIDE.load(base_cfg)
    state = base.state_dict()
    w = state["unet.encoder.inp.weight"]
    new = w.new_zeros(w.shape[0], 4, *w.shape[2:])
    state["unet.encoder.inp.weight"] = torch.cat([w[:, :3], new, w[:, 3:]], 1)
    model.load_state_dict(state)
    return model


def train_inpainter(model: Inpainter, cfg: dict, path=None, **fit_kwargs):
    base, schedule = cfg["model"]["base"], cfg["train"]
    diffusion = diffusion_of(base)
    dev = runtime.device_of(model)
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

    batches = _batches({**base, "seed": cfg["seed"]}, dev, [base["data"]["res"]], objects=True)
    return train.fit_config(
        model, loss_fn, batches, cfg, path, "GLIDE inpainting", amp=False, **fit_kwargs
    )


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
    dev = runtime.device_of(model)

    def loss_fn(m, batch):
        x, tok = batch
        t = torch.randint(0, diffusion.T, (len(x),), device=x.device)
        logits = m(diffusion.q_sample(x, t), t, tok)
        same = (tok[:, None] == tok[None]).all(-1)
        acc = (logits.argmax(1) == torch.arange(len(x), device=x.device)).float().mean()
        return clip.contrastive_loss(logits, same), {"acc": acc.item()}

    batches = _batches(cfg, dev, [cfg["data"]["res"]])
    return train.fit_config(
        model, loss_fn, batches, cfg, path, "noised CLIP", amp=False, **fit_kwargs
    )


def _sampler(prompt="a red circle above a blue square", guidance="cfg", scale=3.0, steps=25,
             upsampled=False):  # fmt: skip
    model, diffusion = GLIDE.load()
    noised_clip = NOISED_CLIP.load() if guidance == "clip" else None
    upsampler = GLIDE_UPSAMPLER.load() if upsampled else None

    def draw(n, seed):
        prompts = [prompt] * n
        options = dict(scale=scale, steps=steps, seed=seed, noised_clip=noised_clip)
        x = sample(model, diffusion, prompts, guidance=guidance, **options)
        if upsampler is not None:
            x = upsample(*upsampler, x, prompts, steps=steps, seed=seed)
        return x

    return draw


def _evaluation(seed: int, n: int = 96, scale: float = 3.0) -> dict:
    """The judge on the four prompt sets of notebook 06 (one and two objects, full and short)."""
    model, diffusion = GLIDE.load()
    sets = {
        "one object, full": grammar.eval_prompts(n, 11),
        "one object, short": grammar.eval_prompts(n, 12, partial=True),
        "two objects, full": grammar.eval_prompts(n, 13, counts=(2,)),
        "two objects, short": grammar.eval_prompts(n, 14, counts=(2,), partial=True),
    }
    return {
        name: caption_table(
            sample(model, diffusion, ps, guidance="cfg", scale=scale, seed=seed), ps
        )
        for name, ps in sets.items()
    }


GLIDE = recipe.Recipe(
    "glide",
    config=base_config,
    build=build_base,
    train=train_base,
    ready=with_process,
    sampler=_sampler,
    evaluate=_evaluation,
    options={
        "sample": {
            "--prompt": dict(default="a red circle above a blue square"),
            "--guidance": dict(default="cfg", choices=["none", "cfg", "clip"]),
            "--scale": dict(type=float, default=3.0),
            "--steps": dict(type=int, default=25),
            "--upsample": dict(action="store_true", dest="upsampled", help="2x with the upsampler"),
        },
        "evaluate": {
            "--n": dict(type=int, default=96, help="prompts per set"),
            "--scale": dict(type=float, default=3.0),
        },
    },
    prefix=file_prefix,
)


GLIDE_UPSAMPLER = recipe.Recipe(
    "glide-upsampler", upsampler_config, build_upsampler, train_upsampler, with_process
)


GLIDE_INPAINT = recipe.Recipe(
    "glide-inpaint",
    inpainter_config,
    build_inpainter,
    train_inpainter,
    ready=lambda model, cfg: with_process(model, cfg["model"]["base"]),  # the base's process
)


NOISED_CLIP = recipe.Recipe("noised-clip", noised_clip_config, build_noised_clip, train_noised_clip)


RECIPES = (GLIDE, GLIDE_UPSAMPLER, GLIDE_INPAINT, NOISED_CLIP)
