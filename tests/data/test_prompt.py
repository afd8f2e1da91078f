"""Prompt format, the action-prefix token derived from the tokenizer, and the action-only labels."""

from __future__ import annotations

import pytest

from vlaforge.constants import IGNORE_INDEX
from vlaforge.data.prompt import PromptBuilder, action_prefix_ids
from vlaforge.data.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_prompt_text_matches_openvla(tokenizer):
    text = PromptBuilder.prompt_text("Put Eggplant in Bowl")
    assert text == "In: What action should the robot take to put eggplant in bowl?\nOut:"


def test_prefix_is_what_a_trailing_space_encodes_to(tokenizer):
    prefix = action_prefix_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(prefix) == ["Ġ"]  # byte-level BPE's space, as Llama's "▁" (29871)


def test_prompt_ids_start_with_bos_and_end_with_the_prefix(tokenizer):
    builder = PromptBuilder(tokenizer, max_length=256)
    ids = builder.prompt_ids("open the drawer")
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1:] == builder.prefix_ids
    assert tokenizer.decode(ids[1:-1]) == PromptBuilder.prompt_text("open the drawer")


def test_labels_cover_only_action_and_stop_tokens(tokenizer):
    builder = PromptBuilder(tokenizer, max_length=256)
    actions = list(range(tokenizer.vocab_size - 7, tokenizer.vocab_size))
    ids, labels = builder.training_ids("open the drawer", actions)
    n_prompt = len(builder.prompt_ids("open the drawer"))
    assert ids == builder.prompt_ids("open the drawer") + actions + [tokenizer.eos_token_id]
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == actions + [tokenizer.eos_token_id]
    _, no_stop = builder.training_ids("open the drawer", actions, predict_stop_token=False)
    assert no_stop[-1] == IGNORE_INDEX and no_stop[n_prompt:-1] == actions


def test_tokenizer_puts_action_tokens_and_pad_where_the_model_expects(tokenizer):
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.vocab_size == 3 + 256 + 256  # specials, bytes, action tokens
    assert tokenizer.pad_token_id == tokenizer.vocab_size
    trained = build_tokenizer(["open the drawer", "close the drawer"] * 10, n_merges=8)
    assert trained.vocab_size == 3 + 256 + 8 + 256
    assert trained.convert_ids_to_tokens(trained.vocab_size - 256) == "<act_0>"
    assert len(trained("open the drawer")["input_ids"]) < len(tokenizer("open the drawer")["input_ids"])
