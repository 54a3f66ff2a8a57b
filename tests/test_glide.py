"""GLIDE (notebook 06): text reaches the U-Net, padding is inert, CFG, upsampler, inpainting."""

import numpy as np
import pytest
import torch

from t2i import ch05_diffusion as label_diffusion
from t2i import ch06_glide as glide
from t2i.blocks.diffusion import diffusion_of
from t2i.ch06_glide import recipes as glide_recipes
from t2i.core import recipe
from t2i.world import shapes
from t2i.world.prompts import EMPTY, TOKENIZER, captioned_scenes
from t2i.world.tokenizer import Tokenizer

CFG = glide.base_config(
    res=8, ch=8, mults=[1, 2], attn_res=[8, 4], text_width=16, text_layers=1, init=None
)


def tiny(cls=glide.Text2Im):
    torch.manual_seed(0)
    m = cls(CFG["data"]["res"], **CFG["model"]).eval()
    for p in m.parameters():  # zero-initialised outputs: make the model non-trivial
        p.data.add_(0.05 * torch.randn_like(p))
    return m


def test_every_attention_layer_reads_the_caption():
    m = tiny()
    outputs = {}
    for name, layer in m.unet.named_modules():
        if type(layer).__name__ == "SpatialAttention":
            layer.register_forward_hook(lambda mod, inp, out, n=name: outputs.__setitem__(n, out))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 90])
    with torch.no_grad():
        m(x, t, tokens=TOKENIZER(["a red circle"] * 2))
        first = dict(outputs)
        m(x, t, tokens=TOKENIZER(["a blue circle"] * 2))
    assert len(first) >= 3  # two resolutions and the middle
    for name, out in first.items():
        assert not torch.allclose(out, outputs[name]), f"{name} ignores the caption"


def test_padding_positions_have_their_own_embedding():
    m = tiny()
    tok = TOKENIZER(["a red circle", "a small blue square at the top"])
    with torch.no_grad():
        pooled, seq = m.text(tok)
        m.text.tok.weight[TOKENIZER.pad_id] += 10.0  # the pad token's embedding is unused
        pooled2, seq2 = m.text(tok)
        m.text.padding += 1.0  # the padding embedding is used
        pooled3, _ = m.text(tok)
    assert torch.equal(pooled, pooled2) and torch.equal(seq, seq2)
    assert not torch.allclose(pooled, pooled3)


def test_captions_are_emptied_at_the_configured_rate():
    cfg = dict(CFG, n_train=500, batch=4000, p_empty=0.2)
    _, tok = glide_recipes._batches(cfg, "cpu", [8])(0, torch.Generator().manual_seed(0))
    empty = (tok == TOKENIZER(EMPTY)).all(1).float().mean().item()
    assert empty == pytest.approx(0.2, abs=0.03)


def test_cfg_at_scale_one_is_the_conditional_prediction():
    m = tiny()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([50, 20])
    prompts = ["a red circle", "a green square above a blue triangle"]
    with torch.no_grad():
        cond = m(x, t, tokens=TOKENIZER(prompts))
        fn, cond_fn = glide.guided_model(m, prompts, "cfg", scale=1.0)
        assert cond_fn is None
        assert torch.allclose(fn(x, t), cond, atol=1e-5)
        u = m(x, t, tokens=TOKENIZER(["", ""]))
        assert torch.allclose(
            glide.guided_model(m, prompts, "cfg", scale=3.0)[0](x, t), u + 3 * (cond - u), atol=1e-4
        )
    with pytest.raises(ValueError, match="guidance"):
        glide.guided_model(m, prompts, "classifier")


def test_upsampler_stacks_the_bilinear_low_res_image_after_x_t():
    m = tiny(glide.Upsampler)
    x, low = torch.randn(1, 3, 8, 8), torch.rand(1, 3, 4, 4)
    inp = m.inputs(x, low_res=low)
    assert inp.shape == (1, 6, 8, 8)
    assert torch.equal(inp[:, :3], x)
    up = torch.nn.functional.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(inp[:, 3:], up)
    # A constant low-res image upsamples to the same constant.
    assert torch.allclose(
        m.inputs(x, low_res=torch.full((1, 3, 4, 4), 0.3))[:, 3:], torch.full((1, 3, 8, 8), 0.3)
    )


@pytest.mark.parametrize("cls", [glide.Inpainter, glide.Text2Im])
def test_inpainting_keeps_the_known_pixels_exactly(cls):
    m = tiny(cls)
    d = diffusion_of(dict(CFG, T=50))
    image = torch.rand(3, 3, 8, 8) * 2 - 1
    mask = glide.random_masks(3, 8, torch.Generator().manual_seed(1))
    assert 0 < mask.mean() < 1
    out = glide.inpaint(m, d, image, mask, "a red circle", steps=5)
    known = mask.expand_as(image).bool()
    assert torch.equal(out[known], image[known])
    assert not torch.allclose(out[~known], image[~known])


def test_random_masks_mix_rectangles_and_blobs():
    masks = glide.random_masks(40, 16, torch.Generator().manual_seed(0))
    erased = 1 - masks.mean((1, 2, 3))
    assert ((erased > 0.02) & (erased < 0.8)).all()
    rect = masks[0::2, 0]  # a rectangle's erased rows are all equal
    rows = [(1 - r).sum(1) for r in rect]
    assert all(len(set(v[v > 0].tolist())) == 1 for v in rows)


def test_square_masks_erase_the_square_around_each_centre():
    # A centre (0.5, 0.25) of a 16-pixel side is pixel (8, 4); half-side 3 erases x in 5..10 and
    # y in 1..6 (pixel centres within 3 of it): 6 x 6 pixels, all known elsewhere.
    m = glide.square_masks(torch.tensor([[0.5, 0.25]]), torch.tensor([3.0]), 16)
    assert m.shape == (1, 1, 16, 16)
    erased = (m[0, 0] == 0).nonzero()
    assert erased[:, 0].unique().tolist() == list(range(1, 7))
    assert erased[:, 1].unique().tolist() == list(range(5, 11))
    assert len(erased) == 36


def test_inpainter_batches_give_an_object_of_each_scene_with_its_own_caption():
    cfg = recipe.sections(CFG, n_train=64, batch=16, p_empty=0.0)
    d = cfg["data"]
    s, _ = captioned_scenes(64, cfg["seed"], d["p_partial"], d["counts"], d["count_probs"])
    x, tok, centres, own = glide_recipes._batches(cfg, torch.device("cpu"), [8], objects=True)(
        0, torch.Generator().manual_seed(0)
    )
    assert centres.shape == (16, 2) and x.shape == (16, 3, 8, 8) and own.shape == tok.shape
    where = {
        (round(float(s.cx[i, j]), 4), round(float(s.cy[i, j]), 4)): (i, j)
        for i in range(64)
        for j in range(s.count[i])
    }
    for (cx, cy), words in zip(centres.tolist(), [TOKENIZER.decode(t) for t in own]):
        i, j = where[(round(cx, 4), round(cy, 4))]  # the centre is one of the scene's objects
        colour, shape = shapes.COLOR_NAMES[s.color[i, j]], shapes.SHAPES[s.shape[i, j]]
        assert f"{colour} {shape}" in words and " and " not in words  # its caption, alone


def test_a_short_training_run_lowers_the_loss():
    cfg = recipe.sections(CFG, n_train=256, steps=40, batch=32, T=50, warmup=2, ema=None)
    m = glide.build_base(cfg)
    hist = glide.train_base(m, cfg, live_plot=False)
    first, last = sum(hist.loss[:5]) / 5, sum(hist.loss[-5:]) / 5
    assert last < 0.85 * first


def test_the_base_starts_as_the_label_model_without_its_label():
    arch = dict(res=8, ch=8, mults=[1, 2], blocks=1, attn_res=[4])
    label_model = label_diffusion.build_model(label_diffusion.model_config(**arch))
    with torch.no_grad():  # as if trained: no zero-initialized output layer left
        for p in label_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base = glide.build_base(glide.base_config(**arch, text_width=16, text_layers=1, init=None))
    glide.start_from_label_model(base.unet, label_model)
    own = base.unet.state_dict()
    for name, value in label_model.state_dict().items():
        if name == "encoder.inp.weight":  # RGB copied, the two coordinate channels at zero
            assert torch.equal(own[name][:, :3], value) and not own[name][:, 3:].any()
        elif not name.startswith("embed.label"):
            assert torch.equal(own[name], value), name
    wider = {**arch, "ch": 16}
    other = glide.build_base(glide.base_config(**wider, text_width=16, text_layers=1, init=None))
    with pytest.raises(ValueError, match="init=None"):
        glide.start_from_label_model(other.unet, label_model)


def test_failure_kinds_tell_an_extra_object_from_one_colour_for_two():
    def named(s, i):  # "a red circle and a blue square": the scene's first two objects
        return " and ".join(
            f"a {shapes.COLOR_NAMES[s.color[i, j]]} {shapes.SHAPES[s.shape[i, j]]}" for j in (0, 1)
        )

    two = shapes.sample_scenes(2, seed=3, split="test", counts=(2,))
    three = shapes.sample_scenes(1, seed=4, split="test", counts=(3,))
    prompts = [named(two, 0), named(two, 1), named(three, 0)]
    two.color[1, 1] = two.color[1, 0]  # both objects of scene 1 in its first colour
    three.color[0, 2] = three.color[0, 0]  # a third object in the first colour
    images = torch.cat([shapes.render_tensor(two, 16), shapes.render_tensor(three, 16)])
    assert glide.failure_kinds(images, prompts) == [
        "right",
        "one colour only",
        "both colours, one not a single object",
    ]
    assert glide.failure_kinds(torch.full_like(images[:1], 0.9), prompts[:1]) == ["other"]
    shapes_only = " and ".join(f"a {shapes.SHAPES[two.shape[0, j]]}" for j in (0, 1))
    assert glide.failure_kinds(images[:1], [shapes_only]) == ["right"]  # no colour named


def test_tokenizer_round_trip_for_partial_captions():
    tok = Tokenizer()
    for text in ["a red circle", "a circle and a square", "a green square above a blue triangle"]:
        assert tok.decode(tok(text)[0]) == text


def test_cli_samples_and_inpaints_pngs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("T2I_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("T2I_PROFILE", "smoke")
    from t2i.front import cli, plot

    out = tmp_path / "samples"
    cli.main(["sample", "glide", "--prompt", "a red circle", "--n", "2", "--out", str(out)])
    pngs = sorted(out.glob("a_red_circle-*.png"))
    assert len(pngs) == 2
    image = plot.read_pngs(pngs[:1])
    assert image.shape == (1, 16, 16, 3)
    mask = np.full((16, 16, 3), 255, np.uint8)
    mask[4:12, 8:16] = 0
    plot.save_pngs(torch.from_numpy(mask[None]).permute(0, 3, 1, 2) / 127.5 - 1, str(tmp_path), "m")
    args = ["inpaint", "--image", str(pngs[0]), "--mask", str(tmp_path / "m-000.png")]
    cli.main(args + ["--prompt", "a red circle and a blue square", "--n", "2", "--out", str(out)])
    filled = plot.read_pngs(sorted(out.glob("inpainted-*.png")))
    assert filled.shape == (2, 16, 16, 3)
    known = mask[..., 0] > 0
    assert np.abs(filled[:, known].astype(int) - image[:, known].astype(int)).max() <= 1
    big = plot.save_pngs(torch.zeros(1, 3, 32, 32), str(tmp_path), "big")[0]
    rc = cli.main(args[:3] + ["--mask", str(big), "--prompt", "a red circle", "--out", str(out)])
    assert rc == 2 and "16x16" in capsys.readouterr().err
