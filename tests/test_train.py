import os
import signal

import pytest
import torch

from t2i.blocks.diffusion import GaussianDiffusion
from t2i.core import checkpoint, train


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    return tmp_path


W_TRUE = torch.tensor([[2.0, -1.0, 0.5]])


def batch_fn(step, gen):
    x = torch.randn(32, 3, generator=gen)
    return x, x @ W_TRUE.T


def mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def test_loss_falls_on_a_tiny_regression(capsys):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    hist = train.fit(model, mse, batch_fn, steps=300, lr=0.05, warmup=10, amp=False, desc="toy")
    assert hist.done and len(hist.loss) == 300
    assert sum(hist.loss[-20:]) / 20 < 0.01 * sum(hist.loss[:20]) / 20
    assert torch.allclose(model.weight, W_TRUE, atol=0.05)
    # the text line that a saved notebook keeps after its progress bar
    last = sum(hist.loss[-50:]) / 50
    assert f"toy: done, 300/300 steps, loss {last:.4f}, " in capsys.readouterr().out


def test_lr_schedule_hand_values():
    assert train.lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert train.lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert train.lr_at(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert train.lr_at(55, 100, 1.0, warmup=10) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert train.lr_at(100, 100, 1.0, warmup=10) == pytest.approx(0.1)


def test_interrupt_saves_a_loadable_checkpoint_and_the_next_run_resumes(data_dir):
    path = data_dir / "tiny.pt"
    cfg = {"steps": 50}

    def interrupting(step, gen):
        if step == 20:
            raise KeyboardInterrupt
        return batch_fn(step, gen)

    model = torch.nn.Linear(3, 1)
    with pytest.raises(KeyboardInterrupt):  # saved, then passed on: nothing uses a half model
        train.fit(model, mse, interrupting, steps=50, lr=0.05, path=path, cfg=cfg, amp=False)
    saved = checkpoint.load(path, cfg)
    assert len(saved["history"]) == 20
    assert saved["step"] == 20 and saved["done"] is False
    fresh = torch.nn.Linear(3, 1)
    fresh.load_state_dict(saved["model"])
    assert torch.equal(fresh.weight, model.weight)

    first = saved["seconds"]
    assert first > 0
    hist = train.fit(fresh, mse, batch_fn, steps=50, lr=0.05, path=path, cfg=cfg, amp=False)
    assert hist.done and len(hist.loss) == 50
    final = checkpoint.load(path, cfg)
    assert final["done"] is True
    # The recorded training time adds up both runs.
    assert final["seconds"] == pytest.approx(first + hist.seconds)


def test_resumed_run_equals_an_uninterrupted_one(data_dir):
    cfg = {"steps": 40}

    def run(interrupt_at):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        path = data_dir / f"run{interrupt_at}.pt"

        def data(step, gen):
            if step == interrupt_at:
                raise KeyboardInterrupt
            return batch_fn(step, gen)

        try:
            train.fit(model, mse, data, steps=40, lr=0.05, path=path, cfg=cfg, amp=False)
        except KeyboardInterrupt:
            pass
        if interrupt_at >= 0:
            train.fit(model, mse, batch_fn, steps=40, lr=0.05, path=path, cfg=cfg, amp=False)
        return model.weight.detach().clone()

    assert torch.allclose(run(15), run(-1), atol=1e-6)


def test_ema_weights_are_an_average():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    train.fit(model, mse, batch_fn, steps=200, lr=0.05, warmup=10, ema=0.9, amp=False)
    assert torch.allclose(model.weight, W_TRUE, atol=0.1)  # the model now holds the EMA


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.temperature = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.norm(self.lin(x)) * self.temperature


def test_no_decay_keeps_gains_biases_and_temperatures_undecayed_and_after_step_runs():
    torch.manual_seed(0)
    model = _Tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []

    def zero_loss(m, batch):  # zero gradients: AdamW moves parameters by their decay alone
        return m(batch[0]).sum() * 0

    train.fit(
        model, zero_loss, batch_fn, steps=1, lr=0.1, warmup=1, weight_decay=0.5, amp=False,
        no_decay=train.gains_and_biases, after_step=calls.append,
    )  # fmt: skip
    assert calls == [model]
    for name in ["lin.bias", "norm.weight", "norm.bias", "temperature"]:
        assert torch.equal(model.get_parameter(name).detach(), before[name]), name
    torch.testing.assert_close(model.lin.weight.detach(), before["lin.weight"] * (1 - 0.1 * 0.5))


def test_a_run_saved_with_other_param_groups_restarts_instead_of_failing(data_dir):
    path, cfg = data_dir / "groups.pt", {"steps": 20}

    def interrupting(step, gen):
        if step == 5:
            raise KeyboardInterrupt
        return batch_fn(step, gen)

    with pytest.raises(KeyboardInterrupt):
        train.fit(torch.nn.Linear(3, 1), mse, interrupting, steps=20, path=path, cfg=cfg, amp=False)
    model = torch.nn.Linear(3, 1)
    with pytest.warns(UserWarning, match="cannot be resumed"):
        hist = train.fit(
            model, mse, batch_fn, steps=20, weight_decay=0.1, no_decay=train.gains_and_biases,
            path=path, cfg=cfg, amp=False,
        )  # fmt: skip
    assert hist.done and len(hist.loss) == 20


class _Denoiser(torch.nn.Module):
    """A tiny eps-model with dropout: its training draws from torch's global generator too."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x, t):
        return self.drop(self.conv(x)) * (1 + t.float().view(-1, 1, 1, 1) / 10)


_DIFFUSION = GaussianDiffusion(T=10)


def _images(step, gen):
    return torch.rand(4, 3, 6, 6, generator=gen) * 2 - 1


def _diffusion_loss(model, x):
    return _DIFFUSION.loss(model, x)  # timesteps and noise: torch's global generator


@pytest.mark.parametrize(
    "where, saved_step",
    [("batch_fn", 5), ("loss_fn", 5), ("after_step", 6), ("ctrl-c in the update", 6)],
)
def test_interrupted_and_resumed_training_ends_bit_for_bit_as_a_straight_run(
    data_dir, where, saved_step
):
    # Ctrl-C must be Python's KeyboardInterrupt, also where the runner was started in the
    # background (which ignores SIGINT): install Python's own handler for this test.
    old_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_and_resume(data_dir, where, saved_step)
    finally:
        signal.signal(signal.SIGINT, old_sigint)


def _interrupt_and_resume(data_dir, where, saved_step):
    kw = dict(steps=12, lr=0.05, warmup=3, weight_decay=0.1, ema=0.9, amp=False, cfg={"n": 12})
    torch.manual_seed(0)
    straight = _Denoiser()
    hist = train.fit(straight, _diffusion_loss, _images, path=data_dir / "straight.pt", **kw)

    k, updates = 5, []  # interrupted in step k: before its update, or during it

    def batch_fn(step, gen):
        x = _images(step, gen)  # drawn, then interrupted
        if where == "batch_fn" and step == k:
            raise KeyboardInterrupt
        return x

    def loss_fn(model, x):
        loss = _diffusion_loss(model, x)  # noise drawn, then interrupted
        if where == "loss_fn" and len(updates) == k:
            raise KeyboardInterrupt
        return loss

    def after_step(model):
        updates.append(True)
        if len(updates) == k + 1 and where == "after_step":
            raise KeyboardInterrupt
        if len(updates) == k + 1 and where == "ctrl-c in the update":
            os.kill(os.getpid(), signal.SIGINT)

    torch.manual_seed(0)
    path = data_dir / "interrupted.pt"
    with pytest.raises(KeyboardInterrupt):
        train.fit(_Denoiser(), loss_fn, batch_fn, path=path, after_step=after_step, **kw)
    assert checkpoint.load(path)["step"] == saved_step
    torch.manual_seed(1)  # as in another process: other initial weights, other global state
    resumed = _Denoiser()
    assert train.fit(resumed, _diffusion_loss, _images, path=path, **kw).loss == hist.loss
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # the EMA weights, which the model holds at the end
    a, b = checkpoint.load(data_dir / "straight.pt"), checkpoint.load(path)
    for key in ("model", "ema", "generator", "torch_rng"):
        assert _equal(a[key], b[key]), key
    assert _equal(a["optimizer"]["state"], b["optimizer"]["state"])


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def test_sigterm_saves_like_ctrl_c_and_the_old_handler_comes_back(data_dir):
    caught = []
    old = signal.signal(signal.SIGTERM, lambda *_: caught.append(True))  # no test run killed
    try:

        def terminated_at_4(step, gen):
            if step == 4:
                os.kill(os.getpid(), signal.SIGTERM)
            return batch_fn(step, gen)

        path = data_dir / "term.pt"
        with pytest.raises(KeyboardInterrupt):
            train.fit(torch.nn.Linear(3, 1), mse, terminated_at_4, steps=10, path=path, amp=False)
        assert not caught  # fit's own handler took it
        payload = checkpoint.load(path)
        assert payload["step"] == 4 and payload["done"] is False
        os.kill(os.getpid(), signal.SIGTERM)
        assert caught == [True]  # the handler from before fit is back
    finally:
        signal.signal(signal.SIGTERM, old)


def test_the_weights_depend_on_the_seed_not_on_what_ran_before():
    # The loss draws timesteps and noise from torch's global generator: fit seeds it, so a
    # draw made before fit (another model trained in the same process) changes nothing.
    runs = []
    for before in (0, 1000):
        torch.manual_seed(0)
        model = _Denoiser()
        torch.rand(before)
        kw = dict(steps=8, lr=0.05, warmup=2, amp=False, live_plot=False)
        runs.append((train.fit(model, _diffusion_loss, _images, seed=3, **kw).loss, model))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(*(m.state_dict().values() for _, m in runs)))
    torch.manual_seed(0)
    other = train.fit(_Denoiser(), _diffusion_loss, _images, seed=4, **kw).loss
    assert other != runs[0][0]
