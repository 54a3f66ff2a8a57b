"""CLIP (t2i.ch03_clip) and the typographic attack's font (t2i.world.typography), at the smoke
profile."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2i import ch03_clip as clip
from t2i.ch03_clip import model as clip_model
from t2i.ch03_clip import uses as clip_uses
from t2i.world import judge, shapes, typography
from t2i.world.prompts import TOKENIZER


@pytest.fixture(autouse=True)
def smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_PROFILE", "smoke")
    monkeypatch.setenv("T2I_DATA", str(tmp_path))


def small_clip():
    torch.manual_seed(0)
    return clip.build(clip.default_config()).eval()


def test_loss_is_symmetric_and_log_batch_for_random_embeddings():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 16, generator=g)
    assert torch.allclose(clip.contrastive_loss(logits), clip.contrastive_loss(logits.T))
    # Random unit vectors in a high dimension are nearly orthogonal: at scale 1 every logit is
    # about 0, so each row's softmax is about uniform and the loss is about log(batch).
    a = F.normalize(torch.randn(64, 2048, generator=g), dim=-1)
    b = F.normalize(torch.randn(64, 2048, generator=g), dim=-1)
    assert clip.contrastive_loss(a @ b.T).item() == pytest.approx(math.log(64), abs=0.02)


def test_loss_by_hand_with_a_duplicate():
    # Two images, two identical captions: with the duplicate-aware target each row is uniform
    # over both, so equal logits give the minimum, log(1) + entropy = log 2, in both directions.
    logits = torch.tensor([[3.0, 3.0], [3.0, 3.0]])
    both = torch.ones(2, 2, dtype=torch.bool)
    assert clip.contrastive_loss(logits, both).item() == pytest.approx(math.log(2), abs=1e-6)
    # With the plain target the same logits cost log 2 as well, but a model that separates
    # the duplicates is rewarded only by the plain target.
    sharp = torch.tensor([[9.0, 0.0], [0.0, 9.0]])
    assert clip.contrastive_loss(sharp).item() < 0.01
    assert clip.contrastive_loss(sharp, both).item() > 3.0


def test_logit_scale_init_and_clamp():
    model = small_clip()
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0)


def test_eot_pooling_picks_the_eot_position():
    tokens = TOKENIZER(["a red circle", "there is a large blue square at the top"])
    x = torch.arange(tokens.shape[1], dtype=torch.float32)[None, :, None].expand(2, -1, 3)
    pooled = clip.eot_pool(x, tokens)
    assert pooled[:, 0].tolist() == [4.0, 10.0]  # BOS + 3 words -> EOS at 4; BOS + 9 -> 10


def test_text_after_eot_is_invisible():
    model = small_clip()
    tokens = TOKENIZER(["a red circle at the top", "a square"])
    noisy = tokens.clone()
    after = torch.arange(tokens.shape[1])[None] > TOKENIZER.eot_index(tokens)[:, None]
    noisy[after] = 5  # any word, written where padding was
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tokens), model.encode_text(noisy), atol=1e-5)


def test_ensemble_is_the_normalised_mean():
    model = small_clip()
    templates = clip.TEMPLATES["color"]
    got = clip.class_embeddings(model, ["red", "blue"], templates)
    with torch.no_grad():
        for k, c in enumerate(["red", "blue"]):
            each = model.encode_text([t.format(c) for t in templates])
            assert torch.allclose(got[k], F.normalize(each.mean(0), dim=0), atol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(2))


def test_positives_are_true_descriptions():
    cfg = clip.default_config(partial=1.0, text_images=0.0, word_only=0.0)
    x, captions, pos = clip.make_pairs(64, seed=3, cfg=cfg["data"])
    assert pos.diag().all()
    images = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    pairs = [(i, j) for i, j in zip(*np.nonzero(pos.numpy())) if i != j]
    assert len(pairs) > 5  # partial captions in a batch of 64 do collide
    # pos[i, j]: caption j describes image i; the judge (independent of CLIP) must agree.
    for i, j in pairs:
        assert judge.score_each(images[i : i + 1], [captions[j]])[0]["all"], (i, captions[j])


def test_training_lowers_the_loss():
    model = clip.build(clip.default_config())
    hist = clip.train_clip(model, clip.default_config(), live_plot=False)
    assert np.mean(hist.loss[-5:]) < np.mean(hist.loss[:5]) - 0.1


def test_rerank_keeps_the_best_scoring_sample():
    model = small_clip()
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    prompts = ["a red circle", "a blue square"]
    best = clip.rerank(model, images, prompts)
    scores = clip.clip_scores(model, images, [p for p in prompts for _ in range(3)]).view(2, 3)
    for k in range(2):
        assert torch.equal(best[k], images[3 * k + scores[k].argmax()])


def test_bitmap_and_stamp():
    b = typography.bitmap("red")
    assert b.shape == (5, 11) and not b[:, 3].any() and not b[:, 7].any()  # one-pixel gaps
    s = shapes.sample_scenes(8, seed=1, counts=(1,))
    images = shapes.render(s, 32)
    rows = typography.free_row(s)
    stamped = typography.stamp(images, ["purple"] * 8, rows)
    ink = (stamped != images).any(-1)
    assert ink.sum() > 8 * 20
    for i in range(8):
        ys = np.nonzero(ink[i])[0]
        assert ys.min() >= rows[i] and ys.max() < rows[i] + 5
    # The ink is not a palette colour and sits off the object: the judge reads the same scene.
    before, after = judge.read(images), judge.read(stamped)
    assert (before.present == after.present).all() and (before.shape == after.shape).all()


def test_labelled_objects_painted_grey_keep_their_shape_and_lose_their_colour():
    s = shapes.sample_scenes(12, seed=5, counts=(1,))
    plain = typography.stamp(shapes.render(s, 32), [shapes.COLOR_NAMES[c] for c in s.color[:, 0]],
                             typography.free_row(s))  # fmt: skip
    grey = np.arange(12) % 2 == 0
    out = clip.labelled(s, shapes.render(s, 32), grey)
    assert np.array_equal(out[~grey], plain[~grey])  # not grey: the render with its word
    assert (out[grey] != plain[grey]).any(-1).any((1, 2)).all()
    palette = np.array(list(shapes.COLORS.values()))
    # No palette colour is left on a grey object, and the core of the object is exactly GREY.
    assert not (out[grey][..., None, :] == palette).all(-1).any()
    assert ((out[grey] == clip.GREY).all(-1).sum((1, 2)) > 10).all()
    # The written word is untouched: ink pixels are the same in both.
    ink = (plain == typography.INK).all(-1)
    assert ((out == typography.INK).all(-1) == ink).all()
    # The judge still sees the shape where it sees an object at all.
    assert (judge.read(out[grey]).present.sum(1) <= 1).all()


def test_grey_text_paints_every_worded_one_object_image_grey_and_nothing_else():
    cfg = clip.default_config(text_images=1.0, word_only=0.0)["data"]
    x, captions, pos = clip.make_pairs(64, seed=2, cfg=cfg)
    x_grey, captions_grey, pos_grey = clip.make_pairs(64, seed=2, cfg=dict(cfg, grey_text=1.0))
    one = shapes.sample_scenes(64, seed=2, split="train").count == 1
    assert 10 < one.sum() < 60
    grey = torch.from_numpy(one)
    in_greys = (x_grey.amax(1) - x_grey.amin(1) < 0.02).flatten(1).all(1)
    assert torch.equal(in_greys, grey)  # every one-object image is grey, no other
    assert torch.equal(x_grey[~grey], x[~grey])
    assert captions_grey == captions and torch.equal(pos_grey, pos)  # the captions name colours


def test_best_of_n_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.8, 0.1, 0.3, 0.4]])
    correct = torch.tensor([[False, True, True, False], [False, True, False, True]])
    got = clip.best_of_n(scores, correct, ns=(1, 2, 4))
    # n=1: every sample, 4 of 8 correct; n=2: groups pick 0.9 (yes), 0.5 (yes), 0.8 (no),
    # 0.4 (yes); n=4: 0.9 (yes), 0.8 (no).
    assert got == {1: 0.5, 2: 0.75, 4: 0.5}


def one_step_config(**overrides):
    return clip.default_config(steps=1, warmup=1, batch=4, **overrides)


def test_weight_decay_spares_gains_biases_and_the_temperature(monkeypatch):
    # A zero loss gives zero gradients, so AdamW's step moves a parameter by its decay alone.
    monkeypatch.setattr(
        clip_model, "contrastive_loss", lambda logits, positives=None: logits.sum() * 0
    )
    model, cfg = small_clip(), one_step_config()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clip.train_clip(model, cfg, live_plot=False)
    shrink = 1 - cfg["train"]["lr"] * cfg["train"]["weight_decay"]
    for name, p in model.named_parameters():
        if p.ndim < 2:  # biases, norm gains, the temperature: not decayed
            assert torch.equal(p.detach(), before[name]), name
        else:
            torch.testing.assert_close(p.detach(), before[name] * shrink, msg=name)
            assert not torch.equal(p.detach(), before[name]), name
    assert any(p.ndim == 0 for p in model.parameters())  # logit_scale is among them


def test_temperature_is_clipped_after_a_step_and_keeps_its_gradient():
    model, cfg = small_clip(), one_step_config()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100) + 0.5)  # above the bound
    clip.train_clip(model, cfg, live_plot=False)
    assert model.logit_scale.item() <= math.log(100) + 1e-6  # the parameter itself is clipped
    assert model.scale().item() == pytest.approx(100.0)
    x, captions, pos = clip.make_pairs(8, 0, cfg["data"])
    clip.contrastive_loss(model(x, captions), pos).backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs().item() > 0


def test_zero_shot_table_blurs_the_renders_it_is_asked_to(monkeypatch):
    seen = []

    def fake_zero_shot(model, images, attribute, templates=None):
        seen.append(torch.as_tensor(images).float())
        return torch.zeros(len(images), dtype=torch.long)

    monkeypatch.setattr(clip_uses, "zero_shot", fake_zero_shot)
    model = type("M", (), {"res": 16})()
    sharp = clip.zero_shot_table(model, n=20, blur=0.0)
    seen_sharp, seen[:] = seen[:], []
    clip.zero_shot_table(model, n=20, blur=2.0)
    images, _ = clip.single_object_test(20, 1234, 16)
    expected = judge.blur(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, 2.0)
    assert all(torch.allclose(x, expected) for x in seen)
    assert all(torch.equal(x, torch.from_numpy(images).float()) for x in seen_sharp)
    # The rates count the fake's class 0 against the truth.
    _, truth = clip.single_object_test(20, 1234, 16)
    assert float(sharp["ensemble"]["color"]) == float((truth["color"] == 0).mean())


def test_the_reading_ablation_fine_tunes_the_course_clip_on_data_that_differs_only_in_grey():
    agree, carry = clip.reading_config(0.0), clip.reading_config(0.5)
    assert agree["model"]["base"] == clip.default_config()
    differ = {k for k in agree["data"] if agree["data"][k] != carry["data"][k]}
    assert differ == {"grey_text"} and agree["train"] == carry["train"]
    base = clip.CLIP.load()  # trained at the smoke profile, cached in tmp_path
    start = clip.build_reading(agree)
    for (name, p), q in zip(start.state_dict().items(), base.state_dict().values()):
        assert torch.equal(p.cpu(), q.cpu()), name
