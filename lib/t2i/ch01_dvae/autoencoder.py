"""Images as tokens (notebooks 01, 02): the conv encoder/decoder and the measures shared by the
dVAE and VQ-VAE.

Both tokenizers squeeze a 32x32 image into an 8x8 grid of discrete codes (DALL-E: 256x256 into
32x32 codes out of 8,192, a factor 8 per side; ours: a factor 4). `Encoder` maps pixels to a
(B, C, 8, 8) grid, `Decoder` maps a (B, D, 8, 8) grid of code vectors back to pixels. The
helpers measure a tokenizer: PSNR, codebook usage and perplexity, bits per image.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn as nn

from t2i.core import runtime
from t2i.core.recipe import Recipe
from t2i.world import datasets, judge
from t2i.world.measures import psnr


class ResidualUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), the residual unit of the DALL-E dVAE's encoder/decoder
    (no timestep input: the diffusion U-Net's block is `t2i.blocks.layers.ResBlock`)."""

    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1)
        )

    def forward(self, x):
        return x + self.net(x)


class Encoder(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, out_ch, H/4, W/4): two stride-2 convs, then residual units."""

    def __init__(self, out_ch: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            ResidualUnit(2 * width),
            ResidualUnit(2 * width),
            nn.ReLU(),
            nn.Conv2d(2 * width, out_ch, 1),
        )

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """(B, in_ch, h, w) -> (B, out_ch, 4h, 4w): the encoder's mirror, with transposed convs."""

    def __init__(self, in_ch: int, width: int = 64, out_ch: int = 3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, 2 * width, 3, padding=1),
            ResidualUnit(2 * width),
            ResidualUnit(2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, out_ch, 4, stride=2, padding=1),
        )

    def forward(self, z):
        return self.net(z)


# --- data -----------------------------------------------------------------------------------


def image_batches(cfg: dict):
    """A batch_fn for `t2i.core.train.fit`: random batches (as (x, step)) of the training renders a
    tokenizer's config names (n_train and res of its data section, batch of its train section)."""
    data, batch_size = cfg["data"], cfg["train"]["batch"]
    x = datasets.load_dataset(data["n_train"], res=data["res"], seed=cfg["seed"]).tensor()

    def batch_fn(step, gen):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        return x[idx], step

    return batch_fn


def held_out_renders(n: int = 1000, seed: int = 777) -> datasets.ShapesDataset:
    """Fresh renders never seen in training (the test split, another seed), at the profile's
    image size."""
    return datasets.make_dataset(n, res=runtime.image_size(), seed=seed, split="test")


# --- measures -------------------------------------------------------------------------------


def edge_strength(x: torch.Tensor) -> torch.Tensor:
    """(n, res-1, res-1): for each pixel from row 1 and column 1 on, the mean absolute colour
    step from its left neighbour plus the one from its upper neighbour: where the outlines are."""
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(1)[..., 1:, :]
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(1)[..., :, 1:]
    return gx + gy


def error_on_edges(recon: torch.Tensor, x: torch.Tensor, threshold: float = 0.1):
    """(share of pixels on an edge of x, share of the reconstruction's absolute error there):
    the dVAE's blur of fine detail shows as the second far above the first."""
    on_edge = edge_strength(x) > threshold
    err = (recon - x).abs().mean(1)[:, 1:, 1:]
    return on_edge.float().mean().item(), ((err * on_edge).sum() / err.sum()).item()


def code_usage(idx: torch.Tensor, K: int) -> dict[str, float]:
    """Counts of each code over a set of token grids, the fraction of codes in use, and the
    perplexity exp(H) of the codes' frequencies (K if all are used equally, 1 if one is)."""
    counts = torch.bincount(idx.flatten(), minlength=K).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {
        "counts": counts,
        "used": int((counts > 0).sum()),
        "used_frac": float((counts > 0).float().mean()),
        "perplexity": math.exp(entropy),
    }


def compression(res: int, grid: int, K: int) -> dict[str, float]:
    """Bits of an 8-bit RGB image vs bits of its token grid, and their ratio."""
    pixel_bits = res * res * 3 * 8
    token_bits = grid * grid * math.log2(K)
    return {"pixel bits": pixel_bits, "token bits": token_bits, "ratio": pixel_bits / token_bits}


@torch.no_grad()
def evaluate(model, data: datasets.ShapesDataset, batch: int = 500) -> dict[str, float]:
    """PSNR of a tokenizer's hard-token reconstructions and its codebook usage on `data`."""
    x = data.tensor()
    dev = runtime.device_of(model)
    recs, toks = [], []
    for i in range(0, len(x), batch):
        idx = model.tokens(x[i : i + batch].to(dev))
        toks.append(idx.cpu())
        recs.append(model.decode_tokens(idx).cpu())
    rec, idx = torch.cat(recs), torch.cat(toks)
    usage = code_usage(idx, model.K)
    return {
        "psnr": psnr(rec, x),
        "used": usage["used"],
        "used_frac": usage["used_frac"],
        "perplexity": usage["perplexity"],
        "reconstructions": rec,
        "tokens": idx,
    }


# --- the recipe of both tokenizers (the dVAE and the VQ-VAE) -------------------------------


def summary(model, name: str) -> str:
    """One line: PSNR and codebook use of a tokenizer on held-out renders."""
    m = evaluate(model, held_out_renders())
    return (
        f"{name}: PSNR {m['psnr']:.2f} dB, {m['used']}/{model.K} codes used, "
        f"perplexity {m['perplexity']:.1f}"
    )


def reconstructions(model):
    """A recipe's sampler for a tokenizer: draw(n, seed) reconstructs n fresh held-out renders
    through their tokens."""

    def draw(n: int, seed: int):
        x = held_out_renders(n, seed=seed + 777).tensor()
        return model.decode_tokens(model.tokens(x))

    return draw


def evaluation(model, seed: int) -> dict:
    """{"held-out renders": row}: PSNR, codebook use and the judge's facts on reconstructions."""
    data = held_out_renders(seed=seed + 777)
    m = evaluate(model, data)
    row = {"psnr": m["psnr"], "codes used": m["used_frac"], "perplexity": m["perplexity"]}
    facts = judge.score(m["reconstructions"], data.captions)
    return {"held-out renders": row | {f"judge {k}": v for k, v in facts.items()}}


def frozen(model, cfg: dict):
    """A trained tokenizer as later chapters use it: no gradients to its weights."""
    return model.requires_grad_(False)


def recipe(name: str, title: str, config, build, train) -> Recipe:
    """A tokenizer's recipe (`core.recipe`), loaded frozen: `sample` writes reconstructions of
    held-out renders, `evaluate` gives their PSNR, codebook use and the judge's facts."""
    r = Recipe(name, config, build, train, ready=frozen, describe=lambda m: summary(m, title))
    return replace(
        r,
        sampler=lambda: reconstructions(r.load()),
        evaluate=lambda seed: evaluation(r.load(), seed),
    )
