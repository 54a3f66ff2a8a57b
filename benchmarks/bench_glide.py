"""Quality per CPU-minute of GLIDE's base model (notebook 06) at the active profile.

  python benchmarks/bench_glide.py [STEPS ...] [--set KEY=JSON ...] [--scale S] [--sample-steps K]

Trains the base model for each step budget (default: 1000 2000), starting, as in notebook 06,
from 05's label model, with the config changes that --set gives (`glide.base_config`'s keys, a
JSON value each: --set lr=0.004 --set 'count_probs=[1, 2]'), and prints its training seconds and
the judge's numbers for section 4's prompt kinds, sampled with CFG (scale 3) and DDIM (25 steps)
unless told otherwise: single objects of full prompts with colour and shape right ("drawn", the
0.90 bar), and two-object prompts with every object there in its colour ("objects", the 0.60
bar), full and short, on twice the notebook's prompts so that the interval is narrower.
Checkpoints are cached in T2I_DATA as the notebooks' are: a configuration trained before is
read, and its seconds are those its training took. Run it alone on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json

from t2i import ch06_glide as glide
from t2i.core import runtime
from t2i.world import grammar, measures

SETS = {  # name: (prompts, the column that holds its bar)
    "one object, full": (grammar.eval_prompts(96, 11), "drawn"),
    "two objects, full": (grammar.eval_prompts(192, 13, counts=(2,)), "objects"),
    "two objects, short": (grammar.eval_prompts(192, 14, counts=(2,), partial=True), "objects"),
}


def main(budgets: list[int], changes: dict, scale: float, sample_steps: int) -> None:
    print(f"profile {runtime.profile()} | changes {changes or 'none'}", end=" | ")
    print(f"CFG {scale:g}, {sample_steps} DDIM steps, sampling seed 2")
    print("| steps | training s | " + " | ".join(SETS) + " |")
    print("|---|---|" + "---|" * len(SETS))
    for steps in budgets:
        cfg = glide.base_config(**changes, steps=steps)
        model, diffusion = glide.GLIDE.load(cfg)
        seconds = glide.GLIDE.seconds(cfg)
        cells = []
        for prompts, column in SETS.values():
            images = glide.sample(
                model, diffusion, prompts, guidance="cfg", scale=scale, steps=sample_steps, seed=2
            )
            rate = measures.caption_table(images, prompts)[column]
            cells.append(f"{rate:.3f} {rate.interval()} (n={rate.n})")
        print(f"| {steps} | {seconds:.0f} | " + " | ".join(cells) + " |", flush=True)


def change(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes KEY=JSON, not {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--set {key}: {value!r} is not JSON ({e})") from e


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="*", type=int, default=[1000, 2000])
    parser.add_argument("--set", type=change, action="append", default=[], dest="changes")
    parser.add_argument("--scale", type=float, default=3.0)
    parser.add_argument("--sample-steps", type=int, default=25)
    args = parser.parse_args()
    main(args.steps, dict(args.changes), args.scale, args.sample_steps)
