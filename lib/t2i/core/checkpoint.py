"""The checkpoint cache: trained models stored under data/checkpoints, keyed by their config.

A later notebook reuses what an earlier one trained; a notebook whose cache is empty trains what
it needs itself. Files are written atomically (a temporary file, then a rename) and read with
`weights_only=True`, so a checkpoint can hold tensors and plain data but never run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from t2i.core import runtime


def key(name: str, cfg: dict) -> str:
    """A file stem naming the model and a hash of its configuration."""
    digest = hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}-{digest[:10]}"


def path_for(name: str, cfg: dict) -> Path:
    return runtime.data_dir() / "checkpoints" / f"{key(name, cfg)}.pt"


def save(path: Path, payload: dict) -> None:
    """Write atomically (`runtime.atomic_path`)."""
    with runtime.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: Path, cfg: dict | None = None) -> dict | None:
    """The checkpoint's contents, or None (with a warning saying why) if it is missing,
    unreadable, or was trained with another configuration."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, or not a checkpoint at all
        runtime.warn(
            f"checkpoint {path} could not be read ({type(err).__name__}); it will be retrained"
        )
        return None
    if not isinstance(payload, dict) or "model" not in payload:
        runtime.warn(f"{path} is not a t2i checkpoint; it will be retrained")
        return None
    if cfg is not None and payload.get("config") != json.loads(json.dumps(cfg, default=str)):
        runtime.warn(f"{path} was trained with another configuration; it will be retrained")
        return None
    return payload


def mismatch(model: torch.nn.Module, state: dict) -> str | None:
    """Why a state dict does not fit the model (a key missing or extra, a shape), or None."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        return f"missing {missing[:3]}, unexpected {extra[:3]}"
    for k, v in own.items():
        if tuple(v.shape) != tuple(state[k].shape):
            return f"{k} is {tuple(state[k].shape)}, the model's {tuple(v.shape)}"
    return None


def set_aside(path: Path, why: str, then: str = "retraining") -> None:
    """Rename a cache file that cannot be used to NAME.misfit (kept for a look, never read),
    with a warning that names it, says why, and what happens `then`."""
    aside = path.with_suffix(".misfit")
    runtime.warn(f"{path} {why}: set aside as {aside.name}, {then}")
    path.replace(aside)


def load_or_train(
    name: str,
    cfg: dict,
    build: Callable[[dict], torch.nn.Module],
    train: Callable[[torch.nn.Module, dict, Path], None],
    retrain: bool = False,
) -> torch.nn.Module:
    """The model `name` with configuration `cfg`: from the cache if a finished checkpoint is
    there, else built (seeded by cfg["seed"]) and trained by `train(model, cfg, path)`, which
    writes the checkpoint (see `t2i.core.train.fit`). An interrupted run resumes where it stopped.
    The model comes back in eval mode on the course's device.
    The random state of the caller is the same afterwards as before: a model whose `build`
    loads another (unCLIP's decoder starts from GLIDE's base) is initialised the same whether
    that one came from the cache or was trained on the way.
    """
    with runtime.random_state_kept():
        return _load_or_train(name, cfg, build, train, retrain)


def _load_or_train(name, cfg, build, train, retrain):
    path = path_for(name, cfg)
    runtime.seed_everything(cfg.get("seed", 0))
    model = build(cfg).to(runtime.device())
    payload = None if retrain else load(path, cfg)
    if payload is not None and payload.get("done"):
        state = payload.get("ema") or payload["model"]
        why = mismatch(model, state)
        if why is None:
            model.load_state_dict(state)
            return model.eval()
        set_aside(path, f"does not fit the model ({why})")
    if retrain and path.exists():
        path.unlink()
    train(model, cfg, path)
    return model.eval()


def training_seconds(name: str, cfg: dict) -> float:
    """How long the cached model `name` with configuration `cfg` took to train (its runs added
    up), as its checkpoint records; NaN where it is not cached or predates the record."""
    payload = load(path_for(name, cfg), cfg)
    return float(payload.get("seconds", float("nan"))) if payload else float("nan")
