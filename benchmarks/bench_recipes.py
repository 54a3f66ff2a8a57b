"""Every trained recipe of the course at the active profile: ms per training step, and the
minutes that the profile's whole step budget takes on this machine.

  T2I_PROFILE=gpu python benchmarks/bench_recipes.py [NAME ...]

A step is timed as the difference between a short and a longer run of the recipe's own `train`
(data, loss, backward, optimiser, EMA), so start-up costs drop out. The models a recipe builds on
(a tokenizer, CLIP, a base model) come untrained: the speed of a step does not depend on what
they learned. Nothing is cached. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import sys
import time

import torch

from t2i.blocks.layers import count_parameters
from t2i.core import checkpoint, recipe, runtime
from t2i.front import cli

SHORT, LONG = 5, 25


def with_steps(cfg: dict, steps: int) -> dict:
    """cfg with its own train section cut to `steps` (warm-up included)."""
    out = dict(cfg)
    out["train"] = dict(cfg["train"], steps=steps, warmup=min(cfg["train"]["warmup"], steps))
    return out


def seconds(r: recipe.Recipe, cfg: dict, steps: int) -> float:
    model = r.build(cfg).to(runtime.device())
    t = time.perf_counter()
    r.train(model, with_steps(cfg, steps), None, live_plot=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main(names: list[str]) -> None:
    checkpoint.load_or_train = lambda name, cfg, build, train, retrain=False: (
        build(cfg).to(runtime.device()).eval()
    )
    trained = {n: r for n, r in cli.recipes().items() if r.config is not None}
    dev = runtime.device()
    print(f"profile {runtime.profile()} | device {dev} | bf16 {runtime.bf16_supported(dev)}")
    print("| recipe | parameters | batch | ms/step | profile steps | minutes |")
    print("|---|---|---|---|---|---|")
    total = 0.0
    for name in names or trained:
        r = trained[name]
        cfg = r.config()
        runtime.seed_everything(0)
        seconds(r, cfg, SHORT)  # warm-up: kernels, allocator, data caches
        ms = 1000 * (seconds(r, cfg, LONG) - seconds(r, cfg, SHORT)) / (LONG - SHORT)
        minutes = ms * cfg["train"]["steps"] / 60_000
        total += minutes
        params = count_parameters(r.build(cfg))
        base = cfg["model"].get("base", {})  # a fine-tune trains on its base model's batches
        batch = cfg["train"].get("batch") or base.get("train", {}).get("batch")
        print(f"| {name} | {params:,} | {batch} | {ms:.1f} | {cfg['train']['steps']:,} | "
              f"{minutes:.1f} |", flush=True)  # fmt: skip
    print(f"| all | | | | | {total:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
