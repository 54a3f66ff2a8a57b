"""The discrete VAE of DALL-E (Ramesh et al. 2021, arXiv 2102.12092, section 2.1 and appendix A).

The encoder gives, at each cell of an 8x8 grid, logits over K codes: a categorical q(z | x).
Sampling a code has no gradient, so training uses the Gumbel-softmax relaxation (Jang et al.
2016; Maddison et al. 2016): y = softmax((logits + g) / tau) with g ~ Gumbel(0, 1), a soft
one-hot that becomes a hard one as the temperature tau goes to 0. DALL-E anneals tau from 1 to
1/16. The decoder reads sum_k y_k e_k, a mixture of codebook vectors (its first layer is a 1x1
conv from K channels; its weight is the codebook). The loss is the negative evidence lower bound
(eq. 1): reconstruction + beta * KL(q(z | x) || uniform prior), with beta warmed up from 0
(DALL-E: to 6.6 over the first 5,000 updates). At inference the tokens are hard: argmax.

The paper's pixel likelihood is the logit-Laplace distribution (appendix A.3): pixels are squeezed
into [eps, 1 - eps] (eps = 0.1) and modelled by a Laplace distribution in logit space, whose
support is (0, 1) like the pixels'. `logit_laplace_nll` implements it (recon="laplace").

Serves notebook 01.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from t2i.ch01_dvae import autoencoder
from t2i.core import recipe, runtime, train

EPS = 0.1  # the logit-Laplace squeeze of DALL-E


def default_config(**overrides) -> dict:
    """The dVAE of the active profile; overrides go to the section that holds each key."""
    size = runtime.pick(
        smoke=dict(K=32, dim=16, width=16),
        cpu=dict(K=128, dim=32, width=64),
        gpu=dict(K=512, dim=64, width=128),
    )
    cfg = dict(
        seed=0,
        model=size | dict(recon="mse"),  # recon: "mse", or "laplace" (the paper's likelihood)
        train=runtime.pick(
            smoke=dict(steps=30, batch=16, warmup=5),
            cpu=dict(steps=450, batch=64, warmup=100),
            gpu=dict(steps=20_000, batch=128, warmup=500),
        )
        | dict(
            lr=2e-3,
            kl_weight=5e-3,  # beta
            kl_warmup=0.2,  # fraction of the run over which beta grows from 0
            tau_start=1.0,
            tau_end=1
            / 16,  # annealed geometrically over the run; tau_end = tau_start: no annealing
        ),
        data=dict(
            n_train=runtime.pick(smoke=512, cpu=20_000, gpu=100_000), res=runtime.image_size()
        ),
    )
    return recipe.sections(cfg, **overrides)


# --- the pieces, as functions ---------------------------------------------------------------


def gumbel_softmax(logits, tau: float, dim: int = 1, hard: bool = False, generator=None):
    """Relaxed one-hot sample softmax((logits + g) / tau), g ~ Gumbel(0, 1). hard=True returns
    the argmax one-hot in the forward pass with the soft sample's gradient (straight-through)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device)
    g = -torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))
    y = F.softmax((logits.float() + g) / tau, dim=dim)
    if not hard:
        return y
    onehot = F.one_hot(y.argmax(dim), y.shape[dim]).movedim(-1, dim).float()
    return y + (onehot - y).detach()


def kl_to_uniform(logits, dim: int = 1):
    """KL(q || uniform over K) = sum_k q_k log(q_k K) per position, averaged over positions."""
    logq = F.log_softmax(logits.float(), dim=dim)
    K = logits.shape[dim]
    return (logq.exp() * (logq + math.log(K))).sum(dim).mean()


def temperature(step: int, steps: int, start: float = 1.0, end: float = 1 / 16) -> float:
    """Geometric annealing from `start` at step 0 to `end` at the last step."""
    return start * (end / start) ** (step / max(1, steps - 1))


def map_pixels(x01, eps: float = EPS):
    """Squeeze pixels in [0, 1] into [eps, 1 - eps] (DALL-E's map_pixels)."""
    return (1 - 2 * eps) * x01 + eps


def unmap_pixels(x, eps: float = EPS):
    """The inverse of `map_pixels`, clamped to [0, 1]."""
    return ((x - eps) / (1 - 2 * eps)).clamp(0, 1)


def logit_laplace_nll(x01, mu, log_b, eps: float = EPS):
    """Mean negative log-likelihood of pixels x in [0, 1] under the logit-Laplace distribution:
    f(x | mu, b) = exp(-|logit(x) - mu| / b) / (2 b x (1 - x)), on the squeezed pixels."""
    x = map_pixels(x01, eps)
    return (torch.log(2 * x * (1 - x)) + log_b + (torch.logit(x) - mu).abs() / log_b.exp()).mean()


# --- the model ------------------------------------------------------------------------------


class DiscreteVAE(nn.Module):
    """Encoder -> K logits per cell -> (relaxed) one-hot -> codebook mixture -> decoder."""

    def __init__(self, K=128, dim=32, width=64, recon="mse", steps=1):
        super().__init__()
        self.K, self.recon = K, recon
        self.encoder = autoencoder.Encoder(K, width)
        self.embed = nn.Embedding(K, dim)  # the codebook: row k is the vector of code k
        self.decoder = autoencoder.Decoder(dim, width, out_ch=6 if recon == "laplace" else 3)
        self.register_buffer("usage_log", torch.zeros(steps))  # codes used per training batch

    @property
    def codebook(self):
        return self.embed.weight

    def encode(self, x):
        """Images in [-1, 1] -> logits (B, K, h, w)."""
        return self.encoder(x)

    def tokens(self, x):
        """Hard tokens (B, h, w): the argmax of the logits (on the model's device)."""
        return self.encode(x.to(self.codebook.device)).argmax(1)

    def mix(self, y):
        """Soft (or one-hot) codes (B, K, h, w) -> code vectors (B, dim, h, w)."""
        return torch.einsum("bkhw,kd->bdhw", y.to(self.codebook.dtype), self.codebook)

    def decode(self, z):
        """Code vectors (B, dim, h, w) -> images in [-1, 1]."""
        out = self.decoder(z).float()
        # The median of the logit-Laplace, sigmoid(mu) (a monotone map of the Laplace's median mu),
        # unsqueezed; its mean is not sigmoid(mu) (it depends on b too).
        if self.recon == "laplace":
            return unmap_pixels(torch.sigmoid(out[:, :3])) * 2 - 1
        return out.clamp(-1, 1)

    def decode_tokens(self, idx):
        """Token grids (B, h, w) -> images."""
        e = self.embed(idx.to(self.codebook.device))
        return self.decode(rearrange(e, "b h w d -> b d h w"))

    def forward(self, x, tau: float | None = None):
        """Reconstruction: with soft Gumbel-softmax codes at temperature tau, or hard tokens."""
        if tau is None:
            return self.decode_tokens(self.tokens(x))
        return self.decode(self.mix(gumbel_softmax(self.encode(x), tau)))

    def loss(self, x, step: int, steps: int, cfg: dict):
        """Negative ELB: reconstruction + beta(step) * KL to the uniform prior (cfg: the train
        section of the config)."""
        tau = temperature(step, steps, cfg["tau_start"], cfg["tau_end"])
        beta = cfg["kl_weight"] * min(1.0, step / max(1, cfg["kl_warmup"] * steps))
        logits = self.encode(x)
        out = self.decoder(self.mix(gumbel_softmax(logits, tau))).float()
        if self.recon == "laplace":
            rec = logit_laplace_nll((x + 1) / 2, out[:, :3], out[:, 3:].clamp(-5, 5))
        else:
            rec = F.mse_loss(out, x)
        kl = kl_to_uniform(logits)
        used = logits.argmax(1).unique().numel()
        if self.training and step < len(self.usage_log):
            self.usage_log[step] = used
        logs = {"rec": rec.item(), "kl": kl.item(), "tau": tau, "codes_in_batch": used}
        return rec + beta * kl, logs


def build(cfg: dict) -> DiscreteVAE:
    return DiscreteVAE(**cfg["model"], steps=cfg["train"]["steps"])


def train_model(model: DiscreteVAE, cfg: dict, path, live_plot: bool = True, desc: str = "dVAE"):
    batch_fn = autoencoder.image_batches(cfg)
    model.to(memory_format=torch.channels_last)
    dev, schedule = runtime.device(), cfg["train"]
    return train.fit_config(
        model,
        lambda m, b: m.loss(
            b[0].to(dev, memory_format=torch.channels_last), b[1], schedule["steps"], schedule
        ),
        batch_fn,
        path=path,
        cfg=cfg,
        desc=desc,
        live_plot=live_plot,
    )


# --- the recipe --------------------------------------------------------------------------------

DVAE = autoencoder.recipe("dvae", "dVAE", default_config, build, train_model)
RECIPES = (DVAE,)
