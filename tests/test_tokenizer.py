import pytest
import torch

from t2i.world import grammar, shapes
from t2i.world.tokenizer import VOCAB, Tokenizer


def test_round_trip_and_layout():
    tok = Tokenizer()
    text = "a small red circle to the left of a large blue square"
    ids = tok(text)
    assert ids.shape == (1, tok.context_length) and ids.dtype == torch.long
    assert ids[0, 0] == tok.bos_id
    n = len(text.split())
    assert ids[0, n + 1] == tok.eos_id and (ids[0, n + 2 :] == tok.pad_id).all()
    assert tok.decode(ids[0]) == text
    assert tok.eot_index(ids).item() == n + 1


def test_every_generated_caption_fits_and_round_trips():
    tok = Tokenizer()
    caps = grammar.caption(shapes.sample_scenes(3000, seed=0), seed=0)
    ids = tok(caps)
    assert [tok.decode(row) for row in ids] == caps


def test_unknown_words_are_named():
    with pytest.raises(ValueError, match=r"\['avocado', 'chair'\]"):
        Tokenizer().encode("a red avocado chair")


def test_overlong_prompt_errors_or_truncates_with_a_warning():
    tok = Tokenizer(context_length=8)
    long = "a small red circle to the left of a large blue square"
    with pytest.raises(ValueError, match="context length of 8"):
        tok.encode(long)
    with pytest.warns(UserWarning, match="context length of 8"):
        ids = tok.encode(long, truncate=True)
    assert len(ids) == 8 and ids[-1] == tok.eos_id and ids[0] == tok.bos_id


def test_vocabulary_has_specials_first_and_no_duplicates():
    assert VOCAB[:3] == ["<pad>", "<bos>", "<eos>"]
    assert len(VOCAB) == len(set(VOCAB))
