"""Tokenizers: Gumbel-softmax, KL to a uniform prior, logit-Laplace, VQ straight-through, EMA."""

import math

import pytest
import torch

from t2i.ch01_dvae import autoencoder, dvae, vqvae
from t2i.core import checkpoint
from t2i.world import measures


def test_gumbel_softmax_shapes_and_hardness():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 10, 8, 8, generator=g)
    warm = dvae.gumbel_softmax(logits, tau=1.0, generator=g)
    cold = dvae.gumbel_softmax(logits, tau=1 / 16, generator=g)
    assert warm.shape == logits.shape
    torch.testing.assert_close(warm.sum(1), torch.ones(4, 8, 8))
    # A low temperature gives nearly one-hot samples, a high one does not.
    assert cold.max(1).values.mean() > 0.9
    assert warm.max(1).values.mean() < cold.max(1).values.mean()
    hard = dvae.gumbel_softmax(logits.requires_grad_(), tau=1.0, hard=True, generator=g)
    assert set(hard.detach().unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(hard.detach().sum(1), torch.ones(4, 8, 8))
    (hard * torch.arange(10.0).view(1, -1, 1, 1)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # straight-through gradient


def test_kl_to_uniform():
    assert dvae.kl_to_uniform(torch.zeros(2, 16, 4, 4)).item() == 0.0
    assert abs(dvae.kl_to_uniform(torch.full((2, 16, 4, 4), 3.0)).item()) < 1e-6
    peaked = torch.full((1, 16, 1, 1), -1e4)
    peaked[0, 3] = 0.0
    assert abs(dvae.kl_to_uniform(peaked).item() - math.log(16)) < 1e-4  # one code: log K


def test_temperature_anneals_from_one_to_a_sixteenth():
    assert dvae.temperature(0, 100) == 1.0
    assert abs(dvae.temperature(99, 100) - 1 / 16) < 1e-12
    assert dvae.temperature(50, 100) < dvae.temperature(10, 100)


def test_logit_laplace():
    x = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(dvae.map_pixels(x), torch.tensor([0.1, 0.5, 0.9]))
    torch.testing.assert_close(dvae.unmap_pixels(dvae.map_pixels(x)), x)
    # One pixel 0.5 -> y = 0.5, logit(y) = 0; mu = 1, b = 1: log(2 * 0.25) + 0 + |0 - 1| / 1.
    nll = dvae.logit_laplace_nll(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.0]))
    assert abs(nll.item() - (math.log(0.5) + 1.0)) < 1e-6


def test_vq_nearest_code_and_straight_through():
    model = vqvae.VQAutoencoder(K=3, dim=2, width=8)
    model.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    z_e = torch.tensor([[0.9, 0.8], [-1.5, 0.1]]).T.reshape(1, 2, 1, 2).requires_grad_()
    z_q, idx = model.quantize(z_e)
    assert idx.tolist() == [[[1, 2]]]
    torch.testing.assert_close(z_q.detach()[0, :, 0, 0], torch.tensor([1.0, 1.0]))
    w = torch.randn_like(z_q)
    (z_q * w).sum().backward()
    torch.testing.assert_close(z_e.grad, w)  # the gradient passes straight through


def test_ema_update_and_dead_code_restart():
    torch.manual_seed(0)
    model = vqvae.VQAutoencoder(K=4, dim=2, width=8, decay=0.0, restart=0.5)
    model.codebook.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0], [-9.0, 9.0]]))
    z = torch.tensor([[0.2, 0.0], [-0.2, 0.0], [5.0, 4.0]]).T.reshape(1, 2, 1, 3)
    idx = model.nearest(z)
    model._ema_update(z, idx)
    torch.testing.assert_close(model.codebook[0], torch.tensor([0.0, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.codebook[1], torch.tensor([5.0, 4.0]), atol=1e-4, rtol=0)
    # Codes 2 and 3 got nothing: restarted onto encoder outputs of this batch.
    points = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for k in (2, 3):
        assert (points - model.codebook[k]).abs().sum(1).min() < 1e-6


def test_measures():
    x = torch.zeros(1, 3, 4, 4)
    assert abs(measures.psnr(x, x + 0.2) - 10 * math.log10(4 / 0.04)) < 1e-6
    u = autoencoder.code_usage(torch.tensor([0, 0, 1, 1]), K=4)
    assert u["used"] == 2 and u["used_frac"] == 0.5 and abs(u["perplexity"] - 2) < 1e-6
    assert autoencoder.compression(32, 8, 512)["ratio"] == 32 * 32 * 24 / (64 * 9)


def test_tokenizers_train_and_loss_falls(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    for module, r in ((vqvae, vqvae.VQVAE), (dvae, dvae.DVAE)):
        model = r.load()
        x = autoencoder.held_out_renders(4).tensor()
        assert model.tokens(x).shape == (4, 8, 8)
        assert model.decode_tokens(model.tokens(x)).shape == (4, 3, 32, 32)
        cfg = module.default_config()
        hist = checkpoint.load(r.path(cfg))["history"]
        assert sum(hist[-5:]) < sum(hist[:5])
        assert model.usage_log.max() > 1  # codes used per batch were logged


def test_sigmoid_mu_is_the_median_of_the_logit_laplace_not_its_mean():
    g = torch.Generator().manual_seed(0)
    mu, b = 1.5, 1.0
    u = torch.rand(200_000, generator=g, dtype=torch.float64) - 0.5
    x = torch.sigmoid(mu - b * u.sign() * torch.log1p(-2 * u.abs()))  # logit(x) ~ Laplace(mu, b)
    assert abs(x.median().item() - torch.sigmoid(torch.tensor(mu)).item()) < 0.005
    assert abs(x.mean().item() - torch.sigmoid(torch.tensor(mu)).item()) > 0.03
    import inspect

    source = inspect.getsource(dvae.DiscreteVAE.decode)
    assert "median" in source and "mean of the logit-Laplace" not in source


def test_error_on_edges_finds_where_the_error_sits():
    # A 4x4 image, left half -1 and right half +1: the step is into pixel column 2. The map
    # covers rows and columns 1 to 3, so the edge is its column 1: 3 of its 9 pixels.
    x = -torch.ones(1, 3, 4, 4)
    x[..., 2:] = 1
    assert autoencoder.edge_strength(x)[0].tolist() == [[0.0, 2.0, 0.0]] * 3
    on_edge_error = x.clone()
    on_edge_error[..., 1:, 2] += 0.5  # error only on the edge pixels
    share, edge_share = autoencoder.error_on_edges(on_edge_error, x)
    assert share == pytest.approx(3 / 9) and edge_share == pytest.approx(1.0)
    uniform = x + 0.1
    assert autoencoder.error_on_edges(uniform, x)[1] == pytest.approx(3 / 9)
