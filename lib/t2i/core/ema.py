"""An exponential moving average (EMA) of a model's weights, which `t2i.core.train.fit` keeps."""

from __future__ import annotations

import copy

import torch


class EMA:
    """A frozen copy of the model whose parameters follow the model's as an EMA with decay
    min(decay, (1 + step) / (10 + step)): short at first, so early weights fade fast. Buffers
    (e.g. BatchNorm statistics) are copied as they are."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Put the averaged weights into model."""
        model.load_state_dict(self.model.state_dict())
