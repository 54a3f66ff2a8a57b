"""`python -m t2i COMMAND`: generate data, check the judge, and train, sample and evaluate the
course's models outside Jupyter (for instructors and CI).

`train`, `sample` and `evaluate` are generated from the models' recipes (`t2i.core.recipe`): one
`--retrain`, one writer of PNG files, one printer of tables (Markdown, or JSON with --json).
`inpaint` (GLIDE) and `vary` (unCLIP) take an image file and have their own commands.

Serves the README's commands and CI rather than a notebook.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from t2i import ch02_dalle as dalle
from t2i import ch03_clip as clip
from t2i import ch05_diffusion as label_diffusion
from t2i import ch06_glide as glide
from t2i import ch07_unclip as unclip
from t2i.ch01_dvae import dvae, vqvae
from t2i.ch04_generating_with_clip import clipdraw, vqgan_clip
from t2i.core import recipe, runtime
from t2i.front import checks, plot
from t2i.world import datasets, grammar, judge
from t2i.world.tokenizer import Tokenizer

CHAPTERS = (dvae, vqvae, dalle, clip, clipdraw, vqgan_clip, label_diffusion, glide, unclip)


def recipes() -> dict[str, recipe.Recipe]:
    """{name: recipe} of every model of the course, in the course's order."""
    return {r.name: r for chapter in CHAPTERS for r in chapter.RECIPES}


def _options(args, command: str, r: recipe.Recipe) -> dict:
    """The values of a recipe's own flags for `command`, by name."""
    flags = r.options.get(command, {})
    names = [spec.get("dest", flag.lstrip("-").replace("-", "_")) for flag, spec in flags.items()]
    return {name: getattr(args, name) for name in names}


def cmd_train(args):
    print(recipe.train_line(args.recipe, retrain=args.retrain))


def cmd_sample(args):
    r, options = args.recipe, _options(args, "sample", args.recipe)
    t0 = time.perf_counter()
    draw = r.sampler(**options)
    prefix = r.prefix(**options) if r.prefix else args.model
    paths = plot.save_batches(lambda start, n: draw(n, args.seed + start), args.n, args.out, prefix)
    print(f"{len(paths)} samples in {time.perf_counter() - t0:.1f} s -> {args.out}/")


def cmd_evaluate(args):
    rows = args.recipe.evaluate(args.seed, **_options(args, "evaluate", args.recipe))
    plot.print_table(rows, args.json)


COMMANDS = {  # generated for every recipe that serves them: (help, what runs)
    "train": ("train a model (or load it from the cache)", cmd_train),
    "sample": ("draw samples from a model into PNG files", cmd_sample),
    "evaluate": ("the judge's table for a model", cmd_evaluate),
}


def cmd_data(args):

    t = time.perf_counter()
    ds = datasets.load_dataset(args.n, res=args.res, seed=args.seed, split=args.split)
    dt = time.perf_counter() - t
    print(
        f"{len(ds)} {args.res}x{args.res} {args.split} scenes in {dt:.2f} s (generated or loaded)"
    )
    for c in ds.captions[:5]:
        print("  ", c)


def cmd_judge(args):
    table = judge.accuracy_table(n=args.n, seed=args.seed)
    junk = judge.rejection_table(n=min(args.n, 300), seed=args.seed)
    if args.json:
        flat = {f"{cond} {fact}": v for cond, row in table.items() for fact, v in row.items()}
        flat.update(
            {f"junk {kind} says no to {f}": v for kind, row in junk.items() for f, v in row.items()}
        )
        print(json.dumps(flat))
        return
    facts = list(next(iter(table.values())))
    print(f"agreement with the truth, n = {args.n} scenes per row")
    print(f"{'':22s}" + "".join(f"{f:>10s}" for f in facts))
    for cond, row in table.items():
        print(f"{cond:22s}" + "".join(f"{row[f]:10.3f}" for f in facts))
    print(
        f"\njunk: how often the judge says no to a fact that does not hold, n = {min(args.n, 300)}"
    )
    for kind, row in junk.items():
        print(f"{kind:22s}" + "  ".join(f"{f} {v:.3f}" for f, v in row.items()))


def cmd_judge_score(args):
    grammar.parse_caption(args.prompt)  # a caption the judge cannot check is named first
    images = plot.read_pngs(args.png)
    rows = judge.score_each(images, [args.prompt] * len(images))
    table = judge.summarize(rows)
    out = {"prompt": args.prompt, "n": table.pop("n")}
    out.update({fact: float(rate) for fact, rate in table.items()})
    out["interval95"] = {fact: list(rate.interval()) for fact, rate in table.items()}
    if args.each:
        out["images"] = [{"path": path, **row} for path, row in zip(args.png, rows)]
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.prompt!r} on {out['n']} image(s):")
    for fact, rate in table.items():
        lo, hi = rate.interval()
        print(f"  {fact:10s} {float(rate):.3f}  [{lo:.3f}, {hi:.3f}]")
    for row in out.get("images", []):
        print(f"  {row['path']}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "path"))


def cmd_summary(args):
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
    p.add_argument("--res", type=int, default=32, choices=[16, 32, 64], help="what the judge reads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=["train", "test", "heldout"])
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "judge", help="the judge's accuracy (renders, blur, noise, junk); `judge score` scores PNGs"
    )
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_judge)
    q = p.add_subparsers(dest="judge_command").add_parser(
        "score", help="score image files against a prompt"
    )
    q.add_argument("png", nargs="+", help="image files (PNG), all of one size")
    q.add_argument("--prompt", required=True, help='e.g. "a red circle above a blue square"')
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--each", action="store_true", help="also the facts of every image")
    q.set_defaults(func=cmd_judge_score)

    p = sub.add_parser("summary", help="print the check numbers of executed notebooks")
    p.add_argument("dir", nargs="?", default="build/notebooks")
    p.set_defaults(func=cmd_summary)

    for command, (help_text, run) in COMMANDS.items():
        names = [name for name, r in recipes().items() if command in r.commands()]
        p = sub.add_parser(command, help=f"{help_text}: {', '.join(names)}")
        per_model = p.add_subparsers(dest="model", required=True)
        for name in names:
            q = per_model.add_parser(name)
            if command == "train":
                q.add_argument("--retrain", action="store_true", help="ignore the cache")
            else:
                q.add_argument("--seed", type=int, default=0, help="seeds the draw, never a model")
            if command == "sample":
                q.add_argument("--n", type=int, default=16)
                q.add_argument("--out", default="samples")
            if command == "evaluate":
                q.add_argument("--json", action="store_true", help="print one JSON object")
            for flag, spec in recipes()[name].options.get(command, {}).items():
                q.add_argument(flag, **spec)
            q.set_defaults(func=run, recipe=recipes()[name])

    p = sub.add_parser("inpaint", help="fill the dark pixels of a mask with GLIDE's inpainter")
    p.add_argument("--image", required=True, help="a PNG at the base model's resolution")
    p.add_argument("--mask", required=True, help="a PNG of the same size: dark = erase")
    p.add_argument("--prompt", required=True, help="the caption of the picture you want")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--out", default="samples")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("vary", help="variations of an image with unCLIP's decoder")
    p.add_argument("--image", required=True, help="a PNG (resized to the decoder's size)")
    p.add_argument("--eta", type=float, default=0.5, help="0: the reconstruction; 1: freer")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--out", default="samples")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_vary)

    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    previous = signal.signal(signal.SIGTERM, _terminated)  # SIGTERM stops as Ctrl-C does
    try:
        runtime.profile()  # a bad T2I_PROFILE or T2I_DATA is named before any work
        runtime.data_dir()
        if getattr(args, "prompt", None) is not None:
            with warnings.catch_warnings():  # a long prompt is cut later, with its warning
                warnings.simplefilter("ignore")
                Tokenizer().encode(args.prompt, truncate=True)  # unknown words, before training
        args.func(args)
    except ValueError as err:  # the library's own errors name the bad value: one line
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted (a model in training was saved and the next run resumes; "
            "the samples drawn so far are written)",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _terminated(signum, frame):
    """SIGTERM outside training (which saves and stops on its own): stop as Ctrl-C stops, so
    what was written stays whole and the command exits 130 with its message."""
    raise KeyboardInterrupt


def _check_arguments(parser, args) -> None:
    """Refuse, before any work, what no command can use: counts and steps below 1, a scale that
    is not a finite number, an output folder that is a file."""
    for name in ("n", "steps", "n_per_class"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
    for name in ("scale", "eta"):
        value = getattr(args, name, None)
        if value is not None and not math.isfinite(value):
            parser.error(f"--{name} must be a finite number (got {value})")
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        parser.error(f"--out {out!r} is a file, not a folder")


def cmd_inpaint(args):
    """`python -m t2i inpaint --image PNG --mask PNG --prompt TEXT --out DIR`: the mask's dark
    pixels (< 0.5) are erased and filled; both files at the base model's resolution."""
    model, diffusion = glide.GLIDE_INPAINT.load()
    image = torch.from_numpy(plot.read_pngs([args.image])).permute(0, 3, 1, 2).float() / 127.5 - 1
    mask = torch.from_numpy(plot.read_pngs([args.mask])).float().mean(-1)[:, None] / 255
    if image.shape[-1] != model.res or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"image and mask must both be {model.res}x{model.res} (got {tuple(image.shape[-2:])} "
            f"and {tuple(mask.shape[-2:])})"
        )
    mask = (mask >= 0.5).float()
    images, masks = image.repeat(args.n, 1, 1, 1), mask.repeat(args.n, 1, 1, 1)
    out = glide.inpaint(model, diffusion, images, masks, args.prompt, seed=args.seed)
    plot.save_pngs(out, args.out, "inpainted")
    print(f"{len(out)} inpainted images in {args.out}/")


def cmd_vary(args):
    """`python -m t2i vary --image PNG --eta E --n N --out DIR`: variations of an image."""
    decoder, diffusion = unclip.DECODER.load()
    image = torch.from_numpy(plot.read_pngs([args.image])).permute(0, 3, 1, 2).float() / 127.5 - 1
    if image.shape[-1] != decoder.res:
        image = F.interpolate(image, size=decoder.res, mode="area")
    out = unclip.vary(decoder, diffusion, image, eta=args.eta, n=args.n, seed=args.seed)
    plot.save_pngs(out, args.out, f"variation_eta{args.eta:g}")
    print(f"{len(out)} variations (eta = {args.eta:g}) in {args.out}/")


if __name__ == "__main__":
    sys.exit(main())
