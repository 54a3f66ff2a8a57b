"""The captions of the shapes world: the grammar that writes them (full and partial) and the
parser that reads a caption back into the facts it claims (what the judge checks).

A full caption names size, colour, shape and place ("a small red circle at the top left"), or two
objects and their relation; a partial one keeps any subset of size, colour and place ("a red
circle"), as a student types. Serves every notebook (notebook 00 introduces it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from t2i.world.shapes import (
    COLOR_NAMES,
    COLORS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scenes,
    sample_scenes,
)
from t2i.world.tokenizer import known_words

_PREFIXES = ["a", "there is a", "a picture of a", "an image of a"]

MAX_OBJECTS = 3  # a scene holds one to three objects (`shapes.sample_scenes`)


_POSITION_PHRASES = {
    "center": ["in the center", "in the middle"],
    "left": ["on the left"],
    "right": ["on the right"],
    "top": ["at the top"],
    "bottom": ["at the bottom"],
}


_RELATION_PHRASES = {
    "left of": ["to the left of"],
    "right of": ["to the right of"],
    "above": ["above"],
    "below": ["below"],
}


def _position_phrase(cell: int, rng) -> str:
    name = POSITIONS[cell]
    if name in _POSITION_PHRASES:
        options = _POSITION_PHRASES[name]
        return options[rng.integers(len(options))]
    return ["at the ", "in the "][rng.integers(2)] + name


def _noun(s: Scenes, i: int, j: int) -> str:
    return f"{SIZES[s.size[i, j]]} {COLOR_NAMES[s.color[i, j]]} {SHAPES[s.shape[i, j]]}"


def caption(s: Scenes, seed: int = 0) -> list[str]:
    """One caption per scene, with some variety of wording (fixed by the seed).

    One object: size, colour, shape and position ("a small red circle at the top left").
    Two objects: both objects and, mostly, the relation of the first to the second.
    Three objects: the three objects.
    """
    rng = np.random.default_rng(seed + 7919)
    out = []
    for i in range(len(s)):
        prefix = _PREFIXES[rng.integers(len(_PREFIXES))]
        if s.count[i] == 1:
            text = f"{prefix} {_noun(s, i, 0)} {_position_phrase(s.cell[i, 0], rng)}"
        elif s.count[i] == 2:
            a, b = _noun(s, i, 0), _noun(s, i, 1)
            if rng.random() < 0.8:
                rel = _RELATION_PHRASES[RELATIONS[s.relation[i]]][0]
                text = f"{prefix} {a} {rel} a {b}"
            else:
                text = f"{prefix} {a} and a {b}"
        else:
            a, b, c = (_noun(s, i, j) for j in range(3))
            text = f"{prefix} {a}, a {b} and a {c}"
        out.append(text)
    return out


def partial_caption(s: Scenes, i: int, keep, rng) -> str:
    """A shorter caption of a one- or two-object scene: the shapes always, and each of size,
    colour and position (one object) or the relation (two objects) only where `keep` (three
    bools: size, colour, place) says so: "a circle", "a red circle", "a red circle and a blue
    square". What a person types is often this short (CLIP and GLIDE train on both kinds)."""
    words = [_PREFIXES[rng.integers(len(_PREFIXES))]]

    def noun(j):
        size = [SIZES[s.size[i, j]]] if keep[0] else []
        color = [COLOR_NAMES[s.color[i, j]]] if keep[1] else []
        return " ".join(size + color + [SHAPES[s.shape[i, j]]])

    words.append(noun(0))
    if s.count[i] == 1:
        if keep[2]:
            words.append(_position_phrase(s.cell[i, 0], rng))
    elif s.count[i] == 2:
        link = _RELATION_PHRASES[RELATIONS[s.relation[i]]][0] if keep[2] else "and"
        words += [link, "a", noun(1)]
    else:
        raise ValueError("partial captions are written for one- and two-object scenes")
    return " ".join(words)


def shorten(s: Scenes, captions: list[str], p_partial: float, seed: int) -> list[str]:
    """The captions with each one- or two-object scene's made partial with probability
    p_partial (each of size, colour and place kept with probability 1/2), as GLIDE and DALL-E
    train on."""
    captions, rng = list(captions), np.random.default_rng(seed)
    for i in np.flatnonzero((s.count <= 2) & (rng.random(len(s)) < p_partial)):
        captions[i] = partial_caption(s, i, rng.random(3) < 0.5, rng)
    return captions


def eval_prompts(n: int, seed: int, counts=(1,), partial: bool = False, split: str = "test"):
    """n prompts of fresh scenes of a split: full captions, or partial ones that keep the colour
    and drop size and place ("a red circle", "a red circle and a blue square"), so the judge has
    a colour and a shape to check: what a student types."""
    s = sample_scenes(n, seed=seed, split=split, counts=tuple(counts))
    if not partial:
        return caption(s, seed=seed)
    rng = np.random.default_rng(seed)
    return [partial_caption(s, i, (False, True, False), rng) for i in range(n)]


@dataclass
class CaptionFacts:
    """What a caption claims: objects (colour, shape, optional size and position), relation."""

    objects: list[dict] = field(default_factory=list)
    relation: str | None = None


def parse_caption(text: str) -> CaptionFacts:
    """Read the facts a caption states. Its words are split as the models' tokenizer splits
    them (lower case, punctuation dropped, a comma a word of its own): "A red circle." reads as
    "a red circle". Raises ValueError naming the words outside the tokenizer's vocabulary
    ("avocado" is not ignored), and on a caption that names no object."""

    words = known_words(text)
    facts = CaptionFacts()
    i = 0
    while i < len(words):
        w = words[i]
        if w in COLORS:
            obj = {"color": w}
            if i > 0 and words[i - 1] in SIZES:
                obj["size"] = words[i - 1]
            if i + 1 < len(words) and words[i + 1] in SHAPES:
                obj["shape"] = words[i + 1]
                i += 1
            facts.objects.append(obj)
        elif w in SHAPES:  # a shape without a colour ("a small circle")
            obj = {"shape": w}
            if i > 0 and words[i - 1] in SIZES:
                obj["size"] = words[i - 1]
            facts.objects.append(obj)
        i += 1
    rest = " ".join(words)
    for name, phrases in _RELATION_PHRASES.items():
        if any(f" {p} " in f" {rest} " for p in phrases):
            facts.relation = name
    if len(facts.objects) == 1:
        facts.objects[0]["position"] = _find_position(rest)
        if facts.objects[0]["position"] is None:
            del facts.objects[0]["position"]
    if not facts.objects:
        raise ValueError(f"no object found in caption {text!r}: name a colour or a shape")
    if len(facts.objects) > MAX_OBJECTS:  # the judge pairs objects by trying every assignment
        raise ValueError(
            f"caption {text!r} names {len(facts.objects)} objects: a scene of the shapes world "
            f"holds at most {MAX_OBJECTS}"
        )
    return facts


def _find_position(text: str) -> str | None:
    for name in sorted(POSITIONS, key=len, reverse=True):  # "top left" before "top"
        if f" {name}" in f" {text}":
            return name
    if " middle" in f" {text}":
        return "center"
    return None
