"""DALL-E: masks, own padding tokens, loss weighting, top-k, seeded and primed sampling, and the
key/value cache (same logits and same tokens as rerunning the prefix)."""

import torch
import torch.nn.functional as F

from t2i import ch02_dalle as dalle
from t2i.blocks.layers import Block, KVCache
from t2i.ch01_dvae import vqvae
from t2i.core import checkpoint
from t2i.world import datasets, grammar


def tiny(layers="dense"):
    torch.manual_seed(0)
    return dalle.DALLETransformer(
        vqvae.VQAutoencoder(K=16, dim=8, width=8),
        d=32,
        n_layers=2,
        n_heads=2,
        text_len=12,
        layers=layers,
    ).eval()


def test_attention_mask_parts():
    m = dalle.attention_mask(text_len=3, grid=2, pattern="dense")
    assert torch.equal(m, torch.ones(7, 7, dtype=torch.bool).tril())
    row = dalle.attention_mask(3, 2, "row")
    assert row[3 + 2, :3].all()  # image tokens see all text
    assert not row[3 + 2, 3 + 1]  # token (1, 0) does not see (0, 1): another row
    assert row[3 + 3, 3 + 2] and not row[3 + 2, 3 + 3]  # same row, causal
    col = dalle.attention_mask(3, 2, "column")
    assert col[3 + 2, 3 + 0] and not col[3 + 2, 3 + 1]
    conv = dalle.attention_mask(3, 4, "conv")
    q = 3 + 2 * 4 + 2  # token (2, 2)
    assert conv[q, 3 + 1 * 4 + 1] and not conv[q, 3 + 0 * 4 + 0]  # 3x3 window only
    for pattern in dalle.PATTERNS:  # never the future
        assert not dalle.attention_mask(3, 4, pattern).triu(1).any()


def test_no_future_token_leaks():
    for layers in ("dense", ["row", "column"], ["conv", "dense"]):
        model = tiny(layers)
        text = model.text_tokens(["a red circle", "a blue square"])
        image = torch.randint(0, 16, (2, 63))
        base = model(text, image)
        changed = image.clone()
        changed[:, 40:] = (changed[:, 40:] + 1) % 16
        out = model(text, changed)
        p = model.text_len + 40  # logits at p read tokens up to p; image token 40 sits at p
        torch.testing.assert_close(out[:, :p], base[:, :p])
        assert not torch.allclose(out[:, p:], base[:, p:])


def test_own_padding_tokens_and_logits_mask():
    model = tiny()
    text = model.text_tokens(["a red circle"])[0]
    pads = text[5:]  # BOS a red circle EOS, then padding
    assert len(set(pads.tolist())) == len(pads)  # one padding token per position
    assert pads.min() >= len(model.tok)
    logits = model(model.text_tokens(["a red circle"]), torch.zeros(1, 63, dtype=torch.long))
    text_part, image_part = logits[0, :, : model.text_vocab], logits[0, :, model.text_vocab :]
    L = model.text_len
    assert torch.isinf(image_part[: L - 1]).all() and torch.isfinite(text_part[: L - 1]).all()
    assert torch.isinf(text_part[L - 1 :]).all() and torch.isfinite(image_part[L - 1 :]).all()


def test_loss_weights_text_one_eighth_image_seven_eighths():
    model = tiny()
    text = model.text_tokens(["a red circle", "a small blue square at the top"])
    image = torch.randint(0, 16, (2, 64))
    loss, logs = model.loss(text, image)
    logits = model(text, image[:, :-1])
    L = model.text_len
    t = F.cross_entropy(logits[:, : L - 1].transpose(1, 2), text[:, 1:])
    i = F.cross_entropy(logits[:, L - 1 :].transpose(1, 2), image + model.text_vocab)
    torch.testing.assert_close(loss, t / 8 + 7 * i / 8)
    assert abs(logs["text"] - t.item()) < 1e-5


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5, 1.0, -2.0, 0.0, 4.0, 0.2]])
    kept = torch.isfinite(dalle.top_k_filter(logits, 3))
    assert kept.sum() == 3 and kept[0, [1, 3, 8]].all()
    assert torch.isfinite(dalle.top_k_filter(logits, 0.5)).sum() == 5  # a fraction of the vocab
    assert torch.isfinite(dalle.top_k_filter(logits, None)).all()


def test_sampling_is_reproducible_and_priming_keeps_tokens():
    model = tiny()
    text = model.text_tokens(["a red circle"] * 3)
    a = dalle.sample_tokens(model, text, seed=1)
    b = dalle.sample_tokens(model, text, seed=1)
    c = dalle.sample_tokens(model, text, seed=2)
    assert a.shape == (3, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    prime = torch.randint(0, 16, (3, 24))
    out = dalle.sample_tokens(model, text, seed=3, prime=prime)
    assert torch.equal(out.flatten(1)[:, :24], prime)
    greedy = dalle.sample_tokens(model, text, top_k=1, seed=4)
    assert (greedy == greedy[0]).all()  # top-1: no randomness left, same caption, same image


def test_kv_cache_logits_match_full_forward():
    for layers in ("dense", ["row", "conv"]):
        model = tiny(layers)
        text = model.text_tokens(["a red circle", "a blue square"])
        image = torch.randint(0, 16, (2, 63))
        full = model(text, image)
        cache = [KVCache() for _ in model.blocks]
        steps = [model(text, image[:, :10], cache)]  # text and 10 primed tokens in one go
        steps += [model(text, image[:, :n], cache) for n in range(11, 64)]  # then one at a time
        assert len(cache[0]) == full.shape[1] and all(s.shape[1] == 1 for s in steps[1:])
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_in_a_causal_block_with_context():
    torch.manual_seed(0)
    block = Block(16, 2, context=True).eval()
    x, context = torch.randn(2, 9, 16), torch.randn(2, 5, 16)
    full = block(x, context=context, causal=True)
    cache = KVCache()
    steps = [block(x[:, :4], context=context, causal=True, cache=cache)]
    steps += [
        block(x[:, t : t + 1], context=context, causal=True, cache=cache) for t in range(4, 9)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_cached_sampling_gives_the_same_tokens():
    prime = torch.randint(0, 16, (3, 10))
    for layers in ("dense", ["row", "conv"]):
        model = tiny(layers)
        text = model.text_tokens(["a red circle", "a blue square", "a small green triangle"])
        for kw in (dict(seed=1), dict(seed=2, temperature=0.7, top_k=5), dict(seed=3, prime=prime)):
            cached = dalle.sample_tokens(model, text, **kw)
            assert torch.equal(cached, dalle.sample_tokens(model, text, use_cache=False, **kw))


def test_dalle_trains_and_generates(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    model = dalle.DALLE.load()
    hist = checkpoint.load(dalle.DALLE.path())["history"]
    assert sum(hist[-3:]) < sum(hist[:3])
    images = dalle.generate(model, ["a red circle", "a red circle", "a blue square"], top_k=8)
    assert images.shape == (3, 3, 32, 32) and images.min() >= -1 and images.max() <= 1


def test_partial_captions_shorten_only_one_and_two_object_scenes(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_DATA", str(tmp_path))
    vae = vqvae.VQAutoencoder(K=16, dim=8, width=8)  # grid 8: 32x32 renders
    model = dalle.DALLETransformer(vae, d=32, n_layers=1, n_heads=2, text_len=24, grid=8).eval()
    full, image = dalle.tokenize_dataset(model, 60, seed=3, p_partial=0.0)
    part, image2 = dalle.tokenize_dataset(model, 60, seed=3, p_partial=1.0)
    assert torch.equal(image, image2)  # the same scenes, only the captions differ
    counts = datasets.load_dataset(60, res=32, seed=3).scenes.count
    words = lambda ids: (ids < len(model.tok)).sum(1)  # noqa: E731 (real words, not pads)
    shorter = words(part) < words(full)
    assert not shorter[torch.from_numpy(counts == 3)].any()
    assert shorter[torch.from_numpy(counts <= 2)].float().mean() > 0.6


def test_the_seen_control_matches_the_held_out_counts_with_seen_pairs_only():
    sets = dalle.prompt_set(control=True)
    facts = {k: [grammar.parse_caption(c) for c in v] for k, v in sets.items()}
    counts = {k: sorted(len(f.objects) for f in v) for k, v in facts.items()}
    assert counts["seen control"] == counts["held-out"] and set(counts["held-out"]) == {1, 2}
    pairs = {
        k: [{(o["color"], o["shape"]) for o in f.objects} for f in v] for k, v in facts.items()
    }
    assert all(("purple", "triangle") not in p for p in pairs["seen control"])
    assert sum(("purple", "triangle") in p for p in pairs["held-out"]) >= counts["held-out"].count(
        1
    )
    assert list(dalle.prompt_set()) == ["single object", "two objects", "held-out"]
