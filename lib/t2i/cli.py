"""`python -m t2i COMMAND`: generate data, check the judge, and train, sample and evaluate the
course's models outside Jupyter (for instructors and CI).

Each model lives in its own module, which provides any of `cli_train(args)`,
`cli_sample(args)` and `cli_evaluate(args)`, and optionally `add_cli_arguments(command, parser)`
for its own options. Models whose module is not there yet are not listed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time

# model name on the command line -> module that implements it
MODELS = {
    "dvae": "t2i.dvae",
    "vqvae": "t2i.vqvae",
    "dalle": "t2i.dalle",
    "clip": "t2i.clip",
    "clipdraw": "t2i.clipdraw",
    "vqgan-clip": "t2i.vqgan_clip",
    "diffusion": "t2i.class_diffusion",
}


def _available_models() -> dict:
    out = {}
    for name, mod in MODELS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = importlib.import_module(mod)
    return out


def cmd_data(args):
    from . import shapes

    t = time.perf_counter()
    ds = shapes.load_dataset(args.n, res=args.res, seed=args.seed, split=args.split)
    dt = time.perf_counter() - t
    print(
        f"{len(ds)} {args.res}x{args.res} {args.split} scenes in {dt:.2f} s (generated or loaded)"
    )
    for c in ds.captions[:5]:
        print("  ", c)


def cmd_judge(args):
    from . import judge

    table = judge.accuracy_table(n=args.n, seed=args.seed)
    if args.json:
        flat = {f"{cond} {fact}": v for cond, row in table.items() for fact, v in row.items()}
        print(json.dumps(flat))
    else:
        facts = list(next(iter(table.values())))
        print(f"{'':22s}" + "".join(f"{f:>10s}" for f in facts))
        for cond, row in table.items():
            print(f"{cond:22s}" + "".join(f"{row[f]:10.3f}" for f in facts))


def cmd_summary(args):
    from pathlib import Path

    from . import checks

    paths = sorted(Path(args.dir).glob("*.ipynb"))
    records = checks.collect(paths)
    if not records:
        print(f"no check records in {args.dir}")
        return
    for r in records:
        name = r.pop("notebook")
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m t2i", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="generate (or load) a shapes-world dataset and time it")
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=["train", "test", "heldout"])
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("judge", help="the judge's accuracy on fresh renders, blur and noise")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("summary", help="print the check numbers of executed notebooks")
    p.add_argument("dir", nargs="?", default="build/notebooks")
    p.set_defaults(func=cmd_summary)

    models = _available_models()
    for command, help_text in [
        ("train", "train a model (or load it from the cache)"),
        ("sample", "draw samples from a model into PNG files"),
        ("evaluate", "the judge's table for a model"),
    ]:
        names = [n for n, m in models.items() if hasattr(m, f"cli_{command}")]
        if not names:
            continue
        p = sub.add_parser(command, help=f"{help_text}: {', '.join(names)}")
        per_model = p.add_subparsers(dest="model", required=True)
        for name in names:
            q = per_model.add_parser(name)
            q.add_argument("--seed", type=int, default=0)
            if command == "sample":
                q.add_argument("--n", type=int, default=16)
                q.add_argument("--out", default="samples")
            if command == "evaluate":
                q.add_argument("--json", action="store_true")
            if hasattr(models[name], "add_cli_arguments"):
                models[name].add_cli_arguments(command, q)
            q.set_defaults(func=getattr(models[name], f"cli_{command}"))

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
