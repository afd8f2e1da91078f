"""ActionTokenizer against facts verified on the original (shared/docs/openvla-reference.md §2.5, §4)."""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.actions.tokenizer import ActionTokenizer

LLAMA_VOCAB = 32000  # Llama 2's base vocabulary: the fact the original's id range derives from


@pytest.fixture
def tok() -> ActionTokenizer:
    return ActionTokenizer(vocab_end=LLAMA_VOCAB)


def test_id_range_is_the_last_256_base_ids(tok):
    assert (tok.first_id, tok.begin_idx) == (31744, 31743)
    ids = tok.encode(np.linspace(-1, 1, 1001))
    assert ids.min() == 31744 and ids.max() == 31999
    assert tok.is_action_token(ids).all()
    assert not tok.is_action_token(np.array([31743, 32000, 2])).any()


def test_gripper_values_round_trip_as_in_the_original(tok):
    assert tok.encode(np.array([0.0]))[0] == 31872 and tok.decode(np.array([31872]))[0] == 0.0
    assert tok.encode(np.array([1.0]))[0] == 31744
    assert tok.decode(np.array([31744]))[0] == pytest.approx(0.99608, abs=1e-5)


def test_round_trip_error_is_at_most_one_bin(tok):
    values = np.random.default_rng(0).uniform(-1, 1, size=10_000)
    error = np.abs(tok.decode(tok.encode(values)) - values)
    assert error.max() <= 1 / 255 + 1e-12


def test_out_of_range_ids_decode_like_the_original(tok):
    # ids below the action range -> top bin centre; PAD and padding rows -> bottom bin centre
    decoded = tok.decode(np.array([5, 31743, 32000, 32063]))
    assert decoded.tolist() == pytest.approx([0.99608, 0.99608, -0.99608, -0.99608], abs=1e-5)


def test_values_are_clipped_and_batched_shapes_kept(tok):
    ids = tok.encode(np.array([[-7.0, 3.0], [0.5, -0.5]]))
    assert ids.shape == (2, 2) and ids[0].tolist() == [31999, 31744]


def test_bad_configuration():
    with pytest.raises(ValueError, match="leaves no room"):
        ActionTokenizer(vocab_end=100)
