"""Profiles, paths and devices: the one switch that sizes everything in the course.

T2I_PROFILE picks the sizes of data, models and training:
  smoke  seconds, for unit tests;
  cpu    a laptop CPU: each notebook in a few minutes, results that visibly work;
  gpu    one GPU: bigger models, 64x64 images, better results.
The default is gpu when CUDA is available, else cpu. T2I_DATA (default: the repository's data/)
holds generated datasets and trained checkpoints. T2I_AMP=0 turns bf16 autocast off.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import warnings
from pathlib import Path

import numpy as np
import torch


class CourseWarning(UserWarning):
    """What the course's library warns of (a cache file retrained, a caption cut, images in
    the wrong range): shown as one line, without the library's file path and source line."""


def warn(message: str) -> None:
    warnings.warn(message, CourseWarning, stacklevel=2)


def _format_warning(message, category, filename, lineno, line=None, plain=warnings.formatwarning):
    if issubclass(category, CourseWarning):
        return f"warning: {message}\n"
    return plain(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning

PROFILES = ("smoke", "cpu", "gpu")


def profile() -> str:
    """The active profile, from T2I_PROFILE or the device."""
    name = os.environ.get("T2I_PROFILE") or ("gpu" if torch.cuda.is_available() else "cpu")
    if name not in PROFILES:
        raise ValueError(f"T2I_PROFILE={name!r} is not one of {PROFILES}")
    return name


def pick(smoke, cpu, gpu):
    """The value for the active profile: pick(smoke=..., cpu=..., gpu=...)."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[profile()]


def image_size() -> int:
    """Side of the course's images: 32 on smoke and cpu, 64 on gpu."""
    return pick(smoke=32, cpu=32, gpu=64)


def data_dir() -> Path:
    """Where datasets and checkpoints live (created on first use)."""
    default = Path(__file__).resolve().parents[3] / "data"  # lib/t2i/core/runtime.py
    if not (default.parent / "pyproject.toml").exists():  # installed elsewhere than a checkout
        default = Path.cwd() / "data"
    value = os.environ.get("T2I_DATA")
    if value is not None and not value.strip():
        raise ValueError("T2I_DATA is set but empty: unset it, or name a folder")
    path = Path(value) if value is not None else default
    if path.exists() and not path.is_dir():
        raise ValueError(f"T2I_DATA={str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the data folder {str(path)!r}: {err.strerror}") from err
    if not os.access(path, os.W_OK):
        raise ValueError(f"the data folder {str(path)!r} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: Path):
    """Write `path` atomically: the block writes the temporary path it is given (in the same
    folder, named for this process and call, so concurrent writers never share one), which then
    replaces `path` in one rename; readers see the old file or the new one, never half of one.
    If the block fails, the temporary file is removed and `path` left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bf16_supported(dev: torch.device) -> bool:
    """Whether bfloat16 autocast is fast here: CUDA with bf16, or a CPU with AVX-512 BF16 or AMX
    (many laptops have neither, and there bf16 is slower than fp32). T2I_AMP=0 turns it off, to
    time what a CPU without bf16 units does (see benchmarks/README.md)."""
    if os.environ.get("T2I_AMP", "1") == "0":
        return False
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        cpu = torch.cpu
        return bool(
            getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        )
    return False


def autocast(dev: torch.device, enabled: bool = True):
    """bf16 autocast where it is supported and fast, else a no-op context."""
    if enabled and bf16_supported(dev):
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def random_state_kept():
    """Run the block, then put Python's, numpy's and torch's random states back as they were."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_of(module: torch.nn.Module) -> torch.device:
    """The device a model's weights are on (where its inputs must go)."""
    return next(module.parameters()).device
