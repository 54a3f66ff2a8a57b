"""Recipes: every model of the course declared once, as a `Recipe` whose name is the model's
checkpoint name and its command-line name (`python -m t2i train glide`). The fields are plain
functions, nothing to subclass; the loader is derived (`Recipe.load`), never written by hand.

  name                the model's name: its checkpoint is data/checkpoints/NAME-HASH.pt
  config(**overrides) the model's configuration for the active profile, its sections apart as
                      in minGPT's `get_config`: {"model": ..., "train": ..., "data": ...}, plus
                      "seed", which seeds initialisation, data order and noise. The config of a
                      model it starts from or trains on is nested whole inside it (GLIDE's base
                      holds 05's label model's; unCLIP's models hold CLIP's), so its cache key
                      changes when theirs does
  build(cfg)          the untrained model
  train(model, cfg, path)   trains it with `t2i.core.train.fit`, which writes the checkpoint
  ready(model, cfg)   what `load` hands back (default: the model): diffusion models give
                      (model, its GaussianDiffusion), autoencoders come frozen
  describe(model)     one line about it, for `train` (default: its parameter count)
  sampler(**options)  -> draw(n, seed) -> n images (n, 3, H, W) in [-1, 1], for `sample`; it
                      loads what it needs and refuses a bad option before loading anything
  evaluate(seed, **options) -> {row: {column: number or Rate}}, for `evaluate`
  options             {"sample": {flag: argparse keywords}, "evaluate": {...}}: the extra flags
  prefix(**options)   the sample files' name before "-000.png" (default: the recipe's name)

Methods that optimise through CLIP rather than train a model of their own (CLIPDraw,
VQGAN-CLIP), and unCLIP's whole pipeline, declare only `sampler` (and `evaluate`).
A sampling seed never reaches a config: `--seed` seeds the draw, never the model.
The table of all recipes, in the course's order, is `t2i.front.cli.recipes()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from t2i.core import checkpoint


@dataclass
class Recipe:
    """One model of the course (see the module's docstring for what each field does)."""

    name: str
    config: Callable[..., dict] | None = None
    build: Callable[[dict], Any] | None = None
    train: Callable[..., Any] | None = None
    ready: Callable[[Any, dict], Any] | None = None
    describe: Callable[[Any], str] | None = None
    sampler: Callable[..., Callable[[int, int], Any]] | None = None
    evaluate: Callable[..., dict] | None = None
    options: dict = field(default_factory=dict)
    prefix: Callable[..., str] | None = None

    def load(self, cfg: dict | None = None, retrain: bool = False):
        """The trained model of configuration `cfg` (default: the profile's), from the
        checkpoint cache or trained now, as `ready` hands it back."""
        if self.build is None:
            raise ValueError(f"{self.name} trains no model of its own: there is nothing to load")
        cfg = cfg or self.config()
        model = checkpoint.load_or_train(self.name, cfg, self.build, self.train, retrain)
        return self.ready(model, cfg) if self.ready else model

    def path(self, cfg: dict | None = None) -> Path:
        """Where the checkpoint of configuration `cfg` (default: the profile's) is cached."""
        return checkpoint.path_for(self.name, cfg or self.config())

    def seconds(self, cfg: dict | None = None) -> float:
        """How long the cached model took to train (NaN where it is not cached)."""
        return checkpoint.training_seconds(self.name, cfg or self.config())

    def commands(self) -> list[str]:
        """The commands of `python -m t2i` this recipe serves."""
        trains = self.build is not None
        have = {"train": trains, "sample": self.sampler, "evaluate": self.evaluate}
        return [c for c, fn in have.items() if fn]


def sections(cfg: dict, **overrides) -> dict:
    """A copy of config `cfg` with `overrides` put in the section that holds each key:
    sections(cfg, steps=100, K=64) sets cfg["train"]["steps"] and cfg["model"]["K"]. A key in
    no section, or in two, is an error (a misspelled override never passes silently)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for key, value in overrides.items():
        homes = [s for s, v in out.items() if isinstance(v, dict) and key in v]
        if key in out and not isinstance(out[key], dict):
            homes.append(None)
        if len(homes) != 1:
            where = "no section" if not homes else f"sections {homes}"
            raise ValueError(f"config key {key!r} is in {where} of {sorted(out)}")
        if homes[0] is None:
            out[key] = value
        else:
            out[homes[0]][key] = value
    return out


def train_line(r: Recipe, retrain: bool = False) -> str:
    """Load or train `r` and say what it is and how long that took (the `train` command)."""
    t0 = time.perf_counter()
    loaded = r.load(retrain=retrain)
    if r.describe:
        about = r.describe(loaded)
    else:
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        about = f"{r.name}: {sum(p.numel() for p in model.parameters()):,} parameters"
    return f"{about} (ready in {time.perf_counter() - t0:.0f} s)"
