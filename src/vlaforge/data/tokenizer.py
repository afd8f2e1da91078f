"""Text tokenizers whose last `n_action_bins` base-vocabulary ids are the action tokens.

openvla-7b uses the Llama 2 tokenizer from its checkpoint directory (32000 base ids, `<PAD>` = 32000
added after them). A model trained from scratch gets a small byte-level BPE tokenizer built here with the
same conventions: `<unk>`=0, `<s>`=1 (BOS), `</s>`=2 (EOS), then bytes and merges, then the action tokens
at the end of the base vocabulary, then `<PAD>` as the first added token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vlaforge.constants import N_ACTION_BINS

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama 2
PAD_TOKEN = "<PAD>"


def _byte_level_bpe(texts: list[str], n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a byte-level BPE: the specials, all 256 bytes, then `n_merges` merges."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIAL_TOKENS) + len(alphabet) + n_merges,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator(texts or [""], trainer=trainer)
    state = json.loads(bpe.to_str())["model"]  # the trained vocabulary and merges
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return dict(state["vocab"]), merges


def build_tokenizer(
    texts: Iterable[str] = (), n_merges: int = 0, n_action_bins: int = N_ACTION_BINS
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer, optionally trained on `texts` (e.g. a dataset's instructions).

    Args:
        texts: training texts for the merges; ignored when `n_merges` is 0 (pure bytes: no training).
        n_merges: number of BPE merges to learn (at most: a small corpus may support fewer).
        n_action_bins: action tokens appended at the end of the base vocabulary.

    Returns:
        A tokenizer with `vocab_size` = specials + 256 bytes + merges + action tokens, BOS prepended,
        and `<PAD>` added right after the base vocabulary.
    """
    vocab, merges = _byte_level_bpe(list(texts) if n_merges else [], n_merges)
    first_action = len(vocab)
    vocab.update({f"<act_{i}>": first_action + i for i in range(n_action_bins)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok.add_special_tokens(SPECIAL_TOKENS)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="right"
    )
    wrapped.add_special_tokens({"pad_token": PAD_TOKEN})
    return wrapped
