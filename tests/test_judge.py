import numpy as np
import pytest
import torch

from t2i import judge, shapes


@pytest.mark.parametrize("res", [16, 32, 64])
def test_judge_reads_fresh_renders(res):
    s = shapes.sample_scenes(300, seed=99, split="test")
    acc = judge.accuracy_vs_truth(shapes.render(s, res), s)
    assert set(acc) == set(judge.FACTS)
    assert min(acc.values()) >= 0.99, acc


def _scene(objs, relation=-1):
    """A Scenes with one scene from [(color, shape, size, cell), ...]."""
    n = len(objs)
    pad = lambda v, fill: np.array([v + [fill] * (3 - n)])
    cells = [o[3] for o in objs]
    centers = shapes.CELL_CENTERS
    return shapes.Scenes(
        np.array([n]),
        pad([shapes.COLOR_NAMES.index(o[0]) for o in objs], -1),
        pad([shapes.SHAPES.index(o[1]) for o in objs], -1),
        pad([shapes.SIZES.index(o[2]) for o in objs], -1),
        pad(cells, -1),
        pad([centers[c % 3] for c in cells], np.nan),
        pad([centers[c // 3] for c in cells], np.nan),
        np.array([relation]),
    )


def test_binding_and_relation_are_checked():
    # red circle on the left (cell 3), blue square on the right (cell 5)
    img = shapes.render(_scene([("red", "circle", "large", 3), ("blue", "square", "large", 5)], 0))
    ok = judge.score_each(img, ["a red circle to the left of a blue square"])[0]
    assert ok == {
        "color": True,
        "shape": True,
        "count": True,
        "binding": True,
        "relation": True,
        "all": True,
    }
    swapped = judge.score_each(img, ["a red square to the left of a blue circle"])[0]
    assert swapped["color"] and swapped["shape"] and not swapped["binding"]
    assert not swapped["all"]
    wrong_side = judge.score_each(img, ["a red circle to the right of a blue square"])[0]
    assert wrong_side["binding"] and not wrong_side["relation"]


def test_size_position_and_missing_objects():
    img = shapes.render(_scene([("green", "triangle", "small", 0)]))
    r = judge.score_each(img, ["a small green triangle at the top left"])[0]
    assert r["all"]
    r = judge.score_each(img, ["a large green triangle at the bottom right"])[0]
    assert r["color"] and r["shape"] and not r["size"] and not r["position"]
    r = judge.score_each(img, ["a small yellow triangle at the top left"])[0]
    assert not r["color"] and r["shape"] and not r["size"] and not r["all"]
    blank = np.full((1, 32, 32, 3), shapes.BACKGROUND, dtype=np.uint8)
    assert judge.score_each(blank, ["a red circle"])[0] == {
        "color": False,
        "shape": False,
        "count": False,
        "all": False,
    }


def test_score_table_fractions():
    s = _scene([("red", "circle", "large", 4)])
    img = np.repeat(shapes.render(s), 4, axis=0)
    caps = ["a red circle", "a red circle", "a red square", "a blue square"]
    table = judge.score(img, caps)
    assert table["n"] == 4
    assert table["color"] == 0.75 and table["shape"] == 0.5 and table["all"] == 0.5


def test_float_tensors_and_uint8_agree():
    s = shapes.sample_scenes(50, seed=1)
    img = shapes.render(s, 32)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1
    a, b = judge.read(img), judge.read(x)
    assert np.array_equal(a.present, b.present) and np.array_equal(a.shape, b.shape)


def test_blur_keeps_mean_and_smooths():
    x = torch.zeros(1, 3, 9, 9)
    x[..., 4, 4] = 1.0
    y = judge.blur(x, 1.0)
    assert torch.allclose(y.sum(), x.sum(), atol=1e-4) and y.max() < 0.2
