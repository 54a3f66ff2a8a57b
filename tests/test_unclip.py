"""unCLIP (notebook 07): slerp, PCA, the AR prior's codes and cache, the diffusion prior's causal
mask, best-of-n, and DDIM inversion through the decoder's interface."""

import math

import pytest
import torch
import torch.nn as nn

from t2i import ch03_clip as clip
from t2i import ch06_glide as glide
from t2i import ch07_unclip as unclip
from t2i.blocks.diffusion import GaussianDiffusion
from t2i.blocks.layers import KVCache
from t2i.core import recipe
from t2i.world.prompts import TOKENIZER

PRIOR = unclip.prior_config(d=32, layers=2, heads=4, embed=16)


def test_slerp_endpoints_unit_norm_and_constant_speed():
    gen = torch.Generator().manual_seed(0)
    a = nn.functional.normalize(torch.randn(5, 16, generator=gen), dim=-1)
    b = nn.functional.normalize(torch.randn(5, 16, generator=gen), dim=-1)
    assert torch.allclose(unclip.slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(unclip.slerp(a, b, 1.0), b, atol=1e-5)
    mid = unclip.slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=-1), torch.ones(5), atol=1e-5)
    # halfway in angle: equal angles to both ends, each half of the whole
    angle = lambda u, v: torch.arccos((u * v).sum(-1).clamp(-1, 1))  # noqa: E731
    assert torch.allclose(angle(a, mid), angle(a, b) / 2, atol=1e-4)
    assert torch.allclose(angle(mid, b), angle(a, b) / 2, atol=1e-4)
    # a hand-computed case: 90 degrees apart, a third of the way
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    expected = torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]])
    assert torch.allclose(unclip.slerp(e1, e2, 1 / 3), expected, atol=1e-6)


def test_pca_round_trip_with_all_components_and_variance_order():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(500, 8, generator=gen) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.3, 0.2, 0.1])
    pca = unclip.PCA(8).fit(z)
    assert torch.allclose(pca.decode(pca.encode(z)), z, atol=1e-4)
    assert (pca.variance[:-1] >= pca.variance[1:]).all()
    # the first component carries about 25 / 39.4 of the variance
    assert abs(pca.variance[0] / pca.variance.sum() - 25 / 39.43) < 0.05
    assert pca.components_for(0.5) == 1
    assert pca.components_for(1.0) == 8
    # fewer components: the error is the variance left out
    err = (pca.decode(pca.encode(z, 3)) - z).pow(2).sum(1).mean()
    assert abs(err - pca.variance[3:].sum()) / pca.variance[3:].sum() < 0.05


def test_quantizer_codes_and_bucket_medians():
    gen = torch.Generator().manual_seed(2)
    c = torch.randn(4000, 3, generator=gen)
    q = unclip.Quantizer(3, 8).fit(c)
    codes = q.encode(c)
    assert codes.dtype == torch.long and codes.min() == 0 and codes.max() == 7
    counts = torch.stack([torch.bincount(codes[:, j], minlength=8) for j in range(3)])
    assert (counts - 500).abs().max() <= 2  # equal-mass buckets
    # each bucket's median decodes back into its own bucket
    assert torch.equal(q.encode(q.decode(codes)), codes)
    # the error is below the width of the bucket (inner buckets of a standard normal)
    inner = (codes > 0) & (codes < 7)
    assert (q.decode(codes) - c).abs()[inner].max() < 0.5


def test_ar_prior_cached_sampling_matches_the_full_forward():
    torch.manual_seed(3)
    m = unclip.ARPrior(**PRIOR["model"], components=5, buckets=8, dot_buckets=4).eval()
    tok = TOKENIZER(["a red circle", "a small blue square at the top"])
    z = torch.randn(2, 16)
    dot = torch.tensor([1, 3])
    codes = torch.randint(0, 8, (2, 5))
    with torch.no_grad():
        full = m(tok, z, dot, codes)
        cache = [KVCache() for _ in m.blocks]
        step = [m.run(m.prefix(tok, z, dot), cache)[:, -1]]
        for j in range(4):
            h = (m.code(codes[:, j]) + m.code_pos[j])[:, None]
            step.append(m.run(h, cache)[:, -1])
    assert full.shape == (2, 5, 8)
    assert torch.allclose(full, torch.stack(step, 1), atol=1e-5)


def test_diffusion_prior_is_causal_and_reads_its_noised_input():
    torch.manual_seed(4)
    m = unclip.build_diffusion_prior(PRIOR).eval()
    tok = TOKENIZER(["a red circle", "a blue square"])
    zt, t = torch.randn(2, 16), torch.tensor([5, 500])
    x1, x2 = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        h1, h2 = m.hidden(x1, t, tok, zt), m.hidden(x2, t, tok, zt)
    # the noised embedding is the second-to-last token: nothing before it sees it
    assert torch.allclose(h1[:, :-2], h2[:, :-2], atol=1e-6)
    assert not torch.allclose(h1[:, -1], h2[:, -1], atol=1e-4)
    with torch.no_grad():
        out = m(x1, t, tok, zt)
    assert out.shape == (2, 16)


def test_best_of_picks_the_higher_dot_product():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cands = torch.tensor([[[0.6, 0.8], [0.8, 0.6]], [[0.6, 0.8], [0.8, 0.6]]])
    best = unclip.best_of(cands, text)
    assert torch.equal(best, torch.tensor([[0.8, 0.6], [0.6, 0.8]]))


class GaussianDecoder(nn.Module):
    """The exact eps of data x0 ~ N(0, s^2 I), through the decoder's interface (it ignores the
    caption and the embedding): eps(x_t) = sqrt(1 - a) x_t / (a s^2 + 1 - a)."""

    def __init__(self, diffusion, s=0.5, res=8):
        super().__init__()
        self.abar = torch.tensor(diffusion.abar, dtype=torch.float32)
        self.s, self.res = s, res
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, tokens, image_embed):
        a = self.abar[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * x / (a * self.s**2 + 1 - a)


def test_ddim_inversion_then_eta_zero_decoding_gives_the_image_back():
    diffusion = GaussianDiffusion(500, "cosine", "eps", clip_x0=False)
    decoder = GaussianDecoder(diffusion)
    x = 0.5 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    z = torch.zeros(4, 16)
    errors = {}
    for steps in (100, 400):
        x_T = unclip.invert(decoder, diffusion, x, z, scale=1.0, steps=steps)
        back = unclip.decode(decoder, diffusion, z, None, scale=1.0, steps=steps, eta=0.0, x_T=x_T)
        errors[steps] = float((back - x).abs().max())
    # DDIM inversion is exact up to its step size: the error shrinks as 1 / steps
    assert errors[100] < 0.06 and errors[400] < 0.015
    assert errors[400] < errors[100] / 3
    # not a model that returns the image whatever the noise: another x_T gives another image
    other = unclip.decode(
        decoder, diffusion, z, None, scale=1.0, steps=100, eta=0.0, x_T=torch.randn_like(x_T)
    )
    assert (other - x).abs().mean() > 0.2


def test_the_decoder_starts_as_glide_and_reads_the_embedding_only_after_training(monkeypatch):
    arch = dict(res=8, ch=8, mults=[1, 2], attn_res=[4], text_width=16, text_layers=1, heads=2)
    base_cfg = glide.base_config(**arch, init=None)
    torch.manual_seed(0)
    base = glide.build_base(base_cfg)
    with torch.no_grad():  # as if trained: no zero-initialized output layer left
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    monkeypatch.setattr(glide.GLIDE, "load", lambda cfg: (base, None))
    decoder = unclip.build_decoder(unclip.decoder_config(**arch, embed=16, init=base_cfg))
    state = decoder.state_dict()
    for name, value in base.state_dict().items():
        assert torch.equal(state[name], value), name
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 300])
    tok = TOKENIZER(["a red circle", "a blue square"])
    z1, z2 = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(decoder(x, t, tok, z1), decoder(x, t, tok, z2))
    # a gradient step on the zeroed projections makes z matter
    loss = (decoder(x, t, tok, z1) - x).square().mean()
    loss.backward()
    assert decoder.image_cond.weight.grad.abs().sum() > 0
    assert decoder.image_tokens.weight.grad.abs().sum() > 0
    # a base of another shape is refused, not half-loaded
    with pytest.raises(ValueError, match="does not fit"):
        unclip.build_decoder(unclip.decoder_config(**{**arch, "ch": 16}, embed=16, init=base_cfg))


def test_every_unclip_model_that_reads_clip_changes_its_cache_key_with_clips_config(monkeypatch):
    """unCLIP's decoder and priors train on CLIP's embeddings, so their configs nest CLIP's whole
    config: a change to CLIP's recipe (here its training steps) gives them new checkpoints
    instead of loading ones trained on another CLIP. The upsampler reads no embedding."""
    readers = (unclip.DECODER, unclip.PRIOR_DIFFUSION, unclip.PRIOR_AR)
    before = {r.name: r.path() for r in readers + (unclip.UNCLIP_UPSAMPLER,)}
    base = clip.default_config()
    monkeypatch.setattr(clip, "default_config", lambda **o: recipe.sections(base, steps=7, **o))
    for r in readers:
        assert r.config()["data"]["clip"]["train"]["steps"] == 7
        assert r.path() != before[r.name], r.name
    assert unclip.UNCLIP_UPSAMPLER.path() == before["unclip-upsampler"]
