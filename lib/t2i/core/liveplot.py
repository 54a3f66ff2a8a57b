"""A loss curve that `t2i.core.train.fit` redraws in place while it trains in a notebook."""

from __future__ import annotations

import time

import torch


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel, where a figure can be redrawn in place."""
    try:
        from IPython import get_ipython

        return get_ipython() is not None and "IPKernelApp" in get_ipython().config
    except ImportError:
        return False


class LivePlot:
    """A loss curve redrawn in place in a notebook, at most every `every` seconds, and no more
    than `share` of the time: a redraw (plot, layout, PNG) takes a quarter of a second on a
    2-core laptop; every 5 s, it slowed notebook 06's base model down by 7-13%."""

    def __init__(self, title: str, every: float = 5.0, share: float = 0.02):
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.fig, self.ax = plt.subplots(figsize=(5, 2.5))
        self.title, self.every, self.share, self.last = title, every, share, 0.0
        self.handle = display(self.fig, display_id=True)
        plt.close(self.fig)

    def update(self, losses, force=False):
        now = time.perf_counter()
        if not losses or (not force and now - self.last < self.every):
            return
        self._draw(losses)
        self.last = time.perf_counter()
        self.every = max(self.every, (self.last - now) / self.share)

    def _draw(self, losses):
        self.ax.clear()
        self.ax.plot(losses, lw=0.5, alpha=0.4, color="C0")
        k = max(1, len(losses) // 50)
        if len(losses) > k:
            smooth = torch.tensor(losses).unfold(0, k, 1).mean(1)
            self.ax.plot(range(k - 1, len(losses)), smooth, color="C0")
        self.ax.set(title=self.title, xlabel="step", ylabel="loss", yscale="log")
        self.fig.tight_layout()
        self.handle.update(self.fig)
