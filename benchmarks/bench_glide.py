"""Quality per CPU-minute of GLIDE's base model (notebook 06) at the active profile.

  python benchmarks/bench_glide.py [STEPS ...]      (default: 1000 2000)

Trains the base model for each step budget (starting, as in notebook 06, from 05's label model)
and prints its training seconds and the judge's numbers for section 4's prompt kinds, with CFG 3
and 25 DDIM steps: single objects of full prompts with colour and shape right ("drawn", the 0.90
bar), and two-object prompts with every object there in its colour ("objects", the 0.60 bar),
full and short, on twice the notebook's prompts so that the interval is narrower. Checkpoints
are cached in T2I_DATA as the notebooks' are: a budget trained before is read, and its seconds
are those its training took. Run it alone on an otherwise idle machine.
"""

from __future__ import annotations

import sys

from t2i import checkpoint, config, glide, shapes

SETS = {  # name: (prompts, the column that holds its bar)
    "one object, full": (shapes.eval_prompts(96, 11), "drawn"),
    "two objects, full": (shapes.eval_prompts(192, 13, counts=(2,)), "objects"),
    "two objects, short": (shapes.eval_prompts(192, 14, counts=(2,), partial=True), "objects"),
}


def main(budgets: list[int]) -> None:
    print(f"profile {config.profile()} | CFG 3, 25 DDIM steps, sampling seed 2")
    print("| steps | training s | " + " | ".join(SETS) + " |")
    print("|---|---|" + "---|" * len(SETS))
    for steps in budgets:
        cfg = glide.base_config(steps=steps)
        model, diffusion = glide.load_base(cfg)
        seconds = checkpoint.training_seconds("glide_base", cfg)
        cells = []
        for prompts, column in SETS.values():
            images = glide.sample(model, diffusion, prompts, "cfg", 3.0, seed=2)
            rate = glide.evaluate(images, prompts)[column]
            cells.append(f"{rate:.3f} {rate.interval()} (n={rate.n})")
        print(f"| {steps} | {seconds:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 2000])
