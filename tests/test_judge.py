import json

import numpy as np
import pytest
import torch

from t2i.core import stats
from t2i.front import cli, plot
from t2i.world import classes, datasets, grammar, judge, junk, shapes


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
    assert f"{stats.Rate(8, 10).interval()}" == "[0.490, 0.943]"  # as a sentence prints it
    assert repr(stats.Rate(8, 10)) == "0.800 [0.490, 0.943] (n=10)"
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


def _parse_before_issue_15(text):
    """`grammar.parse_caption` as it was before issue 15 (whitespace split, unknown words
    ignored): the reference the tokenizer-rules parser must match on every course caption."""
    words = text.lower().replace(",", " , ").split()
    facts = grammar.CaptionFacts()
    i = 0
    while i < len(words):
        w = words[i]
        if w in shapes.COLORS:
            obj = {"color": w}
            if i > 0 and words[i - 1] in shapes.SIZES:
                obj["size"] = words[i - 1]
            if i + 1 < len(words) and words[i + 1] in shapes.SHAPES:
                obj["shape"] = words[i + 1]
                i += 1
            facts.objects.append(obj)
        elif w in shapes.SHAPES:
            obj = {"shape": w}
            if i > 0 and words[i - 1] in shapes.SIZES:
                obj["size"] = words[i - 1]
            facts.objects.append(obj)
        i += 1
    rest = " ".join(words)
    for name, phrases in grammar._RELATION_PHRASES.items():
        if any(f" {p} " in f" {rest} " for p in phrases):
            facts.relation = name
    if len(facts.objects) == 1:
        facts.objects[0]["position"] = grammar._find_position(rest)
        if facts.objects[0]["position"] is None:
            del facts.objects[0]["position"]
    return facts


def _course_captions() -> list[str]:
    """Every kind of caption the course writes: the grammar's (every split and count), partial
    ones, GLIDE's and DALL-E's prompt sets, the label model's, and the junk kinds'."""
    from t2i import ch02_dalle as dalle

    caps = []
    for split in ("train", "test", "heldout"):
        caps += grammar.caption(shapes.sample_scenes(2000, seed=21, split=split), seed=21)
    s = shapes.sample_scenes(600, seed=22, counts=(1, 2))
    rng = np.random.default_rng(22)
    keeps = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]
    caps += [grammar.partial_caption(s, i, keeps[i % 8], rng) for i in range(len(s))]
    for counts, partial in [((1,), False), ((1,), True), ((2,), True), ((1, 2, 3), False)]:
        caps += grammar.eval_prompts(300, seed=23, counts=counts, partial=partial)
    caps += [c for group in dalle.prompt_set().values() for c in group]
    caps += [classes.caption_of(v) for v in range(classes.NULL)]
    caps += [c for kind in junk.KINDS for c in junk.make(kind, 40, 16, seed=24)[1]]
    return caps


def test_tokenizer_rules_parse_every_course_caption_as_before():
    captions = _course_captions()
    assert len(captions) > 8000
    for text in captions:
        assert grammar.parse_caption(text) == _parse_before_issue_15(text), text


def test_scores_of_rendered_scenes_are_unchanged():
    s = shapes.sample_scenes(300, seed=25, split="test")
    captions = grammar.caption(s, seed=25)
    x = shapes.render_tensor(s, 32)
    x[::3] += 0.3 * torch.randn(x[::3].shape, generator=torch.Generator().manual_seed(0))
    reading = judge.read(x)
    before = [judge.check(reading, i, _parse_before_issue_15(c)) for i, c in enumerate(captions)]
    assert judge.score_each(x, captions) == before
    assert not all(r["all"] for r in before) and any(r["all"] for r in before)


def test_captions_read_as_the_tokenizer_splits_them():
    img = shapes.render(_scene([("red", "circle", "large", 4)]))
    plain = judge.score_each(img, ["a red circle"])[0]
    assert plain["shape"] and plain["all"]
    for text in ["a red circle.", "A RED CIRCLE!", "a red-circle", " a  red\tcircle "]:
        assert judge.score_each(img, [text])[0] == plain, text


def test_fact_rate_counts_facts_not_images():
    # Two clean renders, each caption stating 6 facts (colour, shape, size, position, count,
    # clean). With the second caption's colour wrong, 11 of the 12 facts hold, and 1 of the 2
    # images has all of its facts right.
    data = datasets.make_dataset(2, res=32, seed=3, counts=(1,))
    x = data.tensor()
    assert judge.fact_rate(x, data.captions) == 1.0
    second = data.captions[1]
    colour = next(c for c in shapes.COLOR_NAMES if f" {c} " in second)
    other = next(c for c in shapes.COLOR_NAMES if c != colour)
    wrong = [data.captions[0], second.replace(f" {colour} ", f" {other} ")]
    assert judge.fact_rate(x, wrong) == pytest.approx(11 / 12)
    assert judge.score(x, wrong)["all"] == 0.5


def test_marks_tick_the_images_whose_caption_holds():
    s = shapes.sample_scenes(6, seed=3, counts=(1,))
    images, captions = shapes.render_tensor(s, 32), grammar.caption(s, seed=3)
    swapped = captions[1:] + captions[:1]  # each image with another scene's caption
    assert judge.marks(images, captions) == [True] * 6
    marks = judge.marks(images, swapped)
    assert marks == [r["all"] for r in judge.score_each(images, swapped)] and not all(marks)


def test_grid_titles_carry_the_marks_and_column_titles_head_the_rows():
    x = torch.zeros(3, 3, 8, 8)
    fig = plot.show_grid(x, ["a", "b", "c"], ncols=3, marks=[True, False, True])
    assert [ax.get_title() for ax in fig.axes] == ["✓ a", "✗ b", "✓ c"]
    fig = plot.before_after({"a long label that must wrap": x}, titles=["t = 0", "t = 1", "t = 2"])
    assert [ax.get_title() for ax in fig.axes] == ["t = 0", "t = 1", "t = 2"]
    assert "\n" in fig.axes[0].get_ylabel()


def test_off_palette_is_zero_on_the_worlds_colours_and_grows_with_noise():
    flat = torch.tensor([*shapes.COLORS.values(), shapes.BACKGROUND], dtype=torch.float32)
    x = (flat / 127.5 - 1)[:, :, None, None].expand(-1, -1, 8, 8)  # one flat image per colour
    assert torch.allclose(judge.off_palette(x), torch.zeros(len(x)), atol=1e-6)
    # The background lifted by 0.03 in each channel ([0, 1] RGB): off by sqrt(3) * 0.03.
    lifted = x[-1:] + 2 * 0.03
    assert torch.allclose(judge.off_palette(lifted), torch.tensor([3**0.5 * 0.03]), atol=1e-5)
    renders = shapes.render_tensor(shapes.sample_scenes(32, seed=1, counts=(1,)), 16)
    edges = judge.off_palette(renders)
    noisy = judge.off_palette((renders + 0.2 * torch.randn_like(renders)).clamp(-1, 1))
    assert (edges < 0.03).all() and (noisy > 3 * edges).all()
