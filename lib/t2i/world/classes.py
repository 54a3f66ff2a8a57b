"""The class labels of notebook 05: a class is a (colour, shape) pair of a one-object scene,
6 x 3 = 18 classes plus a null label (index 18) for classifier-free guidance. The held-out pair
(purple triangle) keeps its class but is left out of every measured number. Later chapters
compare their caption models with 05's label model on these classes (`balanced_labels`)."""

from __future__ import annotations

import operator

import torch

from t2i.world import shapes
from t2i.world.tokenizer import words

CLASSES = [(c, s) for c in shapes.COLOR_NAMES for s in shapes.SHAPES]


NULL = len(CLASSES)


HELD_OUT = [CLASSES.index(p) for p in shapes.HELD_OUT_PAIRS]


SEEN = [i for i in range(len(CLASSES)) if i not in HELD_OUT]


def label_of(text: str) -> int:
    """'red circle' (or 'a red circle', any case) -> class index. Any other text (two colours,
    no shape, a size the class cannot hold) raises a ValueError that names it."""
    ws = words(text)
    ws = ws[1:] if ws[:1] == ["a"] else ws
    if len(ws) != 2 or ws[0] not in shapes.COLORS or ws[1] not in shapes.SHAPES:
        raise ValueError(
            f"label {text!r} is not one colour and one shape like 'red circle' (colours: "
            f"{', '.join(shapes.COLOR_NAMES)}; shapes: {', '.join(shapes.SHAPES)})"
        )
    return CLASSES.index((ws[0], ws[1]))


def label_index(label) -> int:
    """A class index from a 'red circle' string or an integer 0 to NULL (NULL: no label)."""
    if isinstance(label, str):
        return label_of(label)
    try:
        index = operator.index(label)
    except TypeError:
        raise ValueError(f"label {label!r} is not an integer 0 to {NULL} nor a string") from None
    if not 0 <= index <= NULL:
        raise ValueError(f"label {index} is outside 0 to {NULL} ({NULL} is the null label)")
    return index


def labels_of(scenes: shapes.Scenes) -> torch.Tensor:
    """The class index of each scene's first object (single-object scenes: their class)."""
    return torch.tensor(
        [
            CLASSES.index((shapes.COLOR_NAMES[c], shapes.SHAPES[s]))
            for c, s in zip(scenes.color[:, 0], scenes.shape[:, 0])
        ]
    )


def caption_of(label: int) -> str:
    color, shape = CLASSES[label]
    return f"a {color} {shape}"


def balanced_labels(n_per_class: int) -> list[int]:
    """Every seen class n_per_class times (the held-out class left out)."""
    return [c for c in SEEN for _ in range(n_per_class)]
