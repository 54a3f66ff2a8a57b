import json

import numpy as np
import pytest
import torch

from t2i import cli, judge, junk, plot, shapes, stats


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
        "clean": True,
        "binding": True,
        "relation": True,
        "all": True,
    }
    # Colour and shape are read from the same object: the swapped caption is not half right.
    swapped = judge.score_each(img, ["a red square to the left of a blue circle"])[0]
    assert swapped["color"] and not swapped["shape"] and not swapped["binding"]
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
    assert not r["color"] and r["shape"] and r["size"] and not r["all"]
    blank = np.full((1, 32, 32, 3), shapes.BACKGROUND, dtype=np.uint8)
    assert judge.score_each(blank, ["a red circle"])[0] == {
        "color": False,
        "shape": False,
        "count": False,
        "clean": True,
        "all": False,
    }


def test_one_object_prompt_is_read_from_one_object():
    # a red square and a blue circle: "a red circle" is not there, though red and circle are
    img = shapes.render(_scene([("red", "square", "large", 0), ("blue", "circle", "large", 8)]))
    r = judge.score_each(img, ["a red circle"])[0]
    assert not (r["color"] and r["shape"]) and not r["count"] and not r["all"]
    assert judge.score_each(img, ["a red square"])[0]["color"]


@pytest.mark.parametrize("res", [16, 32, 64])
@pytest.mark.parametrize("kind", list(junk.KINDS))
def test_judge_says_no_to_junk(kind, res):
    images, captions, false_facts = junk.make(kind, 200, res, seed=5)
    rows = judge.score_each(images, captions)
    for fact in false_facts:
        said_no = np.mean([not r[fact] for r in rows])
        assert said_no >= 0.99, (kind, res, fact, said_no)


def test_junk_keeps_the_true_facts():
    # the one-fact junk kinds leave the other facts true: the judge is not just saying no
    for kind, keep in [
        ("wrong colour", "shape"),
        ("wrong shape", "color"),
        ("extra object", "color"),
    ]:
        images, captions, _ = junk.make(kind, 100, 32, seed=6)
        assert judge.score(images, captions)[keep] >= 0.99, kind


def test_score_table_fractions():
    s = _scene([("red", "circle", "large", 4)])
    img = np.repeat(shapes.render(s), 4, axis=0)
    caps = ["a red circle", "a red circle", "a red square", "a blue square"]
    table = judge.score(img, caps)
    assert table["n"] == 4
    assert table["color"] == 0.75 and table["shape"] == 0.5 and table["all"] == 0.5
    assert (table["color"].k, table["color"].n) == (3, 4)
    with pytest.raises(ValueError, match="4 images but 3 captions"):
        judge.score(img, caps[:3])


def test_wilson_interval_matches_hand_computation():
    # 8 of 10: centre (8 + 1.92) / 13.84 = 0.7168, half 1.96 * sqrt(1.6 + 0.96) / 13.84 = 0.2266
    lo, hi = stats.wilson(8, 10)
    assert abs(lo - 0.4902) < 1e-3 and abs(hi - 0.9433) < 1e-3
    assert stats.wilson(0, 20)[0] == 0.0 and stats.wilson(20, 20)[1] == 1.0
    r = stats.Rate(3, 4)
    assert r == 0.75 and r + 0.25 == 1.0 and r.interval() == stats.wilson(3, 4)
    assert stats.differ(stats.Rate(95, 100), stats.Rate(50, 100))
    assert not stats.differ(stats.Rate(9, 10), stats.Rate(8, 10))


def test_cli_scores_png_files(tmp_path, capsys):
    s = _scene([("red", "circle", "large", 4)])
    good = plot.save_pngs(shapes.render(s), str(tmp_path), "good")
    noise = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    bad = plot.save_pngs(noise, str(tmp_path), "noise")
    paths = [str(p) for p in good + bad]
    cli.main(["judge", "score", *paths, "--prompt", "a red circle", "--json", "--each"])
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["color"] == 0.5 and out["all"] == 0.5
    assert out["images"][0]["all"] and not out["images"][1]["color"]
    lo, hi = out["interval95"]["all"]
    assert lo < 0.5 < hi


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
