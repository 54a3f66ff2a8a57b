"""The notebooks' "Play" sections: one ipywidgets panel per method, built from trained models.

Each `panel_*` function shows a panel (the method's knobs and a Run button or live controls)
with, under it, the output for `example` (a dict of the knobs' values) so that a saved notebook
shows a result, and returns the `ipywidgets.interactive` (its `.children` are the controls, its
`.f` the drawing function). A prompt with a word outside the vocabulary prints the library's
message instead of a traceback. Notebook 00 and the browser test (`tests/browser`) build them
from cached models the same way.
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from t2i import ch02_dalle as dalle
from t2i import ch03_clip as clip
from t2i import ch05_diffusion as ld
from t2i import ch06_glide as glide
from t2i import ch07_unclip as unclip
from t2i.ch04_generating_with_clip import clip_optimization, clipdraw, vqgan_clip
from t2i.front import plot
from t2i.world import classes, judge, measures
from t2i.world.prompts import TOKENIZER


def _panel(fn, example: dict | None, manual: bool = False, **controls):
    """Display interactive(fn, **controls), then fn(**example) under it; return the panel."""
    panel = widgets.interactive(fn, {"manual": True} if manual else {}, **controls)
    display(panel)
    if example is not None:
        fn(**example)
    return panel


def _text(value: str) -> widgets.Text:
    return widgets.Text(value=value, continuous_update=False)


def _show_judged(images, prompt: str) -> None:
    """A row of samples of one prompt, titled with the judge's "all" (every fact right)."""
    rows = judge.score_each(images, [prompt] * len(images))
    r, marks = judge.summarize(rows), [row["all"] for row in rows]
    plot.show_grid(images, ncols=8, title=f"{prompt!r}: judge 'all' {r['all']:.2f}", marks=marks)
    plt.show()


def _guarded(draw):
    """Run draw; a ValueError (a word outside the vocabulary, a bad label) is printed."""

    def run(**kwargs):
        try:
            draw(**kwargs)
        except ValueError as err:
            print(err)

    run.__wrapped__ = draw
    return run


# --- 00: the shapes world ---------------------------------------------------------------------


def panel_browse(data, example=None, n: int = 5000):
    """Browse the first n training scenes whose caption contains a phrase."""

    def browse(phrase="red circle", seed=0):
        idx = [i for i, c in enumerate(data.captions[:n]) if phrase.lower() in c]
        if not idx:
            print(f"no training caption (of the first {n:,}) contains {phrase!r}")
            return
        pick = np.random.default_rng(seed).choice(idx, size=min(16, len(idx)), replace=False)
        plot.show_grid(data.images[pick], [data.captions[i] for i in pick], ncols=8)
        plt.show()
        print(f"{len(idx)} of {n:,} captions match")

    return _panel(browse, example, phrase=_text("red circle"), seed=(0, 20))


# --- 01: image tokenizers ---------------------------------------------------------------------


def panel_token_edit(tokenizers: dict, images: torch.Tensor, example=None):
    """Change one token of an image's grid and decode: tokenizers {name: model}."""
    names = list(tokenizers)
    grid = tokenizers[names[0]].tokens(images[:1]).shape[-1]

    def edit_token(image=0, row=3, col=3, code=0, model=None):
        m = tokenizers[model or names[0]]
        idx = m.tokens(images[image : image + 1])
        edited = idx.clone()
        edited[0, row, col] = code % m.K
        with torch.no_grad():
            before, after = m.decode_tokens(idx), m.decode_tokens(edited)
        fig = plot.before_after({"tokens": before, "one token changed": after}, size=2.0)
        old = int(idx[0, row, col])
        fig.suptitle(f"cell ({row}, {col}): code {old} → {code % m.K}", fontsize=8)
        plt.show()

    return _panel(
        edit_token,
        example,
        image=widgets.IntSlider(0, 0, min(len(images), 50) - 1),
        row=widgets.IntSlider(grid // 2 - 1, 0, grid - 1),
        col=widgets.IntSlider(grid // 2 - 1, 0, grid - 1),
        code=widgets.IntSlider(0, 0, max(m.K for m in tokenizers.values()) - 1),
        model=names,
    )


# --- 02: DALL·E -------------------------------------------------------------------------------


def panel_dalle(model, example=None):
    """Eight DALL·E samples for a prompt, with temperature, top-k and seed."""

    @_guarded
    def draw(prompt="a large cyan triangle at the top", temperature=0.5, top_k=0, seed=0):
        imgs = dalle.generate(
            model, [prompt] * 8, temperature=temperature, top_k=top_k or None, seed=seed
        )
        facts = judge.score(imgs, prompt)
        title = f"{prompt}  (judge: colour {facts['color']:.0%}, shape {facts['shape']:.0%})"
        plot.show_grid(imgs, ncols=8, size=1.1, title=title)
        plt.show()

    return _panel(
        draw,
        example,
        prompt=_text("a large cyan triangle at the top"),
        temperature=widgets.FloatSlider(0.5, min=0.1, max=2.0, step=0.1),
        top_k=widgets.IntSlider(0, min=0, max=256, step=4, description="top_k (0: off)"),
        seed=widgets.IntSlider(0, 0, 100),
    )


# --- 03: CLIP ---------------------------------------------------------------------------------


def panel_search(model, gallery, gallery_emb: torch.Tensor, example=None, k: int = 8):
    """Text-to-image search: the k gallery images nearest a caption, and their cosines."""

    @_guarded
    def search(caption="a small purple circle at the top"):
        idx, vals = clip.search(model, gallery_emb, caption, k)
        plot.show_grid(gallery.images[idx.numpy()], [f"{v:.3f}" for v in vals], title=caption)
        plt.show()
        fig, ax = plt.subplots(figsize=(5, 1.8))
        ax.bar(range(len(vals)), vals.numpy())
        low, high = float(vals.min()) - 0.05, float(vals.max()) + 0.02
        ax.set(xlabel="rank", ylabel="cosine", ylim=(low, high))
        plt.show()

    return _panel(search, example, caption=_text("a small purple circle at the top"))


def panel_zero_shot(model, gallery, gallery_emb: torch.Tensor, example=None):
    """Zero-shot classification of a gallery image among comma-separated prompts."""

    @_guarded
    def classify(image=0, prompts="a red circle, a red square, a blue circle, a blue square"):
        texts = [p.strip() for p in prompts.split(",") if p.strip()]
        with torch.no_grad():
            logits = model.scale() * gallery_emb[image] @ model.encode_text(texts).T
        probs = logits.softmax(-1).numpy()
        fig, (a, b) = plt.subplots(1, 2, figsize=(6, 2), gridspec_kw={"width_ratios": [1, 2.5]})
        a.imshow(plot.to_numpy_images(gallery.images[image : image + 1])[0])
        a.axis("off")
        b.barh(texts, probs)
        b.set(xlim=(0, 1), xlabel="zero-shot probability")
        fig.tight_layout()
        plt.show()

    return _panel(
        classify,
        example,
        image=widgets.IntSlider(0, 0, len(gallery) - 1),
        prompts=_text("a red circle, a red square, a blue circle, a blue square"),
    )


# --- 04: generating with CLIP -----------------------------------------------------------------

GENERATORS = ("CLIPDraw", "VQGAN-CLIP", "pixels")


def generate_with_clip(method, model, vae, prompts, steps=None, augment=True, strokes=None, seed=0):
    """One of notebook 04's three ways to optimise an image for CLIP: CLIPDraw's strokes,
    VQGAN-CLIP's latent tokens (decoded by `vae`), or the raw pixels. steps and strokes None:
    the method's defaults. Returns the method's result (images, seconds, ...)."""
    kw = {} if steps is None else {"steps": steps}
    if method == "CLIPDraw":
        aug = "augment" if augment else "none"
        kw |= {} if strokes is None else {"strokes": strokes}
        return clipdraw.draw(model, prompts, augmentation=aug, seed=seed, **kw)
    if method == "VQGAN-CLIP":
        aug = "cutouts" if augment else "none"
        return vqgan_clip.generate(model, vae, prompts, augmentation=aug, seed=seed, **kw)
    if method == "pixels":
        pixels = clip_optimization.Pixels(len(prompts), model.res, seed=seed)
        aug = "augment" if augment else "none"
        return clip_optimization.optimize(
            pixels, model, prompts, kw.get("steps", 100), 0.05, augmentation=aug, desc="pixels"
        )
    raise ValueError(f"method {method!r} is not one of {GENERATORS}")


def panel_generate_with_clip(model, vae, example=None):
    """Four images optimised for a prompt by one of notebook 04's methods, with CLIP's score."""

    @_guarded
    def generate(prompt="a yellow triangle", method="CLIPDraw", steps=60, strokes=16, augment=True):
        TOKENIZER(prompt)  # a word outside the vocabulary: say so before optimising
        prompts = [prompt] * 4
        r = generate_with_clip(method, model, vae, prompts, steps, augment, strokes)
        scores = clip.clip_scores(model, r.images, prompts)
        title = f"{method}: {prompt} ({r.seconds:.1f} s)"
        plot.show_grid(r.images, [f"CLIP {s:.2f}" for s in scores], ncols=4, size=1.6, title=title)
        plt.show()

    return _panel(
        generate,
        example,
        prompt=_text("a yellow triangle"),
        method=list(GENERATORS),
        steps=widgets.IntSlider(60, 10, 300, 10, continuous_update=False),
        strokes=widgets.IntSlider(16, 1, 64, continuous_update=False),
        augment=True,
    )


# --- 05: diffusion on class labels ------------------------------------------------------------


def panel_label_diffusion(model, diffusion, classifier, example=None):
    """Eight samples of a class with a guidance, its scale, a sampler, its steps and eta."""

    @_guarded
    def draw(
        label="red circle", guidance="cfg", scale=3.0, sampler="ddim", steps=25, eta=0.0, seed=0
    ):
        x = ld.sample(
            model,
            diffusion,
            [label] * 8,
            guidance=guidance,
            scale=scale,
            sampler=sampler,
            steps=steps,
            eta=eta,
            classifier=classifier,
            seed=seed,
        )
        r = measures.label_table(x, [classes.label_of(label)] * 8)
        title = (
            f"{label}: color {r['color']:.2f}, shape {r['shape']:.2f}, "
            f"size entropy {r['size_entropy']:.2f} bits"
        )
        plot.show_grid(x, ncols=8, title=title)
        plt.show()

    return _panel(
        draw,
        example,
        manual=True,
        label=widgets.Dropdown(
            options=[f"{c} {s}" for c, s in classes.CLASSES], value="red circle"
        ),
        guidance=widgets.ToggleButtons(options=list(ld.GUIDANCE), value="cfg"),
        scale=widgets.FloatSlider(value=3.0, min=0.0, max=30.0, step=0.5),
        sampler=widgets.ToggleButtons(options=list(ld.SAMPLERS), value="ddim"),
        steps=widgets.IntSlider(value=25, min=5, max=100, step=5),
        eta=widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.1),
        seed=widgets.IntText(value=0),
    )


# --- 06: GLIDE --------------------------------------------------------------------------------


def panel_glide(model, diffusion, noised_clip, upsampler=None, example=None):
    """Eight GLIDE samples of a prompt, guided by CFG or the noised CLIP, optionally upsampled
    (upsampler: (model, diffusion))."""

    @_guarded
    def draw(
        prompt="a red circle above a blue square", guidance="cfg", scale=3.0, upsample=False, seed=0
    ):
        prompts = [prompt] * 8
        x = glide.sample(
            model,
            diffusion,
            prompts,
            guidance=guidance,
            scale=scale,
            seed=seed,
            noised_clip=noised_clip,
        )
        if upsample and upsampler is not None:
            x = glide.upsample(*upsampler, x, prompts, seed=seed)
        _show_judged(x, prompt)

    return _panel(
        draw,
        example,
        manual=True,
        prompt=widgets.Text(value="a red circle above a blue square"),
        guidance=widgets.ToggleButtons(options=["none", "cfg", "clip"], value="cfg"),
        scale=widgets.FloatSlider(value=3.0, min=0.0, max=100.0, step=0.5),
        upsample=widgets.Checkbox(value=False),
        seed=widgets.IntText(value=0),
    )


def panel_inpaint(inpainter, diffusion, image: torch.Tensor, example=None):
    """Erase the rectangle [y0, y1) x [x0, x1) of image (1, 3, res, res) and fill it, four
    times, with what the prompt names."""
    res = image.shape[-1]

    @_guarded
    def edit(
        prompt="a large blue square on the right",
        x0=9,
        y0=5,
        x1=16,
        y1=12,
        seed=0,
    ):
        mask = torch.ones(1, 1, res, res)
        mask[..., y0:y1, x0:x1] = 0
        four = image.repeat(4, 1, 1, 1)
        out = glide.inpaint(
            inpainter, diffusion, four, mask.repeat(4, 1, 1, 1), [prompt] * 4, seed=seed
        )
        shown = torch.cat([image, image * mask + (1 - mask), out])
        plot.show_grid(shown, ["start", "erased"] + ["filled"] * 4, ncols=6)
        plt.show()

    side = widgets.IntSlider
    return _panel(
        edit,
        example,
        manual=True,
        prompt=widgets.Text(value="a large blue square on the right"),
        x0=side(value=9, min=0, max=res),
        y0=side(value=5, min=0, max=res),
        x1=side(value=16, min=0, max=res),
        y1=side(value=12, min=0, max=res),
        seed=widgets.IntText(value=0),
    )


# --- 07: unCLIP -------------------------------------------------------------------------------


def panel_unclip(parts, upsampler=None, example=None):
    """Eight unCLIP samples of a prompt through the diffusion or the AR prior, optionally
    upsampled (upsampler: (model, diffusion))."""

    @_guarded
    def draw(prompt="a red circle", prior_kind="diffusion", scale=3.0, upsample=False, seed=0):
        x = unclip.generate([prompt] * 8, prior_kind, scale, seed=seed, parts=parts)
        if upsample and upsampler is not None:
            x = unclip.upsample(*upsampler, x, seed=seed)
        _show_judged(x, prompt)

    return _panel(
        draw,
        example,
        manual=True,
        prompt=widgets.Text(value="a red circle"),
        prior_kind=widgets.ToggleButtons(options=["diffusion", "ar"], value="diffusion"),
        scale=widgets.FloatSlider(value=3.0, min=1.0, max=8.0, step=0.5),
        upsample=widgets.Checkbox(value=False),
        seed=widgets.IntText(value=0),
    )


def panel_variations(decoder, diffusion, image, z, x_T, example=None):
    """Eight variations of image (1, 3, r, r) from its embedding z and inverted noise x_T: the
    decoder at eta (0: the reconstruction)."""

    def show_variations(eta=0.5, seed=0):
        x = unclip.decode(
            decoder,
            diffusion,
            z.expand(8, -1),
            None,
            scale=1.0,
            steps=50,
            eta=eta,
            seed=seed,
            x_T=x_T.expand(8, -1, -1, -1),
        )
        plot.show_grid(torch.cat([image, x]), ["original"] + [f"eta {eta:g}"] * 8, ncols=9)
        plt.show()

    return _panel(show_variations, example, eta=(0.0, 1.0, 0.05), seed=widgets.IntText(value=0))


def panel_interpolation(decoder, diffusion, images, z, x_T, example=None):
    """Decode slerp(z[0], z[1], t) from x_T[0]: between two images (2, 3, r, r)."""

    def show_interpolation(t=0.5):
        zt = unclip.slerp(z[:1], z[1:], t)
        x = unclip.decode(decoder, diffusion, zt, None, scale=1.0, steps=50, eta=0.0, x_T=x_T[:1])
        shown = torch.cat([images[:1], x, images[1:]])
        plot.show_grid(shown, ["image 1", f"t = {t:.2f}", "image 2"], ncols=3)
        plt.show()

    return _panel(show_interpolation, example, t=(0.0, 1.0, 0.05))


def panel_text_diff(decoder, diffusion, image, z, x_T, from_text: str, example=None):
    """Move image's embedding z toward a new caption by a text diff, and decode from x_T."""

    @_guarded
    def show_text_diff(to_text="a blue circle", amount=0.3):
        zd = unclip.text_diff(z, from_text, to_text, amount)
        x = unclip.decode(decoder, diffusion, zd, None, scale=1.0, steps=50, eta=0.0, x_T=x_T)
        titles = [from_text, f"{amount:.2f} toward {to_text!r}"]
        plot.show_grid(torch.cat([image, x]), titles, ncols=2, size=2)
        plt.show()

    return _panel(
        show_text_diff,
        example,
        manual=True,
        to_text=widgets.Text(value="a blue circle"),
        amount=(0.0, 1.0, 0.05),
    )
