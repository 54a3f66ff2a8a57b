"""One training loop for every model of the course.

`fit` runs AdamW with a linear warm-up and a cosine decay, gradient clipping, weight decay
optionally kept off gains, biases and temperatures (`no_decay`), an optional exponential moving
average (EMA) of the weights, bf16 autocast where the machine does it fast,
a tqdm progress bar with the loss, and a live loss curve in notebooks. It saves a checkpoint
(atomically) when it ends; Ctrl-C / the notebook's stop button / SIGTERM ends it early and still
saves a valid, resumable checkpoint, so nothing trained is lost, and the resumed run ends with
the very weights an uninterrupted one would have.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from t2i.core import checkpoint, runtime


@dataclass
class History:
    """Losses per step, and whether training ran to the end."""

    loss: list[float] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    done: bool = False
    seconds: float = 0.0


def lr_at(step: int, steps: int, lr: float, warmup: int, final_frac: float = 0.1) -> float:
    """Linear warm-up to lr, then cosine decay to final_frac * lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def gains_and_biases(name: str, param: torch.Tensor) -> bool:
    """The parameters that CLIP (Radford et al. 2021) and open_clip train without weight decay:
    every parameter with fewer than 2 dimensions (biases, LayerNorm / GroupNorm gains, learnable
    scalars) and any named like a temperature (logit_scale). Matrices, convolution kernels,
    embedding tables and 2-D positional embeddings are decayed. Use as `fit(no_decay=...)`."""
    return param.ndim < 2 or "logit_scale" in name or "temperature" in name


def fit(
    model: torch.nn.Module,
    loss_fn: Callable,
    batch_fn: Callable[[int, torch.Generator], object],
    steps: int,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.0,
    clip: float = 1.0,
    ema: float | None = None,
    seed: int = 0,
    amp: bool = True,
    path: Path | None = None,
    cfg: dict | None = None,
    desc: str = "training",
    live_plot: bool = True,
    params=None,
    no_decay: Callable[[str, torch.Tensor], bool] | None = None,
    after_step: Callable[[torch.nn.Module], None] | None = None,
) -> History:
    """Train `model` for `steps` steps.

    loss_fn(model, batch) returns the loss, or (loss, {name: value}) to log more numbers.
    batch_fn(step, generator) returns a batch on the model's device; drawing it from the given
    generator keeps data order reproducible for a seed (and across a resume). torch's global
    generator, which the losses draw from, is seeded with `seed` too: the weights depend on the
    seed alone, not on what ran before in the process.
    With `path`, a checkpoint {config, model, ema, optimizer, random state, step, history, done}
    is written at the end (or on interrupt) and an unfinished one found there is resumed. An
    interrupt (Ctrl-C, a notebook's stop button, SIGTERM) saves, then propagates: nothing goes
    on with a model that is not trained. It saves the state between two steps (see
    `_Interrupts`), so the resumed run equals an uninterrupted one bit for bit.
    params: the parameters to train (default: all of the model's).
    weight_decay is AdamW's decoupled decay; by default it applies to every trained parameter.
    With no_decay(name, param) -> bool (name as in model.named_parameters(), "" for a parameter
    not in the model), the optimizer gets two groups and those for which it is True are not
    decayed; `gains_and_biases` is the CLIP / open_clip choice.
    after_step(model), if given, runs after every optimizer step (before the EMA update), e.g.
    to clamp a parameter to its allowed range.
    """
    dev = next(model.parameters()).device
    params = list(params if params is not None else model.parameters())
    opt = torch.optim.AdamW(
        _param_groups(model, params, weight_decay, no_decay),
        lr=lr,
        weight_decay=weight_decay,
        betas=(0.9, 0.99),
    )
    ema_model = copy.deepcopy(model).eval().requires_grad_(False) if ema else None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)  # the losses' draws (timesteps, noise, dropout): a resume restores them
    hist, start, earlier_seconds = History(), 0, 0.0
    saved = checkpoint.load(path, cfg) if path is not None else None
    if saved is not None and not saved.get("done"):
        why = checkpoint.mismatch(model, saved["model"])
        if why is not None:
            checkpoint.set_aside(path, f"does not fit the model ({why})")
            saved = None
    if saved is not None and not saved.get("done") and _load_optimizer(opt, saved, path):
        model.load_state_dict(saved["model"])
        if ema_model is not None and saved.get("ema"):
            ema_model.load_state_dict(saved["ema"])
        _set_random_state(gen, dev, saved)
        start, earlier_seconds = saved["step"], saved.get("seconds", 0.0)
        hist.loss = list(saved["history"])
        print(f"resuming {desc} from step {start} of {steps} ({path.name})")

    plot = LivePlot(desc) if live_plot and _in_notebook() else None
    interrupted = False
    model.train()
    t0 = time.perf_counter()
    # Steps done, and the random state the next one starts from: what an interrupt saves.
    done, random_state = start, _random_state(gen, dev)
    # Few redraws: a notebook kernel queues at most ~1000 output messages for a client that
    # reads them only when the cell ends (nbval, nbconvert); a flood would drop the last ones.
    bar = tqdm(
        range(start, steps), desc=desc, initial=start, total=steps, leave=True, mininterval=2.0
    )
    try:
        with _Interrupts() as interrupts:
            for step in bar:
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, steps, lr, warmup)
                batch = batch_fn(step, gen)
                with runtime.autocast(dev, amp):
                    out = loss_fn(model, batch)
                loss, logs = out if isinstance(out, tuple) else (out, {})
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                interrupts.hold()  # from the optimizer step on, the step completes first
                opt.step()
                try:
                    if after_step is not None:
                        after_step(model)
                except KeyboardInterrupt:  # raised by after_step itself: it waits too
                    interrupts.pending = True
                if ema_model is not None:
                    _ema_update(ema_model, model, min(ema, (1 + step) / (10 + step)))
                hist.loss.append(loss.item())
                for k, v in logs.items():
                    hist.logs.setdefault(k, []).append(float(v))
                done, random_state = step + 1, _random_state(gen, dev)
                interrupts.release()
                if step % 10 == 0 or step == steps - 1:
                    bar.set_postfix(loss=f"{_smooth(hist.loss):.4f}", refresh=False)
                if plot is not None:
                    plot.update(hist.loss)
        hist.done = True
    except KeyboardInterrupt:
        interrupted = True
        print(
            f"interrupted at step {done}"
            + (f": saving what was trained to {path.name} (the next run resumes)" if path else "")
        )
    finally:
        bar.close()
        if plot is not None:
            plot.update(hist.loss, force=True)
    hist.seconds = time.perf_counter() - t0
    if hist.done:  # a text line that outlives the bar (a saved notebook may not show its widget)
        loss_note = f", loss {_smooth(hist.loss):.4f}" if hist.loss else ""
        print(f"{desc}: done, {done}/{steps} steps{loss_note}, {hist.seconds:.0f} s")
    model.eval()
    if path is not None:
        checkpoint.save(
            path,
            {
                "config": cfg or {},
                "model": model.state_dict(),
                "ema": ema_model.state_dict() if ema_model is not None else None,
                "optimizer": opt.state_dict(),
                **random_state,
                "step": done,
                "history": hist.loss,
                "seconds": hist.seconds + earlier_seconds,
                "done": hist.done,
            },
        )
    if interrupted:  # stop whatever asked for the model: it is not trained
        raise KeyboardInterrupt
    if ema_model is not None:
        model.load_state_dict(ema_model.state_dict())
    return hist


def fit_config(model, loss_fn, batch_fn, cfg: dict, path=None, desc="training", **kwargs):
    """`fit` with the schedule of a recipe's config (`t2i.core.recipe`): steps, lr and warmup of its
    train section, and ema and weight_decay where it has them, seeded by its seed (every model of
    the course trains this way)."""
    schedule = cfg["train"]
    return fit(
        model,
        loss_fn,
        batch_fn,
        schedule["steps"],
        lr=schedule["lr"],
        warmup=schedule["warmup"],
        weight_decay=schedule.get("weight_decay", 0.0),
        ema=schedule.get("ema"),
        seed=cfg["seed"],
        path=path,
        cfg=cfg,
        desc=desc,
        **kwargs,
    )


class _Interrupts:
    """Within `fit`, Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, at once between
    `hold()` and `release()` too, but there they wait for `release()`: a step whose optimizer
    update has begun completes first, so the state saved is always the one between two steps.
    The handlers are installed only in the main thread (the one Python runs them in), SIGINT's
    only where it is Python's own, and the old ones come back at the end."""

    def __init__(self):
        self.holding = self.pending = False
        self.old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(sig)
                if old is not None and (sig == signal.SIGTERM or old is signal.default_int_handler):
                    self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame):
        if not self.holding:
            raise KeyboardInterrupt
        self.pending = True

    def hold(self):
        self.holding = True

    def release(self):
        self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _random_state(gen, dev) -> dict:
    """The random state a step starts from: the data's generator, and torch's global ones, which
    losses (timesteps, noise) and dropout draw from."""
    state = {"generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
    if dev.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(dev)
    return state


def _set_random_state(gen, dev, saved: dict) -> None:
    """Restore what `_random_state` saved (a checkpoint from before it kept only the data's)."""
    gen.set_state(saved["generator"])
    if "torch_rng" in saved:
        torch.set_rng_state(saved["torch_rng"])
    if "cuda_rng" in saved and dev.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], dev)


def _load_optimizer(opt, saved, path) -> bool:
    """Load an unfinished run's optimizer state; False (with a warning) if it does not fit, e.g.
    a run saved before its parameters were split into decay groups: it is then started over."""
    try:
        opt.load_state_dict(saved["optimizer"])
        return True
    except ValueError as err:
        runtime.warn(f"{path} cannot be resumed ({err}); training from the start")
        return False


def _param_groups(model, params, weight_decay, no_decay):
    """params as one group, or as [decayed, not decayed] groups (empty ones left out)."""
    if no_decay is None:
        return params
    names = {id(p): n for n, p in model.named_parameters()}
    off = [no_decay(names.get(id(p), ""), p) for p in params]
    groups = [
        {"params": [p for p, o in zip(params, off) if not o], "weight_decay": weight_decay},
        {"params": [p for p, o in zip(params, off) if o], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def _ema_update(ema_model, model, decay):
    for e, p in zip(ema_model.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers()):
        e.copy_(b)


def _smooth(values, n=50):
    tail = values[-n:]
    return sum(tail) / len(tail)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None and "IPKernelApp" in get_ipython().config
    except ImportError:
        return False


class LivePlot:
    """A loss curve redrawn in place in a notebook, at most every `every` seconds, and no more
    than `share` of the time: a redraw (plot, layout, PNG) takes a quarter of a second on a
    2-core laptop; every 5 s, it slowed notebook 06's base model down by 7-13%."""

    def __init__(self, title: str, every: float = 5.0, share: float = 0.02):
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.fig, self.ax = plt.subplots(figsize=(5, 2.5))
        self.title, self.every, self.share, self.last = title, every, share, 0.0
        self.handle = display(self.fig, display_id=True)
        plt.close(self.fig)

    def update(self, losses, force=False):
        now = time.perf_counter()
        if not losses or (not force and now - self.last < self.every):
            return
        self._draw(losses)
        self.last = time.perf_counter()
        self.every = max(self.every, (self.last - now) / self.share)

    def _draw(self, losses):
        self.ax.clear()
        self.ax.plot(losses, lw=0.5, alpha=0.4, color="C0")
        k = max(1, len(losses) // 50)
        if len(losses) > k:
            smooth = torch.tensor(losses).unfold(0, k, 1).mean(1)
            self.ax.plot(range(k - 1, len(losses)), smooth, color="C0")
        self.ax.set(title=self.title, xlabel="step", ylabel="loss", yscale="log")
        self.fig.tight_layout()
        self.handle.update(self.fig)
