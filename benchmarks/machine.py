"""What the machine can do, and how much of it a training step uses: the benchmarks' shared
yardstick.

gemm_peak() measures this machine's fp32 matrix-multiply rate (the ceiling every model here runs
under); step_flops() counts the floating-point operations of one training step (forward and
backward) with PyTorch's FlopCounterMode, which counts matrix multiplies, convolutions and
attention (2 FLOPs per multiply-add) and not the cheap elementwise ops. A step's share of the
peak is then flops / (seconds * peak).
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def gemm_peak(n: int = 1024, repeats: int = 10) -> float:
    """fp32 GFLOP/s of an n x n x n matrix multiply on the threads torch uses (median of runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e9


def step_flops(step) -> float:
    """FLOPs of one call of step() (which should compute a loss and call backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def peak_columns(flops: float, ms: float, peak_gflops: float) -> dict:
    """The two columns every speed table shows: GFLOP per step and the fraction of the peak."""
    return {
        "GFLOP/step": f"{flops / 1e9:.1f}",
        "of fp32 peak": f"{flops / (ms / 1000) / (peak_gflops * 1e9):.0%}",
    }
