"""The course's text side: one caption tokenizer for every text-conditional model from CLIP on
(CLIP, the noised CLIP, GLIDE, unCLIP), the empty caption of classifier-free guidance, and the
captioned training scenes (full and partial captions) that GLIDE and unCLIP train on."""

from __future__ import annotations

from t2i.world import grammar, shapes
from t2i.world.tokenizer import Tokenizer

TOKENIZER = Tokenizer()  # one caption tokenizer for CLIP, the noised CLIP, GLIDE and unCLIP
EMPTY = ""  # the null caption of classifier-free guidance (GLIDE sec. 4)


def captioned_scenes(n: int, seed: int, p_partial: float, counts=(1, 2), count_probs=None):
    """n training scenes and one caption each: full ("a small red circle at the top left") or,
    with probability p_partial, partial, each of size, colour and place kept with probability
    1/2."""
    probs = tuple(count_probs) if count_probs else None
    s = shapes.sample_scenes(n, seed=seed, split="train", counts=tuple(counts), count_probs=probs)
    return s, grammar.shorten(s, grammar.caption(s, seed=seed), p_partial, seed + 1)


def file_prefix(prompt: str, **_) -> str:
    """Sample files' name for a prompt: its words as the tokenizer reads them, joined by _."""
    words = TOKENIZER.decode(TOKENIZER.encode(prompt)).replace(",", "").replace(" ", "_")
    return words or "empty"


def caption_tokens(prompts, device) -> tuple:
    """(tokens of the prompts, tokens of the empty caption as many times): a caption condition
    and its null condition for classifier-free guidance, on `device`."""
    tok = TOKENIZER(list(prompts)).to(device)
    return tok, TOKENIZER(EMPTY).to(device).expand_as(tok)
