import numpy as np
import pytest

from t2i.world import datasets, grammar, shapes


def test_same_seed_same_data_other_seed_other_data():
    a = datasets.make_dataset(200, 32, seed=3)
    b = datasets.make_dataset(200, 32, seed=3)
    c = datasets.make_dataset(200, 32, seed=4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)


def test_images_shape_dtype_and_background():
    ds = datasets.make_dataset(50, 64, seed=0)
    assert ds.images.shape == (50, 64, 64, 3) and ds.images.dtype == np.uint8
    assert tuple(ds.images[0, 0, 0]) == shapes.BACKGROUND  # corners are never covered
    x = ds.tensor()
    assert x.shape == (50, 3, 64, 64) and -1 <= x.min() and x.max() <= 1


def test_public_vocabulary():
    assert len(shapes.COLORS) >= 6 and len(shapes.SIZES) == 2
    assert {"circle", "square", "triangle"} <= set(shapes.SHAPES)
    assert all(len(rgb) == 3 and all(0 <= v <= 255 for v in rgb) for rgb in shapes.COLORS.values())


def _has_pair(s, i, pair):
    return any(
        shapes.COLOR_NAMES[s.color[i, j]] == pair[0] and shapes.SHAPES[s.shape[i, j]] == pair[1]
        for j in range(s.count[i])
    )


def _is_held_out(s, i):
    if any(_has_pair(s, i, p) for p in shapes.HELD_OUT_PAIRS):
        return True
    return any(_has_pair(s, i, a) and _has_pair(s, i, b) for a, b in shapes.HELD_OUT_COMBOS)


@pytest.mark.parametrize("split", ["train", "test"])
def test_training_splits_never_contain_held_out_compositions(split):
    s = shapes.sample_scenes(5000, seed=1, split=split)
    assert not any(_is_held_out(s, i) for i in range(len(s)))


def test_held_out_split_always_contains_one_and_covers_both_kinds():
    s = shapes.sample_scenes(2000, seed=2, split="heldout")
    assert all(_is_held_out(s, i) for i in range(len(s)))
    combo = shapes.HELD_OUT_COMBOS[0]
    assert any(_has_pair(s, i, combo[0]) and _has_pair(s, i, combo[1]) for i in range(len(s)))
    for i in range(len(s)):  # planting keeps colours distinct within a scene
        colors = s.color[i, : s.count[i]]
        assert len(set(colors)) == len(colors)


def test_caption_states_the_scene():
    s = shapes.sample_scenes(1000, seed=5)
    caps = grammar.caption(s, seed=5)
    for i, text in enumerate(caps):
        facts = grammar.parse_caption(text)
        truth = s.objects(i)
        assert len(facts.objects) == len(truth), text
        for said, true in zip(facts.objects, truth):
            for key, value in said.items():
                assert value == true[key], (text, key)
        if facts.relation is not None:
            assert facts.relation == shapes.RELATIONS[s.relation[i]], text


def test_alone_captions_one_object_of_each_scene_and_renders_it_alone():
    s = shapes.sample_scenes(200, seed=6, counts=(1, 2))
    one = shapes.alone(s, 1)
    assert (one.count == 1).all() and (one.relation == -1).all()
    for i, text in enumerate(grammar.caption(one, seed=6)):
        j = min(1, s.count[i] - 1)  # object 1, or object 0 where there is no second
        (said,) = grammar.parse_caption(text).objects
        assert said == {k: v for k, v in s.objects(i)[j].items() if k in said}, text
        assert set(said) == {"color", "shape", "size", "position"}
    # Rendered alone, a two-object scene's object 1 is its image minus object 0's pixels.
    two = np.flatnonzero(s.count == 2)[:5]
    both, alone1, alone0 = (shapes.render(x[two], 16) for x in (s, one, shapes.alone(s, 0)))
    background = alone1[0, 0, 0]
    drawn0 = (alone0 != background).any(-1)
    np.testing.assert_array_equal(alone1[~drawn0], both[~drawn0])


def test_relation_matches_geometry():
    s = shapes.sample_scenes(2000, seed=6, counts=(2,))
    for i in range(len(s)):
        dx, dy = s.cx[i, 0] - s.cx[i, 1], s.cy[i, 0] - s.cy[i, 1]
        rel = shapes.RELATIONS[s.relation[i]]
        assert {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[rel]


def _half_extents(shape, r):
    """Half width and half height of an object's bounding box, centred on (cx, cy)."""
    R = shapes.TRIANGLE_CIRCUM * r
    return {
        "circle": (r, r),
        "square": (shapes.SQUARE_HALF * r, shapes.SQUARE_HALF * r),
        "triangle": (R * np.sqrt(3) / 2, 0.75 * R),
    }[shape]


def test_objects_stay_inside_and_never_overlap():
    s = shapes.sample_scenes(3000, seed=7)
    for i in range(len(s)):
        boxes = []
        for j in range(s.count[i]):
            hw, hh = _half_extents(shapes.SHAPES[s.shape[i, j]], shapes.RADII[s.size[i, j]])
            box = (s.cx[i, j] - hw, s.cx[i, j] + hw, s.cy[i, j] - hh, s.cy[i, j] + hh)
            assert box[0] > -0.01 and box[1] < 1.01 and box[2] > -0.01 and box[3] < 1.01
            for o in boxes:
                assert box[1] < o[0] or o[1] < box[0] or box[3] < o[2] or o[3] < box[2]
            boxes.append(box)


def test_position_phrases_parse():
    assert grammar.parse_caption("a small red circle at the top left").objects[0]["position"] == (
        "top left"
    )
    assert grammar.parse_caption("a blue square in the middle").objects[0]["position"] == "center"
    assert grammar.parse_caption("a blue square at the top").objects[0]["position"] == "top"
    with pytest.raises(ValueError, match="no object"):
        grammar.parse_caption("a picture at the top")
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['all', 'nothing'\]"):
        grammar.parse_caption("nothing at all")


def test_load_dataset_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    a = datasets.load_dataset(64, 16, seed=1)
    files = list((tmp_path / "datasets").glob("*.npz"))
    assert len(files) == 1
    b = datasets.load_dataset(64, 16, seed=1)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert np.array_equal(a.scenes.cx, b.scenes.cx, equal_nan=True)


def test_held_out_scenes_are_found_in_the_held_out_split_and_never_in_train():
    train = shapes.sample_scenes(2000, seed=0, split="train")
    held = shapes.sample_scenes(200, seed=0, split="heldout")
    assert not shapes.held_out_scenes(train).any()
    assert shapes.held_out_scenes(held).all()
