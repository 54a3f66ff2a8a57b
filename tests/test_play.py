"""The notebooks' play panels, driven as a student would: change a control, run, read."""

import ipywidgets as widgets
import matplotlib
import pytest
import torch

from t2i import ch03_clip as clip
from t2i.ch01_dvae import vqvae
from t2i.front import play
from t2i.world import datasets

matplotlib.use("Agg")


def controls(panel) -> dict:
    return {c.description: c for c in panel.children if isinstance(c, widgets.ValueWidget)}


def test_browse_draws_the_matching_scenes_and_says_when_none_match(capsys):
    data = datasets.make_dataset(200, res=16, seed=0)
    phrase = data.captions[0].split(" of ")[-1].split(" at ")[0]  # e.g. "a small red circle"
    panel = play.panel_browse(data, n=200, example=dict(phrase=phrase))
    out = capsys.readouterr().out
    matching = sum(phrase in c for c in data.captions)
    assert f"{matching} of 200 captions match" in out and matching >= 1
    controls(panel)["phrase"].value = "a plaid circle"  # a live control: the panel reruns
    assert "no training caption (of the first 200) contains 'a plaid circle'" in (
        capsys.readouterr().out
    )


def test_token_edit_changes_one_cell_of_the_grid(capsys):
    torch.manual_seed(0)
    vq = vqvae.VQAutoencoder(K=16, dim=4, width=8).eval()
    images = datasets.make_dataset(4, res=32, seed=1).tensor()
    panel = play.panel_token_edit({"VQ-VAE": vq}, images, example=dict(row=1, col=2, code=5))
    c = controls(panel)
    assert c["row"].max == vq.tokens(images[:1]).shape[-1] - 1 and c["code"].max == 15
    assert c["image"].max == 3


def test_a_word_outside_the_vocabulary_is_printed_not_raised(capsys):
    model = clip.build(clip.default_config()).eval()
    gallery = datasets.make_dataset(12, res=model.res, seed=2)
    emb = clip.embed_images(model, gallery.images)
    panel = play.panel_search(model, gallery, emb, k=4, example=dict(caption="a red circle"))
    capsys.readouterr()
    panel.f(caption="a red unicorn")
    assert "unicorn" in capsys.readouterr().out
    idx, vals = clip.search(model, emb, "a red circle", k=4)
    assert len(idx) == 4 and (vals[:-1] >= vals[1:]).all()  # nearest first


def test_generate_with_clip_names_a_method_it_does_not_know():
    with pytest.raises(ValueError, match="'stencil' is not one of"):
        play.generate_with_clip("stencil", None, None, ["a red circle"])
