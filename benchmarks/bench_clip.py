"""CLIP and generating with CLIP: speed and quality after fixed budgets (run under the CPU lock).

    flock /tmp/t2i-cpu.lock .venv/bin/python benchmarks/bench_clip.py [clip|generate|all]

clip: ms per training step, its GFLOP and share of the measured fp32 GEMM peak, then
zero-shot accuracy (ensemble) after fixed step budgets.
generate: seconds per prompt and the judge's colour rate for each CLIP-guided method.
"""

from __future__ import annotations

import sys
import time

import machine
import torch

from t2i import ch03_clip as clip
from t2i.ch01_dvae import vqvae
from t2i.ch04_generating_with_clip import clip_optimization, clipdraw, vqgan_clip
from t2i.core import runtime
from t2i.world.prompts import TOKENIZER


def bench_clip(budgets=(150, 300, 600)):
    cfg = clip.default_config()
    batch = cfg["train"]["batch"]
    model = clip.build(cfg)
    x, captions, pos = clip.make_pairs(batch, 0, cfg["data"])
    tokens = TOKENIZER(captions)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(8):
        t = time.perf_counter()
        with runtime.autocast(torch.device("cpu")):
            loss = clip.contrastive_loss(model(x, tokens), pos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    ms = 1000 * sorted(times[2:])[len(times[2:]) // 2]
    flops = machine.step_flops(lambda: clip.contrastive_loss(model(x, tokens), pos).backward())
    cols = machine.peak_columns(flops, ms, machine.gemm_peak())
    print(
        f"CLIP batch {batch}: {ms:.0f} ms/step, {batch / ms * 1000:.0f} pairs/s, "
        f"{cols['GFLOP/step']} GFLOP/step = {cols['of fp32 peak']} of the fp32 GEMM peak"
    )
    print(f"| steps | seconds | {' | '.join(clip.CLASSES)} |")
    print("|---" * (len(clip.CLASSES) + 2) + "|")
    for steps in budgets:
        c = clip.default_config(steps=steps)
        runtime.seed_everything(0)
        m = clip.build(c)
        hist = clip.train_clip(m, c, live_plot=False)
        acc = clip.zero_shot_table(m)["ensemble"]
        row = " | ".join(f"{acc[a]:.3f}" for a in clip.CLASSES)
        print(f"| {steps} | {hist.seconds:.0f} | {row} |")


def bench_generate(
    prompts=("a red circle", "a blue square", "a green triangle", "a yellow circle"),
):
    model = clip.CLIP.load()
    vae = vqvae.VQVAE.load()
    prompts = list(prompts)
    runs = {
        "pixels, no augmentation": lambda p: clip_optimization.optimize(
            clip_optimization.Pixels(len(p), model.res), model, p, 100, 0.05, "none"
        ),
        "pixels, augmented": lambda p: clip_optimization.optimize(
            clip_optimization.Pixels(len(p), model.res), model, p, 100, 0.05, "augment"
        ),
        "CLIPDraw": lambda p: clipdraw.draw(model, p),
        "VQGAN-CLIP": lambda p: vqgan_clip.generate(model, vae, p),
    }
    print("| method | s per prompt (alone) | s per prompt (batch of 4) | judge colour | fooled |")
    print("|---|---|---|---|---|")
    for name, run in runs.items():
        alone = run(prompts[:1]).seconds
        result = run(prompts)
        table = clip_optimization.clip_vs_judge(model, result.images, prompts)
        print(
            f"| {name} | {alone:.1f} | {result.seconds / len(prompts):.1f} | "
            f"{table['judge colour']:.2f} | {table['fools CLIP, not the judge']:.2f} |"
        )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    print(f"profile {runtime.profile()}, {torch.get_num_threads()} threads")
    if what in ("clip", "all"):
        bench_clip()
    if what in ("generate", "all"):
        bench_generate()
