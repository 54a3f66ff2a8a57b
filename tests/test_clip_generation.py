"""Generating with CLIP: the rasterizer, the shared optimization, CLIPDraw and VQGAN-CLIP."""

import math

import pytest
import torch

from t2i import ch03_clip as clip
from t2i.ch01_dvae import vqvae
from t2i.ch04_generating_with_clip import clip_optimization, clipdraw, raster, vqgan_clip


@pytest.fixture(autouse=True)
def smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_PROFILE", "smoke")
    monkeypatch.setenv("T2I_DATA", str(tmp_path))


BG = torch.tensor([0.9, 0.9, 0.9])
LINE = torch.tensor([[[[0.2, 0.5], [0.4, 0.5], [0.6, 0.5], [0.8, 0.5]]]])  # (1, 1, 4, 2)
RED = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]])


def test_bezier_endpoints_and_straight_line():
    pts = raster.bezier(LINE, k=9)[0, 0]
    assert torch.allclose(pts[0], LINE[0, 0, 0]) and torch.allclose(pts[-1], LINE[0, 0, 3])
    assert torch.allclose(pts[:, 1], torch.full((9,), 0.5))
    assert torch.allclose(pts[:, 0], torch.linspace(0.2, 0.8, 9), atol=1e-6)


def test_distance_to_polyline_by_hand():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    pix = torch.tensor([[0.5, 0.3], [-0.3, 0.4], [2.0, 0.0]])
    assert torch.allclose(raster.distance_to_polyline(pts, pix), torch.tensor([0.3, 0.5, 1.0]))


def test_render_paints_the_stroke_and_leaves_the_background():
    img = raster.render(LINE, torch.tensor([[4.0]]), RED, 32, BG)[0]
    assert torch.allclose(img[:, 16, 16], torch.tensor([1.0, 0.0, 0.0]), atol=0.01)  # on it
    assert torch.allclose(img[:, 2, 16], BG, atol=0.01)  # far above it
    assert torch.allclose(img[:, 16, 1], BG, atol=0.01)  # beyond its end


def test_rasterizer_gradients_move_a_stroke_to_its_target():
    width = torch.tensor([[3.0]])
    target = raster.render(LINE, width, RED, 32, BG)
    ctrl = (LINE + torch.tensor([0.0, 0.07])).clone().requires_grad_(True)  # 2 px too low
    opt = torch.optim.Adam([ctrl], lr=0.005)
    for _ in range(100):
        loss = ((raster.render(ctrl, width, RED, 32, BG) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(ctrl.grad).all()
        opt.step()
    # The inner control points of a straight stroke can slide along it, so compare the curve.
    pts = raster.bezier(ctrl.detach(), k=9)[0, 0]
    assert (pts[:, 1] - 0.5).abs().max() < 0.01  # back on the target's row
    assert (pts[[0, -1], 0] - torch.tensor([0.2, 0.8])).abs().max() < 0.02  # same ends
    assert loss.item() < 1e-4


def test_spherical_distance():
    x = torch.tensor([[1.0, 0.0]])
    assert clip_optimization.spherical_distance(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.tensor([[0.0, 1.0]])  # a quarter turn: 2 * (pi / 4)^2
    assert clip_optimization.spherical_distance(x, y).item() == pytest.approx(math.pi**2 / 8)


def test_augmentations_keep_a_blank_canvas_blank():
    g = torch.Generator().manual_seed(0)
    blank = clip_optimization.BACKGROUND.view(1, 3, 1, 1).expand(2, 3, 32, 32)
    views = clip_optimization.cutouts(blank, 3, g)
    assert views.shape == (6, 3, 32, 32)
    assert torch.allclose(views, clip_optimization.BACKGROUND.view(1, 3, 1, 1).expand_as(views))
    noisy = clip_optimization.augment(blank, 3, g)
    assert (noisy - blank.repeat(3, 1, 1, 1)).abs().mean() < 0.05


def test_pixel_optimization_lowers_the_clip_loss():
    model = clip.build(clip.default_config()).eval()
    pixels = clip_optimization.Pixels(2, 32)
    result = clip_optimization.optimize(pixels, model, ["a red circle", "a blue square"], 40, 0.05)
    assert sum(result.loss[-5:]) < sum(result.loss[:5]) - 0.05
    assert result.images.shape == (2, 3, 32, 32) and result.images.abs().max() <= 1
    assert all(p.requires_grad for p in model.parameters())  # CLIP unfrozen afterwards


def test_clipdraw_returns_drawings_and_frames():
    model = clip.build(clip.default_config()).eval()
    result = clipdraw.draw(model, ["a red circle"] * 2, steps=11, negatives=["a blue circle"] * 2)
    assert result.images.shape == (2, 3, 32, 32)
    assert len(result.frames) == 3  # steps 0 and 10, and the final images


def test_vqgan_latents_decode_codebook_vectors_with_gradient():
    vae = vqvae.build(vqvae.default_config()).eval()
    latents = vqgan_clip.Latents(vae, 2, 32, init="random tokens")
    with torch.no_grad():
        latents.z.mul_(50)  # far outside the codebook's range: the clamp must bring it back
    z = latents.z + (torch.maximum(torch.minimum(latents.z, latents.hi), latents.lo) - latents.z)
    assert (z <= latents.hi + 1e-5).all() and (z >= latents.lo - 1e-5).all()
    z_q, idx = vae.quantize(z)
    assert torch.allclose(z_q, vae.codebook[idx].permute(0, 3, 1, 2), atol=1e-5)
    latents().sum().backward()
    assert latents.z.grad is not None and latents.z.grad.abs().sum() > 0


def test_raster_docstring_formula_is_what_render_computes():
    assert "sigmoid(4 * sharpness * (width_s / 2 - d)) * opacity_s" in raster.__doc__
    color = torch.tensor([[[1.0, 1.0, 1.0, 0.7]]])  # white, opacity 0.7, over black
    width, sharpness, res = 3.0, 1.5, 32
    img = raster.render(LINE, torch.tensor([[width]]), color, res, torch.zeros(3), sharpness)
    d = raster.distance_to_polyline(raster.bezier(LINE)[0, 0], raster.pixel_centers(res)) * res
    alpha = torch.sigmoid(4 * sharpness * (width / 2 - d)) * 0.7  # the docstring's formula
    torch.testing.assert_close(img[0, 0].flatten(), alpha)


def test_clamp_with_grad_by_hand():
    # inside; above with g > 0 (a descent step goes down: back in) and g < 0 (further out);
    # below with g < 0 (descent goes up: back in) and g > 0 (further out); on the bound.
    x = torch.tensor([0.5, 2.0, 2.0, -3.0, -3.0, 1.0], requires_grad=True)
    g = torch.tensor([0.25, 1.0, -1.0, -2.0, 2.0, -0.5])
    y = vqgan_clip.ClampWithGrad.apply(x, torch.tensor(-1.0), torch.tensor(1.0))
    assert y.tolist() == [0.5, 1.0, 1.0, -1.0, -1.0, 1.0]
    y.backward(g)
    assert x.grad.tolist() == [0.25, 1.0, 0.0, -2.0, 0.0, -0.5]


def test_clamp_with_grad_per_dimension_bounds():
    x = torch.tensor([[[[5.0]], [[5.0]]]], requires_grad=True)  # (1, 2, 1, 1)
    lo, hi = (
        torch.tensor([-1.0, -10.0]).view(1, 2, 1, 1),
        torch.tensor([1.0, 10.0]).view(1, 2, 1, 1),
    )
    y = vqgan_clip.clamp_with_grad(x, lo, hi)
    assert y.flatten().tolist() == [1.0, 5.0]
    (-y.sum()).backward()  # pushes both up: out of range in dim 0 (no gradient), inside in dim 1
    assert x.grad.flatten().tolist() == [0.0, -1.0]


class _IdentityVQ:
    """A stand-in tokenizer whose quantizer and decoder are the identity, to see the clamp."""

    codebook = torch.tensor([[-1.0, -2.0], [1.0, 2.0]])

    def encode(self, x):
        return torch.zeros(len(x), 2, 2, 2)

    def quantize(self, z):
        return z, None

    def decode(self, z):
        return z


def test_vqgan_latents_get_no_gradient_pushing_them_further_out():
    latents = vqgan_clip.Latents(_IdentityVQ(), 1, 8, init="blank")
    with torch.no_grad():
        latents.z.fill_(5.0)  # above the range of both dimensions
    out = latents()
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0]
    (-out.sum()).backward()  # descent would raise z further: blocked
    assert (latents.z.grad == 0).all()
    latents.z.grad = None
    latents().sum().backward()  # descent lowers z back toward the range: passed
    assert (latents.z.grad == 1).all()
