"""Words written into images, for CLIP's typographic attack (Goh et al. 2021, "Multimodal
neurons"; CLIP paper sec. 7: an apple labelled "iPod" is read as an iPod).

A tiny hand-made bitmap font (3 x 5 pixels per letter, one pixel between letters) stamps a word
in dark ink onto a shapes-world image. Ink is not a palette colour, so the judge ignores it.

Serves notebooks 03 and 07.
"""

from __future__ import annotations

import numpy as np

INK = (30, 30, 30)
GLYPH_W, GLYPH_H = 3, 5

# Each letter: five rows of three pixels, "#" = ink.
FONT: dict[str, tuple[str, ...]] = {
    "a": (".#.", "#.#", "###", "#.#", "#.#"),
    "b": ("##.", "#.#", "##.", "#.#", "##."),
    "c": (".##", "#..", "#..", "#..", ".##"),
    "d": ("##.", "#.#", "#.#", "#.#", "##."),
    "e": ("###", "#..", "##.", "#..", "###"),
    "f": ("###", "#..", "##.", "#..", "#.."),
    "g": (".##", "#..", "#.#", "#.#", ".##"),
    "h": ("#.#", "#.#", "###", "#.#", "#.#"),
    "i": ("###", ".#.", ".#.", ".#.", "###"),
    "j": ("..#", "..#", "..#", "#.#", ".#."),
    "k": ("#.#", "#.#", "##.", "#.#", "#.#"),
    "l": ("#..", "#..", "#..", "#..", "###"),
    "m": ("#.#", "###", "###", "#.#", "#.#"),
    "n": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "o": (".#.", "#.#", "#.#", "#.#", ".#."),
    "p": ("##.", "#.#", "##.", "#..", "#.."),
    "q": (".#.", "#.#", "#.#", ".#.", "..#"),
    "r": ("##.", "#.#", "##.", "#.#", "#.#"),
    "s": (".##", "#..", ".#.", "..#", "##."),
    "t": ("###", ".#.", ".#.", ".#.", ".#."),
    "u": ("#.#", "#.#", "#.#", "#.#", "###"),
    "v": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "w": ("#.#", "#.#", "###", "###", "#.#"),
    "x": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "y": ("#.#", "#.#", ".#.", ".#.", ".#."),
    "z": ("###", "..#", ".#.", "#..", "###"),
}


def bitmap(word: str) -> np.ndarray:
    """The word as a bool array (5, 4 * len(word) - 1)."""
    cols = []
    for k, ch in enumerate(word.lower()):
        if k:
            cols.append(np.zeros((GLYPH_H, 1), bool))
        cols.append(np.array([[p == "#" for p in row] for row in FONT[ch]]))
    return np.concatenate(cols, axis=1)


def stamp(images: np.ndarray, words: list[str], top: np.ndarray | list[int]) -> np.ndarray:
    """Copies of uint8 images (n, H, W, 3) with words[i] written, centred, from row top[i]."""
    out = images.copy()
    width = images.shape[2]
    for img, word, y in zip(out, words, top):
        b = bitmap(word)
        x = max(0, (width - b.shape[1]) // 2)
        b = b[:, : width - x]
        img[y : y + GLYPH_H, x : x + b.shape[1]][b] = INK
    return out


def free_row(scenes, res: int = 32) -> np.ndarray:
    """For one-object scenes: a row where a word fits without covering the object (the bottom
    margin when the object sits in the top row, else the top margin)."""
    return np.where(scenes.cell[:, 0] // 3 == 0, res - GLYPH_H - 1, 1)
