"""Benchmark of the class-conditional diffusion recipe (notebook 05) at the active profile.

  python benchmarks/bench_diffusion.py speed     training ms/step (fp32 / bf16, channels_last),
                                                GFLOP/step and the share of the measured fp32
                                                GEMM peak, and samples/s per sampler
  python benchmarks/bench_diffusion.py recipe    train each recipe variant for the same number of
                                                steps and print the judge's numbers (CFG 3, DDIM 25,
                                                eta 1 and eta 0) and the DDIM inversion round trip

Run under the shared CPU lock: `flock /tmp/t2i-cpu.lock .venv/bin/python benchmarks/...`.
Nothing is cached: every variant trains from scratch (checkpoints go to a temporary dir).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import machine
import torch

from t2i import ch05_diffusion as cd
from t2i.blocks.layers import count_parameters
from t2i.core import runtime
from t2i.world import classes, datasets, measures


def step_flops(model, cfg, predict):
    """FLOPs of one training step (loss and backward) of `model` on the recipe's first batch."""
    diffusion = cd.diffusion_of(cfg)
    x, y = cd._batches(cfg, torch.device("cpu"))(0, torch.Generator().manual_seed(0))
    flops = machine.step_flops(
        lambda: diffusion.loss(lambda xt, t, y=y: predict(model, xt, t, y), x).backward()
    )
    model.zero_grad(set_to_none=True)
    return flops


def median_step_ms(model, cfg, predict, amp=False, channels_last=False, steps=12):
    """Median ms of a training step (loss, backward, AdamW) of `model` on the recipe's batches;
    predict(model, x_t, t, y) returns the model's eps."""
    diffusion = cd.diffusion_of(cfg)
    batch = cd._batches(cfg, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps):
        x, y = batch(step, gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with runtime.autocast(torch.device("cpu"), amp):
            loss = diffusion.loss(lambda xt, t, y=y: predict(model, xt, t, y), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times = sorted(times[2:])
    return 1000 * times[len(times) // 2]


def train_step_ms(cfg, amp=True, channels_last=False):
    runtime.seed_everything(0)
    model = cd.build_model(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    predict = lambda m, xt, t, y: m(xt, t, y)  # noqa: E731
    ms = median_step_ms(model, cfg, predict, amp, channels_last)
    return ms, count_parameters(model), step_flops(model, cfg, predict)


def peer_step_ms(cfg, peak):
    """The same-size U-Net of diffusers (UNet2DModel: one residual block per level, attention at
    8x8, class embedding), timed on the same batches, when the optional extra is installed."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        print("\n(diffusers not installed: `pip install -e .[bench]` adds the peer model)")
        return
    runtime.seed_everything(0)
    peer = UNet2DModel(
        sample_size=cfg["data"]["res"],
        block_out_channels=tuple(cfg["model"]["ch"] * m for m in cfg["model"]["mults"]),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=cfg["model"]["blocks"],
        norm_num_groups=8,
        attention_head_dim=16,
        num_class_embeds=classes.NULL + 1,
    )
    predict = lambda m, xt, t, y: m(xt, t, class_labels=y).sample  # noqa: E731
    ms = median_step_ms(peer, cfg, predict)
    cols = machine.peak_columns(step_flops(peer, cfg, predict), ms, peak)
    print(
        f"| diffusers UNet2DModel, same widths | {count_parameters(peer) / 1e6:.2f} M "
        f"| {ms:.0f} | {cols['GFLOP/step']} | {cols['of fp32 peak']} | – | – |"
    )


def speed():
    cfg = cd.model_config()
    peak = machine.gemm_peak()
    print(f"measured fp32 GEMM peak: {peak:.0f} GFLOP/s")
    res = cfg["data"]["res"]
    print(f"training, batch {cfg['train']['batch']}, {res}x{res}")
    print(
        "| model | params | fp32 ms/step | GFLOP/step | fp32: of peak | bf16 ms/step "
        "| bf16 + channels_last ms/step |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, over in [
        ("ch 32, (1, 2)", {}),
        ("ch 48, (1, 2)", {"ch": 48}),
        ("ch 32, (1, 2), 2 blocks", {"blocks": 2}),
    ]:
        c = cd.model_config(**over)
        fp32, n, flops = train_step_ms(c, amp=False)
        bf16, _, _ = train_step_ms(c, amp=True)
        cl, _, _ = train_step_ms(c, amp=True, channels_last=True)
        cols = machine.peak_columns(flops, fp32, peak)
        print(
            f"| {name} | {n / 1e6:.2f} M | {fp32:.0f} | {cols['GFLOP/step']} "
            f"| {cols['of fp32 peak']} | {bf16:.0f} | {cl:.0f} |"
        )

    peer_step_ms(cfg, peak)

    model = cd.build_model(cfg).eval()
    diffusion = cd.diffusion_of(cfg)
    labels = classes.balanced_labels(4)
    print(f"\nsampling {len(labels)} images (untrained weights: speed only)")
    print("| sampler | guidance | seconds | samples/s |")
    print("|---|---|---|---|")
    for sampler, steps, guidance in [
        ("ddim", 25, "none"),
        ("ddim", 25, "cfg"),
        ("ddim", 100, "cfg"),
        ("ddpm", 1000, "cfg"),
    ]:
        t0 = time.perf_counter()
        cd.sample(
            model, diffusion, labels, guidance=guidance, scale=3.0, sampler=sampler, steps=steps
        )
        dt = time.perf_counter() - t0
        name = f"{sampler} {steps if sampler == 'ddim' else diffusion.T} steps"
        print(f"| {name} | {guidance} | {dt:.1f} | {len(labels) / dt:.1f} |")


VARIANTS = {
    "eps + min-SNR 5, cosine, lr 2e-3, EMA": {},
    "fp32 (no bf16 autocast)": {"amp": False},
    "eps, unweighted (no min-SNR)": {"min_snr": None},
    "eps, linear schedule": {"schedule": "linear"},
    "v-prediction": {"prediction": "v"},
    "x0-prediction": {"prediction": "x0"},
    "lr 1e-3": {"lr": 1e-3},
    "no EMA": {"ema": None},
    "batch 128, half the steps": {"batch": 128, "half": True},
    "batch 32, twice the steps": {"batch": 32, "double": True},
    "width 48": {"ch": 48},
}


def inversion_psnr(model, diffusion, res, steps=50):
    """PSNR of real renders inverted by DDIM and decoded back with the same steps (notebook 05's
    round trip: 68 test scenes, the seen classes among them, each under its own label)."""
    real = datasets.load_dataset(68, res=res, seed=7, split="test", counts=(1,))
    y = torch.from_numpy(real.scenes.color[:, 0] * 3 + real.scenes.shape[:, 0]).long()
    keep = torch.tensor([int(v) in classes.SEEN for v in y])
    x, y = real.tensor()[keep], y[keep]
    fn = lambda xt, t: model(xt, t, y)  # noqa: E731
    back = diffusion.ddim_sample(fn, diffusion.ddim_invert(fn, x, steps), steps, eta=0.0)
    return measures.psnr(back, x)


def recipe(names, steps):
    os.environ["T2I_DATA"] = tempfile.mkdtemp(prefix="bench-diffusion-")
    labels = classes.balanced_labels(8)
    print(
        f"each variant: {steps} steps of batch 64 (or the same images in other batches); judge on "
        f"{len(labels)} samples, DDIM 25 steps (eta 1 unless named), no guidance (scale 1) and "
        "CFG 3; inversion: PSNR of the 50-step DDIM round trip of real renders"
    )
    print(
        "| variant | train s | ms/step | all, scale 1 | color, CFG 3 | shape, CFG 3 | all, CFG 3 "
        "| all, CFG 3, eta 0 | inversion dB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        over = dict(VARIANTS[name])
        amp = over.pop("amp", True)
        n_steps = steps // 2 if over.pop("half", False) else steps
        n_steps = n_steps * 2 if over.pop("double", False) else n_steps
        cfg = cd.model_config(steps=n_steps, **over)
        runtime.seed_everything(0)
        model = cd.build_model(cfg)
        t0 = time.perf_counter()
        cd.train_model(model, cfg, live_plot=False, amp=amp)
        dt = time.perf_counter() - t0
        model.eval()
        diffusion = cd.diffusion_of(cfg)
        plain = measures.label_table(
            cd.sample(model, diffusion, labels, guidance="none", steps=25, eta=1.0), labels
        )
        r = measures.label_table(
            cd.sample(model, diffusion, labels, guidance="cfg", scale=3.0, steps=25, eta=1.0),
            labels,
        )
        r0 = measures.label_table(
            cd.sample(model, diffusion, labels, guidance="cfg", scale=3.0, steps=25), labels
        )
        print(
            f"| {name} | {dt:.0f} | {1000 * dt / n_steps:.0f} | {plain['all']:.2f} "
            f"| {r['color']:.2f} | {r['shape']:.2f} | {r['all']:.2f} | {r0['all']:.2f} "
            f"| {inversion_psnr(model, diffusion, cfg['data']['res']):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "speed"
    if what == "speed":
        speed()
    else:
        steps = int(sys.argv[2]) if len(sys.argv) > 2 else cd.model_config()["train"]["steps"]
        names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(VARIANTS)
        recipe([n for n in VARIANTS if any(n.startswith(k) for k in names)], steps)
