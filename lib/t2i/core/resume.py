"""What lets `t2i.core.train.fit` stop anywhere and later end with the very weights of a run that
never stopped: a checkpoint of the model, its EMA, the optimizer and every random generator a
step draws from, taken between two steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from t2i.core import checkpoint, runtime
from t2i.core.ema import EMA


@dataclass
class TrainState:
    """A run's state that a checkpoint holds besides its config and history."""

    model: torch.nn.Module
    ema: EMA | None
    opt: torch.optim.Optimizer
    gen: torch.Generator  # the data's
    dev: torch.device

    def random_state(self) -> dict:
        """The random state a step starts from: the data's generator, and torch's global ones,
        which losses (timesteps, noise) and dropout draw from."""
        state = {"generator": self.gen.get_state(), "torch_rng": torch.get_rng_state()}
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.dev)
        return state

    def resume(self, path: Path, cfg: dict | None) -> dict | None:
        """Load the unfinished run of cfg saved at path, if there is one, and return its
        checkpoint; None if there is none, or it does not fit (it is then trained anew)."""
        saved = checkpoint.load(path, cfg)
        if saved is None or saved.get("done"):
            return None
        why = checkpoint.mismatch(self.model, saved["model"])
        if why is not None:
            checkpoint.set_aside(path, f"does not fit the model ({why})")
            return None
        if not self._load_optimizer(saved, path):
            return None
        self.model.load_state_dict(saved["model"])
        if self.ema is not None and saved.get("ema"):
            self.ema.load_state_dict(saved["ema"])
        self._set_random_state(saved)
        return saved

    def save(self, path, cfg, random_state, step, history, seconds, done) -> None:
        """Write the checkpoint (atomically), random_state being the one step `step` starts
        from."""
        checkpoint.save(
            path,
            {
                "config": cfg or {},
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.opt.state_dict(),
                **random_state,
                "step": step,
                "history": history,
                "seconds": seconds,
                "done": done,
            },
        )

    def _load_optimizer(self, saved, path) -> bool:
        """Load the optimizer state; False (with a warning) if it does not fit, e.g. a run saved
        before its parameters were split into decay groups."""
        try:
            self.opt.load_state_dict(saved["optimizer"])
            return True
        except ValueError as err:
            runtime.warn(f"{path} cannot be resumed ({err}); training from the start")
            return False

    def _set_random_state(self, saved: dict) -> None:
        """Restore `random_state` (a checkpoint from before it kept only the data's)."""
        self.gen.set_state(saved["generator"])
        if "torch_rng" in saved:
            torch.set_rng_state(saved["torch_rng"])
        if "cuda_rng" in saved and self.dev.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.dev)
