"""A word-level tokenizer over the shapes world's caption vocabulary.

The papers use byte-pair encodings (DALL-E: 16,384 BPE tokens, 256 text positions; CLIP: 49,152,
76 positions + start/end). Our grammar has a few dozen words, so one token per word is enough and
keeps every token readable. Sequences are [BOS, words..., EOS, PAD, ...] of a fixed length.

Serves notebooks 00 and 02-07.
"""

from __future__ import annotations

import re

import torch

from t2i.core import runtime
from t2i.world import shapes

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = [PAD, BOS, EOS]

# Every word the caption grammar can write, plus a few that prompts typed by people often use.
_GRAMMAR_WORDS = (
    "a an the there is picture image of , and in on at to".split()
    + "left right top bottom center middle above below".split()
    + list(shapes.COLORS)
    + shapes.SHAPES
    + shapes.SIZES
)
VOCAB: list[str] = SPECIALS + sorted(set(_GRAMMAR_WORDS))
CONTEXT_LENGTH = 24


def words(text: str) -> list[str]:
    """Split a caption into lower-case words; a comma is a word of its own, and so is a number
    (no vocabulary has one: "2 red circles" is refused, not read as "red circles")."""
    return re.findall(r"[a-z]+|[0-9]+|,", text.lower())


def known_words(text: str, vocab=VOCAB) -> list[str]:
    """`words(text)`, or a ValueError that lists the ones outside the vocabulary."""
    ws = words(text)
    unknown = sorted({w for w in ws if w not in vocab})
    if unknown:
        raise ValueError(
            f"unknown word(s) {unknown} in {text!r}; the vocabulary has "
            f"{len(vocab) - len(SPECIALS)} words, see t2i.world.tokenizer.VOCAB"
        )
    return ws


class Tokenizer:
    """Maps captions to fixed-length id tensors and back."""

    def __init__(self, vocab: list[str] = VOCAB, context_length: int = CONTEXT_LENGTH):
        self.vocab = list(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = context_length
        self.pad_id, self.bos_id, self.eos_id = (self.ids[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, truncate: bool = False) -> list[int]:
        """Ids of [BOS, words, EOS] without padding.

        Unknown words raise a ValueError that lists them. A caption longer than the context
        raises too, unless truncate=True, which cuts it (keeping EOS) and warns.
        """
        ids = [self.bos_id] + [self.ids[w] for w in known_words(text, self.ids)] + [self.eos_id]
        if len(ids) > self.context_length:
            msg = (
                f"caption has {len(ids)} tokens with BOS/EOS, over the context length of "
                f"{self.context_length}: {text!r}"
            )
            if not truncate:
                raise ValueError(msg + " (pass truncate=True to cut it)")
            runtime.warn(msg + "; cut to fit")
            ids = ids[: self.context_length - 1] + [self.eos_id]
        return ids

    def __call__(self, texts: str | list[str], truncate: bool = False) -> torch.Tensor:
        """A (batch, context_length) long tensor, padded with PAD."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = self.encode(text, truncate=truncate)
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids) -> str:
        """Text of an id sequence, without the special tokens."""
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        bad = [i for i in ids if not 0 <= i < len(self.vocab)]
        if bad:
            raise ValueError(f"token ids {bad} are outside the vocabulary (0 to {len(self)})")
        ws = [self.vocab[i] for i in ids]
        text = " ".join(w for w in ws if w not in SPECIALS)
        return text.replace(" ,", ",")

    def eot_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position of EOS in each row (CLIP pools its text features there)."""
        return (tokens == self.eos_id).int().argmax(dim=-1)
