"""One training loop for every model of the course.

`fit` runs AdamW with a linear warm-up and a cosine decay, gradient clipping, weight decay
optionally kept off gains, biases and temperatures (`no_decay`), an optional exponential moving
average (EMA) of the weights, bf16 autocast where the machine does it fast,
a tqdm progress bar with the loss, and a live loss curve in notebooks. It saves a checkpoint
(atomically) when it ends; Ctrl-C / the notebook's stop button / SIGTERM ends it early and still
saves a valid, resumable checkpoint, so nothing trained is lost, and the resumed run ends with
the very weights an uninterrupted one would have.
Its parts: `t2i.core.resume` (the checkpoint), `t2i.core.ema`, `t2i.core.liveplot`, and
`_Interrupts` below.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from t2i.core import runtime
from t2i.core.ema import EMA
from t2i.core.liveplot import LivePlot, in_notebook
from t2i.core.resume import TrainState


@dataclass
class History:
    """Losses per step, and whether training ran to the end."""

    loss: list[float] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    done: bool = False
    seconds: float = 0.0

    def add(self, loss: float, logs: dict) -> None:
        self.loss.append(loss)
        for k, v in logs.items():
            self.logs.setdefault(k, []).append(float(v))


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
    # The run: model, optimizer, EMA, generators; resumed from `path` if it holds an unfinished one.
    dev = runtime.device_of(model)
    params = list(params if params is not None else model.parameters())
    groups = _param_groups(model, params, weight_decay, no_decay)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    averaged = EMA(model, ema) if ema else None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)  # the losses' draws (timesteps, noise, dropout): a resume restores them
    state = TrainState(model, averaged, opt, gen, dev)
    hist, start, earlier_seconds = History(), 0, 0.0
    saved = state.resume(path, cfg) if path is not None else None
    if saved is not None:
        start, earlier_seconds = saved["step"], saved.get("seconds", 0.0)
        hist.loss = list(saved["history"])
        print(f"resuming {desc} from step {start} of {steps} ({path.name})")

    # The steps, until the last or an interrupt.
    plot = LivePlot(desc) if live_plot and in_notebook() else None
    model.train()
    t0 = time.perf_counter()
    # Steps done, and the random state the next one starts from: what an interrupt saves.
    done, random_state = start, state.random_state()
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
                loss, logs = _backward(model, loss_fn, batch_fn(step, gen), opt, params, clip, amp)
                interrupts.hold()  # from the optimizer step on, the step completes first
                opt.step()
                if after_step is not None:
                    interrupts.call(after_step, model)
                if averaged is not None:
                    averaged.update(model, step)
                hist.add(loss.item(), logs)
                done, random_state = step + 1, state.random_state()
                interrupts.release()
                if step % 10 == 0 or step == steps - 1:
                    bar.set_postfix(loss=f"{_smooth(hist.loss):.4f}", refresh=False)
                if plot is not None:
                    plot.update(hist.loss)
        hist.done = True
    except KeyboardInterrupt:
        print(
            f"interrupted at step {done}"
            + (f": saving what was trained to {path.name} (the next run resumes)" if path else "")
        )
    finally:
        bar.close()
        if plot is not None:
            plot.update(hist.loss, force=True)
    hist.seconds = time.perf_counter() - t0

    # The end: a line of text, the checkpoint, and the model holding the EMA weights.
    if hist.done:  # a text line that outlives the bar (a saved notebook may not show its widget)
        loss_note = f", loss {_smooth(hist.loss):.4f}" if hist.loss else ""
        print(f"{desc}: done, {done}/{steps} steps{loss_note}, {hist.seconds:.0f} s")
    model.eval()
    if path is not None:
        seconds = hist.seconds + earlier_seconds
        state.save(path, cfg, random_state, done, hist.loss, seconds, hist.done)
    if not hist.done:  # interrupted: stop whatever asked for the model, it is not trained
        raise KeyboardInterrupt
    if averaged is not None:
        averaged.copy_to(model)
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


def _backward(model, loss_fn, batch, opt, params, clip, amp):
    """The loss on batch, and (loss, logs); its gradients, clipped, are in params."""
    with runtime.autocast(runtime.device_of(model), amp):
        out = loss_fn(model, batch)
    loss, logs = out if isinstance(out, tuple) else (out, {})
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    return loss, logs


def _smooth(values, n=50):
    tail = values[-n:]
    return sum(tail) / len(tail)


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

    def call(self, fn, *args):
        """fn(*args), held: a KeyboardInterrupt it raises itself waits for `release()` too."""
        try:
            fn(*args)
        except KeyboardInterrupt:
            self.pending = True

    def release(self):
        self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
