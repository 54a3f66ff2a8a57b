"""Speed of the foundation: generating the shapes world, tokenizing, judging.

    python benchmarks/bench_foundation.py

Prints a table of wall-clock times on this machine (run it alone: other processes skew it).
"""

import time

import torch

from t2i.world import datasets, judge
from t2i.world.tokenizer import Tokenizer


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    rows = []
    for n, res in [(50_000, 32), (10_000, 64), (50_000, 16)]:
        sec, ds = timed(lambda n=n, res=res: datasets.make_dataset(n, res, seed=0), repeat=2)
        rows.append((f"generate {n:,} scenes at {res}x{res}", sec, f"{n / sec:,.0f} images/s"))
    caps = ds.captions[:10_000]
    tok = Tokenizer()
    sec, _ = timed(lambda: tok(caps))
    rows.append(("tokenize 10,000 captions", sec, f"{len(caps) / sec:,.0f} captions/s"))
    for res in (16, 32, 64):
        data = datasets.make_dataset(2000, res, seed=1, split="test")
        sec, _ = timed(lambda data=data: judge.score(data.images, data.captions), repeat=2)
        rows.append((f"judge 2,000 images at {res}x{res}", sec, f"{2000 / sec:,.0f} images/s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'what':{width}s}  {'seconds':>8s}  throughput")
    for name, sec, rate in rows:
        print(f"{name:{width}s}  {sec:8.2f}  {rate}")


if __name__ == "__main__":
    main()
