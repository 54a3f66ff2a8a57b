import warnings

import pytest
import torch

from t2i.core import checkpoint


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    return tmp_path


def build(cfg):
    return torch.nn.Linear(cfg["width"], 1)


def make_trainer(calls):
    def train(model, cfg, path):
        calls.append(cfg)
        with torch.no_grad():
            model.weight.fill_(cfg["value"])
        checkpoint.save(path, {"config": cfg, "model": model.state_dict(), "done": True})

    return train


def test_key_depends_on_config_only():
    a = checkpoint.key("m", {"width": 2, "seed": 0})
    assert a == checkpoint.key("m", {"seed": 0, "width": 2})
    assert a != checkpoint.key("m", {"width": 3, "seed": 0})


def test_trains_once_then_loads(data_dir):
    calls, cfg = [], {"width": 3, "value": 0.5, "seed": 0}
    m1 = checkpoint.load_or_train("lin", cfg, build, make_trainer(calls))
    m2 = checkpoint.load_or_train("lin", cfg, build, make_trainer(calls))
    assert len(calls) == 1 and not m2.training
    assert torch.equal(m1.weight, m2.weight) and (m2.weight == 0.5).all()
    other = dict(cfg, value=2.0)
    m3 = checkpoint.load_or_train("lin", other, build, make_trainer(calls))
    assert len(calls) == 2 and (m3.weight == 2.0).all()


def test_atomic_write_keeps_old_file_when_writing_fails(data_dir, monkeypatch):
    path = data_dir / "x.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(2)}})

    def broken_save(obj, f):
        open(f, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save(path, {"model": {"w": torch.zeros(2)}})
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(2))


def test_corrupt_file_warns_and_retrains(data_dir):
    calls, cfg = [], {"width": 2, "value": 1.0, "seed": 0}
    path = checkpoint.path_for("lin", cfg)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00not a checkpoint")
    with pytest.warns(UserWarning, match="could not be read"):
        model = checkpoint.load_or_train("lin", cfg, build, make_trainer(calls))
    assert len(calls) == 1 and (model.weight == 1.0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file now loads cleanly
        checkpoint.load_or_train("lin", cfg, build, make_trainer(calls))
    assert len(calls) == 1


def test_file_that_does_not_fit_the_model_warns_and_retrains(data_dir):
    calls, cfg = [], {"width": 2, "value": 1.0, "seed": 0}
    path = checkpoint.path_for("lin", cfg)
    checkpoint.save(path, {"config": cfg, "model": {"weight": torch.ones(5, 5)}, "done": True})
    with pytest.warns(UserWarning, match="does not fit"):
        checkpoint.load_or_train("lin", cfg, build, make_trainer(calls))
    assert len(calls) == 1


def test_code_in_a_checkpoint_is_refused(data_dir):
    path = data_dir / "evil.pt"
    torch.save({"model": {}, "x": warnings.catch_warnings}, path)  # a class, not plain data
    with pytest.warns(UserWarning, match="could not be read"):
        assert checkpoint.load(path) is None


def test_a_model_built_on_another_is_the_same_whether_that_one_was_cached_or_trained(data_dir):
    # The outer model's build loads an inner one (as unCLIP's decoder loads GLIDE's base) and
    # then initialises a layer of its own from the random state: training the inner one on the
    # way (which draws random numbers) must not change that layer.
    def train_inner(model, cfg, path):
        torch.randn(1000)  # training draws
        checkpoint.save(path, {"config": cfg, "model": model.state_dict(), "done": True})

    def build_outer(cfg):
        inner = checkpoint.load_or_train("inner", {"width": 3, "seed": 1}, build, train_inner)
        return torch.nn.Sequential(inner, torch.nn.Linear(1, 2))

    def train_outer(model, cfg, path):
        checkpoint.save(path, {"config": cfg, "model": model.state_dict(), "done": True})

    outer_cfg = {"seed": 2}
    trained_on_the_way = checkpoint.load_or_train("outer", outer_cfg, build_outer, train_outer)
    checkpoint.path_for("outer", outer_cfg).unlink()  # the inner one stays cached
    inner_cached = checkpoint.load_or_train("outer", outer_cfg, build_outer, train_outer)
    assert torch.equal(trained_on_the_way[1].weight, inner_cached[1].weight)
    # ... and the caller's random state is left as it was.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    checkpoint.load_or_train("outer", outer_cfg, build_outer, train_outer)
    assert torch.equal(torch.rand(3), expected)
