"""Gaussian diffusion: the forward process, its posterior, the training loss and the samplers.

Papers: DDPM (Ho et al. 2020, arXiv 2006.11239), improved DDPM (Nichol & Dhariwal 2021,
2102.09672: the cosine schedule), DDIM (Song et al. 2020, 2010.02502), guided diffusion / ADM
(Dhariwal & Nichol 2021, 2105.05233: classifier guidance) and classifier-free guidance (Ho &
Salimans 2022, 2207.12598). Equation numbers below are those papers'.

Images live in [-1, 1]. Timesteps are integers 0..T-1 (t = 0 is the first noising step).
A model is any callable `model(x_t, t)` returning its prediction: the noise eps (DDPM), the
clean image x0, or v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), as set by
`prediction`. Guidance plugs in as wrappers (`cfg`) or as a `cond_fn(x_t, t)` returning
grad log p(y | x_t) (classifier guidance).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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

    def __init__(self, T: int = 1000, schedule: str = "cosine", prediction: str = "eps"):
        assert prediction in ("eps", "x0", "v")
        self.T, self.schedule, self.prediction = T, schedule, prediction
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
        """table[t] as a float tensor shaped to broadcast against x (B, C, H, W)."""
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

    def eps_x0(self, out, xt, t, clip: bool = True):
        """(eps, x0) from the model's output; with clip, x0 is clamped to [-1, 1] and eps is
        recomputed from it so the two stay consistent."""
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

    def loss(self, model, x0, t=None, noise=None, min_snr: float | None = None):
        """Mean squared error against the target (DDPM eq. 14, L_simple). With min_snr = gamma,
        each timestep's loss is weighted so that, in eps units, it is min(SNR, gamma) (Hang et
        al. 2023, "Min-SNR weighting"), which stops the easy low-noise steps from dominating."""
        B = x0.shape[0]
        t = torch.randint(0, self.T, (B,), device=x0.device) if t is None else t
        noise = torch.randn_like(x0) if noise is None else noise
        out = model(self.q_sample(x0, t, noise), t)
        per = F.mse_loss(out.float(), self.target(x0, noise, t), reduction="none").mean((1, 2, 3))
        if min_snr is not None:
            snr = torch.from_numpy(self.abar / (1 - self.abar))[t.cpu()].float().to(x0.device)
            base = {"eps": torch.ones_like(snr), "x0": snr, "v": snr + 1}[self.prediction]
            per = per * snr.clamp(max=min_snr) / base
        return per.mean()

    # --- DDPM ancestral sampling --------------------------------------------------------------

    def p_mean_var(self, model, xt, t, cond_fn=None, clip=True):
        """p(x_{t-1} | x_t): the posterior at the predicted x0, with the posterior variance.
        cond_fn shifts the mean by var * grad log p(y | x_t) (ADM, algorithm 1)."""
        eps, x0 = self.eps_x0(model(xt, t), xt, t, clip)
        mean, var = self.q_posterior(x0, xt, t)
        if cond_fn is not None:
            mean = mean + var * cond_fn(xt, t).float()
        return mean, var, x0

    @torch.no_grad()
    def ddpm_sample(self, model, x, cond_fn=None, generator=None, trace=False):
        """Ancestral sampling through all T steps from noise x (DDPM algorithm 2). With trace,
        also returns the lists of x_t and predicted x0 along the way."""
        xs, x0s = [], []
        for i in reversed(range(self.T)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            mean, var, x0 = self.p_mean_var(model, x, t, cond_fn)
            z = _randn(x, generator) if i > 0 else torch.zeros_like(x)
            x = mean + var.sqrt() * z
            if trace:
                xs.append(x.cpu()), x0s.append(x0.cpu())
        return (x, xs, x0s) if trace else x

    # --- DDIM -----------------------------------------------------------------------------------

    def timesteps(self, steps: int) -> list[int]:
        """An evenly spaced subsequence of `steps` timesteps, last first (DDIM sec. 4.2)."""
        return sorted({int(round(v)) for v in np.linspace(0, self.T - 1, steps)}, reverse=True)

    def ddim_step(self, model, x, t: int, t_prev: int, eta=0.0, cond_fn=None, generator=None):
        """x_t -> x_{t_prev} (DDIM eq. 12); t_prev = -1 means abar = 1 (the clean image).
        eta = 0 is deterministic, eta = 1 matches DDPM's variance. cond_fn shifts the score:
        eps <- eps - sqrt(1 - abar) grad log p(y | x_t) (ADM eq. 14)."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if cond_fn is not None:
            eps, _ = self.eps_x0(model(x, tt), x, tt)
            eps = eps - math.sqrt(1 - self.abar[t]) * cond_fn(x, tt).float()
            x0 = ((x - math.sqrt(1 - self.abar[t]) * eps) / math.sqrt(self.abar[t])).clamp(-1, 1)
            eps = (x - math.sqrt(self.abar[t]) * x0) / math.sqrt(1 - self.abar[t])
        else:
            eps, x0 = self.eps_x0(model(x, tt), x, tt)
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
        """DDIM sampling from noise x along `steps` evenly spaced timesteps."""
        ts = self.timesteps(steps)
        xs, x0s = [], []
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            x, x0 = self.ddim_step(model, x, t, t_prev, eta, cond_fn, generator)
            if trace:
                xs.append(x.cpu()), x0s.append(x0.cpu())
        return (x, xs, x0s) if trace else x

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


def cfg(model, y, null, scale: float):
    """Classifier-free guidance (Ho & Salimans eq. 6): out = u + scale * (c - u), with c the
    prediction given label y and u given the null label. scale = 1 is the plain conditional model;
    the mix is linear, so it is the same in eps, x0 or v. One batched call does both."""

    def guided(x, t):
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null)]))
        c, u = out.float().chunk(2)
        return u + scale * (c - u)

    return guided


def classifier_grad(classifier, y, scale: float):
    """cond_fn for classifier guidance: scale * grad_x log p(y | x_t, t) of a noise-aware
    classifier (ADM sec. 4)."""

    def cond_fn(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = F.log_softmax(classifier(x, t).float(), dim=-1)
            selected = logp[torch.arange(len(y)), y].sum()
            return scale * torch.autograd.grad(selected, x)[0]

    return cond_fn


def _randn(x, generator):
    return torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
