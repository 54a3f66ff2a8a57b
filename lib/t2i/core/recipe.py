"""Recipes: every model of the course declared once, as a table of plain functions (all
notebooks; `t2i.front.cli` generates the command line from them, and `tests/test_profiles.py` builds
every one at the gpu profile and trains it for a step).

A module that trains a model ends with `RECIPES = {"name": Recipe(...)}`, the name being the one
the command line uses. The fields are functions, not methods: there is nothing to subclass.

  config()            the model's configuration for the active profile, its sections apart as
                      in minGPT's `get_config`: {"model": ..., "train": ..., "data": ...}, plus
                      "seed", which seeds initialisation, data order and noise
  build(cfg)          the untrained model
  train(model, cfg, path)   trains it with `t2i.core.train.fit`, which writes the checkpoint at path
  load(retrain=False) the trained model (or the tuple its module's loader gives: GLIDE's is
                      (model, diffusion)): from the checkpoint cache, or trained now
  describe(model)     one line about it, for `train` (default: its parameter count)
  sampler(**options)  -> draw(n, seed) -> n images (n, 3, H, W) in [-1, 1], for `sample`; it
                      loads what it needs and refuses a bad option before loading anything
  evaluate(seed, **options) -> {row: {column: number or Rate}}, for `evaluate`
  options             {"sample": {flag: argparse keywords}, "evaluate": {...}}: the extra flags
  prefix(**options)   the sample files' name before "-000.png" (default: the recipe's name)

Methods that optimise through CLIP rather than train a model of their own (CLIPDraw,
VQGAN-CLIP), and unCLIP's whole pipeline, declare only `sampler` (and `evaluate`).
A sampling seed never reaches a config: `--seed` seeds the draw, never the model.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Callable, NamedTuple

MODULES = (  # in the course's order
    "t2i.ch01_dvae.dvae",
    "t2i.ch01_dvae.vqvae",
    "t2i.ch02_dalle",
    "t2i.ch03_clip",
    "t2i.ch04_generating_with_clip.clipdraw",
    "t2i.ch04_generating_with_clip.vqgan_clip",
    "t2i.ch05_diffusion",
    "t2i.ch06_glide",
    "t2i.ch07_unclip",
)


class Recipe(NamedTuple):
    """One model of the course (see the module's docstring for what each function does)."""

    config: Callable[[], dict] | None = None
    build: Callable[[dict], Any] | None = None
    train: Callable[..., Any] | None = None
    load: Callable[..., Any] | None = None
    describe: Callable[[Any], str] | None = None
    sampler: Callable[..., Callable[[int, int], Any]] | None = None
    evaluate: Callable[..., dict] | None = None
    options: dict = {}
    prefix: Callable[..., str] | None = None

    def commands(self) -> list[str]:
        """The commands of `python -m t2i` this recipe serves."""
        have = {"train": self.load, "sample": self.sampler, "evaluate": self.evaluate}
        return [c for c, fn in have.items() if fn is not None]


def recipes() -> dict[str, Recipe]:
    """{name: recipe} of every model of the course, in the course's order."""
    out = {}
    for module in MODULES:
        out |= importlib.import_module(module).RECIPES
    return out


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


def train_line(name: str, recipe: Recipe, retrain: bool = False) -> str:
    """Load or train `name` and say what it is and how long that took (the `train` command)."""
    t0 = time.perf_counter()
    loaded = recipe.load(retrain=retrain)
    if recipe.describe:
        about = recipe.describe(loaded)
    else:
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        about = f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters"
    return f"{about} (ready in {time.perf_counter() - t0:.0f} s)"
