"""Gaussian diffusion, the U-Net and the class-conditional recipe (smoke profile)."""

import math

import numpy as np
import pytest
import torch

from t2i import ch05_diffusion as cd
from t2i.blocks.diffusion import (
    GaussianDiffusion,
    classifier_free,
    classifier_grad,
    cosine_betas,
    linear_betas,
)
from t2i.blocks.layers import ResBlock, timestep_embedding
from t2i.blocks.unet import NoisyClassifier, UNet
from t2i.front import cli
from t2i.world import classes, datasets, measures, shapes


@pytest.fixture(autouse=True)
def smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_PROFILE", "smoke")
    monkeypatch.setenv("T2I_DATA", str(tmp_path))


# --- schedules and the forward process -------------------------------------------------------


def test_linear_schedule_abar_by_hand():
    d = GaussianDiffusion(1000, "linear")
    assert linear_betas(1000)[0] == pytest.approx(1e-4)
    assert linear_betas(1000)[-1] == pytest.approx(0.02)
    beta1 = 1e-4 + (0.02 - 1e-4) / 999
    assert d.abar[0] == pytest.approx(1 - 1e-4)
    assert d.abar[1] == pytest.approx((1 - 1e-4) * (1 - beta1))
    # abar(T-1) = prod(1 - beta) ~ exp(-sum beta - sum beta^2 / 2): about 4.0e-5, almost no signal
    b = linear_betas(1000)
    assert d.abar[-1] == pytest.approx(math.exp(-b.sum() - (b**2).sum() / 2), rel=0.01)
    assert d.abar[-1] == pytest.approx(4.04e-5, rel=0.01)


def test_cosine_schedule_abar_by_hand():
    d = GaussianDiffusion(1000, "cosine")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 499, 900):
        assert d.abar[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert d.abar[499] == pytest.approx(0.4938, abs=1e-3)  # about half the signal at mid-way
    assert cosine_betas(1000).max() == pytest.approx(0.999)  # clipped at the end


def test_q_sample_mean_and_variance_over_many_draws():
    d = GaussianDiffusion(1000, "cosine")
    torch.manual_seed(0)
    x0 = torch.full((20_000, 1, 1, 1), 0.7)
    t = torch.full((20_000,), 300)
    xt = d.q_sample(x0, t)
    assert xt.mean().item() == pytest.approx(math.sqrt(d.abar[300]) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - d.abar[300], rel=0.03)


def test_posterior_is_the_product_of_the_two_gaussians():
    d = GaussianDiffusion(100, "linear")
    x0, xt, t = torch.tensor([[[[0.3]]]]), torch.tensor([[[[-0.2]]]]), 40
    # q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1});
    # q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t), read as a likelihood of x_{t-1}.
    beta, ap = d.betas[t], d.abar[t - 1]
    precision = 1 / (1 - ap) + (1 - beta) / beta
    var = 1 / precision
    mean = var * (math.sqrt(ap) * 0.3 / (1 - ap) + math.sqrt(1 - beta) * -0.2 / beta)
    m, v = d.q_posterior(x0, xt, torch.tensor([t]))
    assert m.item() == pytest.approx(mean, rel=1e-5)
    assert v.item() == pytest.approx(var, rel=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_predictions_convert_back_to_eps_and_x0(prediction):
    d = GaussianDiffusion(1000, "cosine", prediction)
    torch.manual_seed(0)
    x0, noise, t = (
        torch.rand(4, 3, 4, 4) - 0.5,
        torch.randn(4, 3, 4, 4),
        torch.tensor([5, 200, 600, 990]),
    )
    xt = d.q_sample(x0, t, noise)
    eps, x0_hat = d.eps_x0(d.target(x0, noise, t), xt, t, clip=False)
    assert torch.allclose(eps, noise, atol=1e-3) and torch.allclose(x0_hat, x0, atol=1e-3)


# --- samplers -------------------------------------------------------------------------------------


def perfect_eps_model(d, x0):
    """The exact eps of a data set holding one image x0."""

    def model(x, t):
        a, s = d._at(np.sqrt(d.abar), t, x), d._at(np.sqrt(1 - d.abar), t, x)
        return (x - a * x0) / s

    return model


def test_one_ddim_step_with_eta_zero_is_the_closed_form():
    d = GaussianDiffusion(1000, "cosine")
    torch.manual_seed(0)
    x0, eps = torch.rand(2, 3, 4, 4) - 0.5, torch.randn(2, 3, 4, 4)
    t, t_prev = 700, 500
    xt = math.sqrt(d.abar[t]) * x0 + math.sqrt(1 - d.abar[t]) * eps
    x_prev, _ = d.ddim_step(lambda x, tt: eps, xt, t, t_prev, eta=0.0)
    expected = math.sqrt(d.abar[t_prev]) * x0 + math.sqrt(1 - d.abar[t_prev]) * eps
    assert torch.allclose(x_prev, expected, atol=1e-5)


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_not():
    d = GaussianDiffusion(100, "cosine")
    model = lambda x, t: 0.1 * x  # noqa: E731
    x = torch.randn(2, 3, 4, 4)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = d.ddim_sample(model, x, 10, eta=0.0, generator=g(1))
    b = d.ddim_sample(model, x, 10, eta=0.0, generator=g(2))
    assert torch.equal(a, b)
    c = d.ddim_sample(model, x, 10, eta=1.0, generator=g(1))
    e = d.ddim_sample(model, x, 10, eta=1.0, generator=g(2))
    assert not torch.allclose(c, e)


def test_timestep_subsequence():
    d = GaussianDiffusion(1000, "cosine")
    ts = d.timesteps(10)
    assert len(ts) == 10 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)


def test_ddim_inversion_then_sampling_returns_the_input_with_a_perfect_model():
    d = GaussianDiffusion(1000, "cosine")
    torch.manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8) * 1.6 - 0.8
    model = perfect_eps_model(d, x0)
    xT = d.ddim_invert(model, x0, steps=20)
    back = d.ddim_sample(model, xT, steps=20, eta=0.0)
    assert torch.allclose(back, x0, atol=1e-4)


def gaussian_data_eps_model(d, sigma):
    # Data N(0, sigma^2): the exact eps is sqrt(1 - abar) x / (abar sigma^2 + 1 - abar), and the
    # ODE only rescales, so inversion should give x0 / sigma (unit-variance noise).
    def model(x, t):
        a = d._at(d.abar, t, x)
        return (1 - a).sqrt() * x / (a * sigma**2 + 1 - a)

    torch.manual_seed(0)
    return model, sigma * torch.randn(64, 3, 4, 4)


def test_ddim_inversion_of_gaussian_data_maps_to_unit_noise_and_back():
    d = GaussianDiffusion(1000, "cosine")
    model, x0 = gaussian_data_eps_model(d, sigma=0.3)
    xT = d.ddim_invert(model, x0, steps=50)
    assert xT.std().item() == pytest.approx(1.0, abs=0.1)
    err = lambda n: (d.ddim_sample(model, d.ddim_invert(model, x0, n), n) - x0).abs().mean()  # noqa: E731
    assert err(50) < 0.05 and err(200) < err(50) / 2  # a discretization error, shrinking with steps


def test_fixed_point_refinement_shrinks_the_inversion_error():
    # Refining eps at the point each inversion step reaches makes the sampler's step from there
    # lead back, so the round trip error falls well below plain DDIM's.
    d = GaussianDiffusion(1000, "cosine")
    model, x0 = gaussian_data_eps_model(d, sigma=0.3)
    err = lambda k: (d.ddim_sample(model, d.ddim_invert(model, x0, 10, k), 10) - x0).abs().mean()  # noqa: E731
    assert err(3) < err(0) / 3


def test_ddpm_with_a_perfect_model_lands_on_the_image():
    d = GaussianDiffusion(50, "cosine")
    x0 = torch.rand(2, 3, 4, 4) - 0.5
    out, xs, x0s = d.ddpm_sample(perfect_eps_model(d, x0), torch.randn(2, 3, 4, 4), trace=True)
    assert len(xs) == 50 and torch.allclose(out, x0, atol=1e-4)


def test_loss_is_the_noise_mse_for_a_model_that_predicts_zero():
    d = GaussianDiffusion(100, "cosine")
    torch.manual_seed(0)
    loss = d.loss(lambda x, t: torch.zeros_like(x), torch.zeros(256, 3, 8, 8))
    assert loss.item() == pytest.approx(1.0, abs=0.02)  # E[eps^2] = 1


# --- guidance ---------------------------------------------------------------------------------


def small_unet():
    torch.manual_seed(0)
    m = UNet(res=8, ch=8, mults=(1, 2), attn_res=(4,), n_classes=4).eval()
    for p in m.parameters():  # the output conv starts at zero: make the model non-trivial
        p.data.add_(0.05 * torch.randn_like(p))
    return m


def test_cfg_at_scale_one_is_the_conditional_prediction_and_zero_the_unconditional():
    m = small_unet()
    x, t, y = torch.randn(3, 3, 8, 8), torch.tensor([10, 500, 900]), torch.tensor([0, 1, 3])
    with torch.no_grad():
        cond, uncond = m(x, t, y), m(x, t, torch.full_like(y, 4))
        assert not torch.allclose(cond, uncond)
        null = dict(y=torch.full_like(y, 4))
        guided = lambda s: classifier_free(m, s, dict(y=y), null)(x, t)  # noqa: E731
        assert torch.allclose(guided(1.0), cond, atol=1e-5)
        assert torch.allclose(guided(0.0), uncond, atol=1e-5)
        w3 = guided(3.0)
        assert torch.allclose(w3, uncond + 3 * (cond - uncond), atol=1e-4)
    # At scales 1 and 0 only the prediction that counts is computed: a batch of 3, not 6.
    sizes = []
    counted = lambda x, t, y: sizes.append(len(x)) or m(x, t, y)  # noqa: E731
    with torch.no_grad():
        for s in (1.0, 0.0, 3.0):
            classifier_free(counted, s, dict(y=y), null)(x, t)
    assert sizes == [3, 3, 6]


def test_min_snr_weights_match_hang_et_al():
    # Hand-computed: at SNR 20 with gamma 5, eps-loss x 5/20, x0-loss x 5, v-loss x 5/21;
    # at SNR 0.5 (below gamma), eps-loss x 1, x0-loss x 0.5, v-loss x 0.5/1.5.
    for pred, hi, lo in [("eps", 5 / 20, 1.0), ("x0", 5.0, 0.5), ("v", 5 / 21, 0.5 / 1.5)]:
        d = GaussianDiffusion(100, prediction=pred)
        d.abar = np.array([20 / 21, 0.5 / 1.5] + [0.5] * 98)
        w = d.min_snr_weight(torch.tensor([0, 1]), 5.0)
        assert w.tolist() == pytest.approx([hi, lo], rel=1e-5), pred


def test_loss_where_counts_only_the_marked_entries():
    # A model exact on the left half and predicting zeros on the right: loss 0 over the left,
    # E[eps^2] = 1 over the right, and their mean 1/2 over all.
    d = GaussianDiffusion(100)
    x0, noise = torch.randn(256, 3, 4, 4), torch.randn(256, 3, 4, 4)
    left = torch.zeros(256, 1, 4, 4)
    left[..., :2] = 1
    half = lambda xt, t: noise * left  # noqa: E731
    assert d.loss(half, x0, noise=noise, where=left).item() == 0.0
    assert d.loss(half, x0, noise=noise, where=1 - left).item() == pytest.approx(1.0, abs=0.05)
    assert d.loss(half, x0, noise=noise).item() == pytest.approx(0.5, abs=0.03)


def test_loss_averages_over_every_non_batch_dimension_of_vectors():
    # The diffusion prior of 07 denoises vectors (B, D): a model that predicts the noise exactly
    # has zero loss, one that predicts zeros has loss E[eps^2] = 1, with any conditioning kwarg.
    d = GaussianDiffusion(100, clip_x0=False)
    x0, noise = torch.randn(512, 16), torch.randn(512, 16)
    exact = lambda xt, t, emb: noise  # noqa: E731
    zero = lambda xt, t, emb: torch.zeros_like(xt)  # noqa: E731
    assert d.loss(exact, x0, noise=noise, emb=x0).item() == 0.0
    assert d.loss(zero, x0, noise=noise, emb=x0).item() == pytest.approx(1.0, abs=0.05)


def test_classifier_guidance_gradient_raises_the_log_probability():
    torch.manual_seed(0)
    clf = NoisyClassifier(5, res=8, ch=8, attn_res=(4,))
    for p in clf.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, t, y = (
        torch.randn(4, 3, 8, 8),
        torch.tensor([100, 200, 300, 400]),
        torch.tensor([0, 1, 2, 3]),
    )
    logp = lambda z: torch.log_softmax(clf(z, t), -1)[torch.arange(4), y]  # noqa: E731
    grad = classifier_grad(clf, y, 1.0)(x, t)
    with torch.no_grad():
        assert (logp(x + 0.01 * grad) > logp(x)).all()
        assert (logp(x - 0.01 * grad) < logp(x)).all()


def test_guided_ddim_with_classifier_changes_the_samples():
    d = GaussianDiffusion(100, "cosine")
    clf = NoisyClassifier(5, res=8, ch=8, attn_res=(4,))
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    model = lambda z, t: 0.1 * z  # noqa: E731
    plain = d.ddim_sample(model, x, 5)
    guided = d.ddim_sample(model, x, 5, cond_fn=classifier_grad(clf, y, 10.0))
    guided_ddpm = d.ddpm_sample(model, x, cond_fn=classifier_grad(clf, y, 10.0))
    assert not torch.allclose(plain, guided) and guided_ddpm.shape == x.shape
    assert classifier_grad(clf, y, 0.0) is None  # scale 0 adds nothing: no gradient is taken


# --- blocks and the U-Net ----------------------------------------------------------------------


def test_timestep_embedding_by_hand():
    e = timestep_embedding(torch.tensor([0, 3]), 4)
    # half = 2 frequencies: 1 and 10000^-1/2 = 0.01; layout [cos, cos, sin, sin]
    assert torch.allclose(e[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    expected = torch.tensor([math.cos(3), math.cos(0.03), math.sin(3), math.sin(0.03)])
    assert torch.allclose(e[1], expected, atol=1e-6)


def test_resblock_starts_as_identity_and_reads_the_embedding():
    torch.manual_seed(0)
    block = ResBlock(8, 8, 16)
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(block(x, torch.randn(2, 16)), x)
    torch.nn.init.normal_(block.conv2.weight)
    a, b = block(x, torch.zeros(2, 16)), block(x, torch.ones(2, 16))
    assert not torch.allclose(a, b)


def test_unet_shapes_conditions_and_context():
    m = UNet(res=16, ch=8, mults=(1, 2), attn_res=(8,), n_classes=3, cond_dim=5, context_dim=6)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    out = m(x, t, torch.tensor([0, 3]), cond=torch.randn(2, 5), context=torch.randn(2, 7, 6))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialized output layer
    clf = NoisyClassifier(4, res=16, ch=8, attn_res=(8,))
    assert clf(x, t).shape == (2, 4)


# --- the class-conditional recipe ----------------------------------------------------------


def test_labels_are_color_times_shape_and_the_held_out_pair_is_never_trained():
    assert len(classes.CLASSES) == 18 and classes.NULL == 18
    assert classes.label_of("a purple triangle") in classes.HELD_OUT and len(classes.SEEN) == 17
    assert classes.caption_of(classes.label_of("red circle")) == "a red circle"
    _, y = cd.dataset(cd.model_config()["data"])
    assert set(y.tolist()) == set(classes.SEEN)


def test_training_lowers_the_loss_and_the_classifier_learns():
    cfg = cd.model_config(steps=60, lr=3e-3)
    model = cd.build_model(cfg)
    hist = cd.train_model(model, cfg, live_plot=False)
    assert np.mean(hist.loss[-10:]) < 0.8 * np.mean(hist.loss[:5])
    ccfg = cd.classifier_config(steps=200, lr=1e-2, batch=32)
    clf = cd.build_classifier(ccfg)
    x, y = cd.dataset(ccfg["data"])
    x, y, t = x[:256], y[:256], torch.full((256,), 5)  # nearly clean images

    def held_loss():
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(clf(x, t), y).item()

    before = held_loss()
    cd.train_classifier(clf, ccfg, live_plot=False)
    assert before > 2.8 and held_loss() < before - 0.2  # chance: log 18 = 2.89


def test_evaluate_on_real_renders_and_psnr():

    ds = datasets.make_dataset(200, res=16, seed=3, split="test", counts=(1,))
    labels = ds.scenes.color[:, 0] * 3 + ds.scenes.shape[:, 0]
    r = measures.label_table(ds.tensor(), labels.tolist())
    assert r["color"] == 1.0 and r["shape"] == 1.0 and r["count"] == 1.0
    assert 0.15 < r["spread"] < 0.3
    assert r["size_entropy"] > 0.9  # renders mix small and large about 50/50
    large = ds.scenes.size[:, 0] == 1
    one_size = measures.label_table(ds.tensor()[large], labels[large].tolist())
    assert one_size["size_entropy"] == 0.0 and one_size["color"] == 1.0
    x = torch.zeros(2, 3, 4, 4)  # the notebook's inversion PSNR is the tokenizers' function
    assert measures.psnr(x, x + 0.02) == pytest.approx(10 * math.log10(4 / 0.0004), rel=1e-4)


def test_cli_train_sample_evaluate(tmp_path, capsys):
    cli.main(["train", "diffusion"])
    out = tmp_path / "samples"
    cli.main(
        [
            "sample",
            "diffusion",
            "--label",
            "red circle",
            "--guidance",
            "cfg",
            "--scale",
            "3",
            "--n",
            "3",
            "--steps",
            "5",
            "--out",
            str(out),
        ]
    )
    assert len(list(out.glob("red_circle-*.png"))) == 3
    cli.main(
        [
            "sample",
            "diffusion",
            "--guidance",
            "classifier",
            "--n",
            "2",
            "--steps",
            "3",
            "--out",
            str(out),
        ]
    )
    capsys.readouterr()
    cli.main(["evaluate", "diffusion", "--json", "--n-per-class", "1"])
    import json

    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(rows) == {"conditional", "cfg"} and 0 <= rows["cfg"]["color"]["value"] <= 1
    assert rows["cfg"]["color"]["n"] == 17  # one sample of each seen class


def test_labels_of_single_object_scenes_are_their_colour_shape_class():
    s = shapes.sample_scenes(50, seed=1, split="test", counts=(1,))
    y = classes.labels_of(s)
    # The class list is colour-major over the three shapes: index = colour * 3 + shape.
    assert y.tolist() == (s.color[:, 0] * 3 + s.shape[:, 0]).tolist()
    names = zip(s.color[:3, 0], s.shape[:3, 0])
    expected = [f"a {shapes.COLOR_NAMES[c]} {shapes.SHAPES[k]}" for c, k in names]
    assert [classes.caption_of(int(v)) for v in y[:3]] == expected
