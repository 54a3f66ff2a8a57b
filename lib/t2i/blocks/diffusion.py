"""Gaussian diffusion: the forward process, its posterior, the training loss and the samplers.

Papers: DDPM (Ho et al. 2020, arXiv 2006.11239), improved DDPM (Nichol & Dhariwal 2021,
2102.09672: the cosine schedule), DDIM (Song et al. 2020, 2010.02502), guided diffusion / ADM
(Dhariwal & Nichol 2021, 2105.05233: classifier guidance) and classifier-free guidance (Ho &
Salimans 2022, 2207.12598). Equation numbers below are those papers'.

Serves notebook 05 (class labels), 06 (GLIDE: captions) and 07 (unCLIP: the decoder, and the
diffusion prior, which denoises vectors instead of images).

Data x live in [-1, 1] (images) or anywhere (embeddings: build with clip_x0=False), with any
shape (B, ...). Timesteps are integers 0..T-1 (t = 0 is the first noising step). A model is any
callable `model(x_t, t, **cond)` returning its prediction: the noise eps (DDPM), the clean x0, or
v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), as set by `prediction`; `cond` is
whatever conditions it (labels, caption tokens, embeddings, a low-resolution image). Guidance
plugs in as a wrapper (`classifier_free`) or as a `cond_fn(x_t, t)` returning
grad log p(y | x_t) (`gradient_guidance`: a noisy classifier's, or a noised CLIP's score).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from t2i.core import runtime


def linear_betas(T: int) -> np.ndarray:
    """DDPM's schedule: beta from 1e-4 to 0.02 over 1000 steps (rescaled for other T)."""
    scale = 1000 / T
    return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)


def cosine_abar(t, T: int, s: float = 0.008):
    """Improved DDPM eq. 17 (unnormalized): f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
    return np.cos((np.asarray(t, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = 1 - abar(t) / abar(t-1), clipped at 0.999 so the last step stays finite."""
    f = cosine_abar(np.arange(T + 1), T, s)
    return np.minimum(1 - f[1:] / f[:-1], max_beta)


class GaussianDiffusion:
    """A noise schedule and everything computed from it (float64 tables, float32 outputs)."""

    def __init__(
        self,
        T: int = 1000,
        schedule: str = "cosine",
        prediction: str = "eps",
        clip_x0: bool = True,
    ):
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', not {prediction!r}")
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', not {schedule!r}")
        self.T, self.schedule, self.prediction = T, schedule, prediction
        self.clip_x0 = clip_x0  # clamp predicted x0 to [-1, 1] while sampling (images only)
        betas = {"linear": linear_betas, "cosine": cosine_betas}[schedule](T)
        abar = np.cumprod(1 - betas)
        abar_prev = np.append(1.0, abar[:-1])
        self.betas, self.abar, self.abar_prev = betas, abar, abar_prev
        # The posterior q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7).
        self.post_var = betas * (1 - abar_prev) / (1 - abar)
        self.post_logvar = np.log(np.append(self.post_var[1], self.post_var[1:]))
        self.post_c0 = betas * np.sqrt(abar_prev) / (1 - abar)
        self.post_ct = (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar)

    # --- tables -------------------------------------------------------------------------------

    @staticmethod
    def _at(table: np.ndarray, t, x: torch.Tensor) -> torch.Tensor:
        """table[t] as a float tensor shaped to broadcast against x (B, ...)."""
        idx = torch.as_tensor(t, device="cpu").long().reshape(-1)
        v = torch.from_numpy(table)[idx].float().to(x.device)
        return v.view(-1, *([1] * (x.dim() - 1)))

    def log_snr(self, t) -> np.ndarray:
        """log(abar / (1 - abar)): how much signal is left at step t."""
        a = self.abar[np.asarray(t)]
        return np.log(a / (1 - a))

    # --- forward process ----------------------------------------------------------------------

    def q_sample(self, x0, t, noise=None):
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM eq. 4)."""
        noise = torch.randn_like(x0) if noise is None else noise
        return (
            self._at(np.sqrt(self.abar), t, x0) * x0
            + self._at(np.sqrt(1 - self.abar), t, x0) * noise
        )

    def q_posterior(self, x0, xt, t):
        """Mean and variance of q(x_{t-1} | x_t, x0) (DDPM eq. 7)."""
        mean = self._at(self.post_c0, t, xt) * x0 + self._at(self.post_ct, t, xt) * xt
        return mean, self._at(self.post_var, t, xt)

    # --- what the model predicts --------------------------------------------------------------

    def target(self, x0, noise, t):
        """The regression target for the chosen parameterization."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return (
            self._at(np.sqrt(self.abar), t, x0) * noise
            - self._at(np.sqrt(1 - self.abar), t, x0) * x0
        )

    def eps_x0(self, out, xt, t, clip: bool | None = None):
        """(eps, x0) from the model's output; with clip (default: the process's clip_x0), x0 is
        clamped to [-1, 1] and eps is recomputed from it so the two stay consistent."""
        clip = self.clip_x0 if clip is None else clip
        a, s = self._at(np.sqrt(self.abar), t, xt), self._at(np.sqrt(1 - self.abar), t, xt)
        out = out.float()
        if self.prediction == "eps":
            eps, x0 = out, (xt - s * out) / a
        elif self.prediction == "x0":
            x0, eps = out, (xt - a * out) / s
        else:  # v: x0 = a x_t - s v, eps = s x_t + a v
            x0, eps = a * xt - s * out, s * xt + a * out
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (xt - a * x0) / s
        return eps, x0

    def loss(self, model, x0, t=None, noise=None, min_snr: float | None = None, where=None, **cond):
        """Mean squared error against the target (DDPM eq. 14, L_simple), averaged over every
        non-batch dimension (pixels, or an embedding's entries), or over the entries where
        `where` (broadcast to x0) is 1 only. `cond` goes to the model.

        With min_snr = gamma, each timestep's loss is weighted as if it were an x0-loss weighted
        by min(SNR, gamma) (Hang et al. 2023, "Min-SNR weighting", eq. 6-8): the eps-loss by
        min(SNR, gamma) / SNR, the x0-loss by min(SNR, gamma), the v-loss by
        min(SNR, gamma) / (SNR + 1). It stops the easy low-noise steps from dominating."""
        B = x0.shape[0]
        t = torch.randint(0, self.T, (B,), device=x0.device) if t is None else t
        noise = torch.randn_like(x0) if noise is None else noise
        out = model(self.q_sample(x0, t, noise), t, **cond)
        err = F.mse_loss(out.float(), self.target(x0, noise, t), reduction="none")
        if where is None:
            per = err.flatten(1).mean(1)
        else:
            where = where.expand_as(err)
            per = (err * where).flatten(1).sum(1) / where.flatten(1).sum(1).clamp(min=1)
        if min_snr is not None:
            per = per * self.min_snr_weight(t, min_snr).to(x0.device)
        return per.mean()

    def min_snr_weight(self, t, gamma: float) -> torch.Tensor:
        """The per-timestep loss weight of Min-SNR-gamma for this parameterization."""
        snr = torch.from_numpy(self.abar / (1 - self.abar))[torch.as_tensor(t).cpu()].float()
        base = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[self.prediction]
        return snr.clamp(max=gamma) / base

    # --- DDPM ancestral sampling --------------------------------------------------------------

    def p_mean_var(self, model, xt, t, cond_fn=None, clip=None):
        """p(x_{t-1} | x_t): the posterior at the predicted x0, with the posterior variance.
        cond_fn shifts the mean by var * grad log p(y | x_t) (ADM, algorithm 1)."""
        eps, x0 = self.eps_x0(model(xt, t), xt, t, clip)
        mean, var = self.q_posterior(x0, xt, t)
        if cond_fn is not None:
            mean = mean + var * cond_fn(xt, t).float()
        return mean, var, x0

    @torch.no_grad()
    def ddpm_sample(self, model, x, cond_fn=None, generator=None, trace=False):
        """Ancestral sampling through all T steps from noise x (DDPM algorithm 2): images on the
        CPU, as every sampler of the course returns them. With trace, also the lists of x_t and
        predicted x0 along the way."""
        xs, x0s = [], []
        for i in reversed(range(self.T)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            mean, var, x0 = self.p_mean_var(model, x, t, cond_fn)
            z = _randn(x, generator) if i > 0 else torch.zeros_like(x)
            x = mean + var.sqrt() * z
            if trace:
                xs.append(x.cpu()), x0s.append(x0.cpu())
        return (x.cpu(), xs, x0s) if trace else x.cpu()

    # --- DDIM -----------------------------------------------------------------------------------

    def timesteps(self, steps: int) -> list[int]:
        """An evenly spaced subsequence of `steps` timesteps, last first (DDIM sec. 4.2). More
        steps than T are capped at T, with a warning."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, not {steps}")
        if steps > self.T:
            runtime.warn(
                f"{steps} sampling steps asked for, but the process has T = {self.T}: capped at "
                f"{self.T}"
            )
            steps = self.T
        return sorted({int(round(v)) for v in np.linspace(0, self.T - 1, steps)}, reverse=True)

    def ddim_step(self, model, x, t: int, t_prev: int, eta=0.0, cond_fn=None, generator=None):
        """x_t -> x_{t_prev} (DDIM eq. 12); t_prev = -1 means abar = 1 (the clean image).
        eta = 0 is deterministic, eta = 1 matches DDPM's variance. cond_fn shifts the score:
        eps <- eps - sqrt(1 - abar) grad log p(y | x_t) (ADM eq. 14)."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps, x0 = self.eps_x0(model(x, tt), x, tt)
        if cond_fn is not None:
            eps = eps - math.sqrt(1 - self.abar[t]) * cond_fn(x, tt).float()
            x0 = (x - math.sqrt(1 - self.abar[t]) * eps) / math.sqrt(self.abar[t])
            if self.clip_x0:
                x0 = x0.clamp(-1, 1)
                eps = (x - math.sqrt(self.abar[t]) * x0) / math.sqrt(1 - self.abar[t])
        a_t, a_prev = self.abar[t], (self.abar[t_prev] if t_prev >= 0 else 1.0)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
        if sigma > 0:
            x = x + sigma * _randn(x, generator)
        return x, x0

    @torch.no_grad()
    def ddim_sample(
        self,
        model,
        x,
        steps: int = 50,
        eta: float = 0.0,
        cond_fn=None,
        generator=None,
        trace=False,
    ):
        """DDIM sampling from noise x along `steps` evenly spaced timesteps: images on the CPU."""
        ts = self.timesteps(steps)
        xs, x0s = [], []
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            x, x0 = self.ddim_step(model, x, t, t_prev, eta, cond_fn, generator)
            if trace:
                xs.append(x.cpu()), x0s.append(x0.cpu())
        return (x.cpu(), xs, x0s) if trace else x.cpu()

    @torch.no_grad()
    def ddim_invert(self, model, x0, steps: int = 50, refine: int = 0):
        """Run DDIM (eta = 0) backwards: a real image x0 -> the noise x_T that DDIM sampling maps
        back to it (DDIM sec. 4.3, the ODE run forward); decode with `ddim_sample(eta=0)` and the
        same steps. Each step moves along eps predicted at the current, less noisy point, while
        the sampler's step back will read eps at the point reached. With refine = k, eps is
        predicted again at the point reached and the step redone, k times (a fixed-point
        iteration, Pan et al. 2023, arXiv 2305.08850); it need not converge where the model is
        rough. No x0 clipping: inversion must be exact."""
        ts = self.timesteps(steps)[::-1]
        x = x0
        for t_prev, t in zip([-1] + ts[:-1], ts):
            a_prev, a_t = (self.abar[t_prev] if t_prev >= 0 else 1.0), self.abar[t]
            # The clean image is read as t = 0.
            tq = torch.full((x.shape[0],), max(t_prev, 0), device=x.device, dtype=torch.long)
            x_next = _move(x, self.eps_x0(model(x, tq), x, tq, clip=False)[0], a_prev, a_t)
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            for _ in range(refine):
                eps = self.eps_x0(model(x_next, tt), x_next, tt, clip=False)[0]
                x_next = _move(x, eps, a_prev, a_t)
            x = x_next
        return x


def _move(x, eps, a_from: float, a_to: float):
    """The deterministic DDIM move along eps from noise level abar = a_from to a_to."""
    x0 = (x - math.sqrt(1 - a_from) * eps) / math.sqrt(a_from)
    return math.sqrt(a_to) * x0 + math.sqrt(1 - a_to) * eps


# --- guidance -----------------------------------------------------------------------------------


def seeded_noise(shape, gen: torch.Generator, device) -> torch.Tensor:
    """N(0, I) noise of `shape` drawn by a CPU generator, then moved to `device`: a seed gives the
    same x_T, and so the same samples, on a CPU and on a GPU. Every sampler starts from it."""
    return torch.randn(shape, generator=gen).to(device)


def classifier_free(model, scale: float, cond: dict, uncond: dict):
    """Classifier-free guidance (Ho & Salimans eq. 6; GLIDE eq. 4): out = u + scale * (c - u),
    with c = model(x, t, **cond) and u = model(x, t, **uncond). The two dicts name the same
    keyword arguments: a label and the null label (05), caption tokens and the empty caption
    (06), embeddings and zeros (07); an input both share (a low-resolution image) goes in both.
    scale = 1 is the plain conditional model; the mix is linear, so it is the same in eps, x0 or
    v. One batched call computes both; at scale 1 or 0 only the one that counts is computed."""
    if set(cond) != set(uncond):
        raise ValueError(f"cond and uncond name different inputs: {set(cond)} vs {set(uncond)}")
    if scale in (0, 1):
        only = cond if scale == 1 else uncond
        return lambda x, t: model(x, t, **only).float()

    def guided(x, t):
        both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
        c, u = model(torch.cat([x, x]), torch.cat([t, t]), **both).float().chunk(2)
        return u + scale * (c - u)

    return guided


def gradient_guidance(log_p, scale: float):
    """A cond_fn(x_t, t) = scale * grad_x log_p(x_t, t), for any differentiable score of how
    well x_t fits the condition: a noisy classifier's log-probability (ADM sec. 4) or a noised
    CLIP's image-text similarity (GLIDE sec. 3.3). log_p returns one value per sample. At
    scale 0 there is nothing to add: None, and the sampler skips the gradient."""
    if scale == 0:
        return None

    def cond_fn(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return scale * torch.autograd.grad(log_p(x, t).float().sum(), x)[0]

    return cond_fn


def classifier_grad(classifier, y, scale: float):
    """cond_fn for classifier guidance: scale * grad_x log p(y | x_t, t) of a noise-aware
    classifier (ADM sec. 4)."""

    def log_p(x, t):
        return F.log_softmax(classifier(x, t).float(), dim=-1)[torch.arange(len(y)), y]

    return gradient_guidance(log_p, scale)


def _randn(x, generator):
    return torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)


def diffusion_of(cfg: dict) -> GaussianDiffusion:
    """The diffusion process a recipe's config trains its model for: its "diffusion" section
    (`t2i.core.recipe`)."""
    return GaussianDiffusion(**cfg["diffusion"])


def with_process(model, cfg: dict):
    """(model, the diffusion process of its config): what a diffusion recipe's `load` gives."""
    return model, diffusion_of(cfg)
