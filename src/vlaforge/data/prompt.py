r"""The OpenVLA prompt, its token ids, and the labels that put the loss on the action tokens only.

Training sequence:  [BOS] In: What action should the robot take to {instruction}?\nOut: ▁ a1 .. aA [EOS]
Inference prompt:   [BOS] In: What action should the robot take to {instruction}?\nOut: ▁

The "▁" is what the tokenizer makes of the space after "Out:" when action tokens follow (id 29871 for
Llama 2). The original appends a hard-coded 29871 at inference; here the id(s) are derived from the
tokenizer once, so any tokenizer works. The original also builds the training string by decoding action
ids to text and re-tokenizing; here the ids are concatenated directly, which gives the same ids without
relying on that round trip.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from vlaforge.constants import IGNORE_INDEX, PROMPT_TEMPLATE

_PROBE = PROMPT_TEMPLATE.format(instruction="probe")


def action_prefix_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids a trailing space after the prompt adds ([29871] for Llama 2)."""
    without = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    with_space = tokenizer(_PROBE + " ", add_special_tokens=False)["input_ids"]
    if with_space[: len(without)] != without or len(with_space) == len(without):
        raise ValueError("this tokenizer does not encode a trailing space as separate tokens after the prompt")
    return with_space[len(without) :]


class PromptBuilder:
    """Builds prompt ids (inference) and prompt + action ids with labels (training).

    Args:
        tokenizer: the model's text tokenizer (prepends BOS).
        max_length: longest accepted prompt in tokens (the config's `llm_max_length`).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prefix_ids = action_prefix_ids(tokenizer)
        if tokenizer.eos_token_id is None or tokenizer.bos_token_id is None:
            raise ValueError("the tokenizer needs a BOS and an EOS token")
        self.eos_id: int = tokenizer.eos_token_id
        self._prompt_cache: dict[str, list[int]] = {}  # instruction -> prompt ids (datasets repeat instructions)

    @staticmethod
    def prompt_text(instruction: str) -> str:
        """The prompt string; the instruction is lower-cased as in the original."""
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
        if not instruction.strip():
            raise ValueError("instruction is empty; say what the robot should do, e.g. 'pick up the cup'")
        return PROMPT_TEMPLATE.format(instruction=instruction.lower())

    def prompt_ids(self, instruction: str) -> list[int]:
        """`[BOS, prompt..., prefix]`: what the model sees before its first action token."""
        cached = self._prompt_cache.get(instruction) if isinstance(instruction, str) else None
        if cached is not None:
            return list(cached)
        ids = self.tokenizer(self.prompt_text(instruction))["input_ids"] + self.prefix_ids
        if len(ids) > self.max_length:
            raise ValueError(
                f"instruction is too long: the prompt has {len(ids)} tokens, the model accepts {self.max_length}"
            )
        if len(self._prompt_cache) < 65_536:  # bounded: one entry per distinct instruction
            self._prompt_cache[instruction] = list(ids)
        return ids

    def training_ids(
        self, instruction: str, action_ids: list[int], predict_stop_token: bool = True
    ) -> tuple[list[int], list[int]]:
        """Input ids and labels of one training sample.

        The labels are IGNORE_INDEX everywhere except the action tokens and the stop token: the loss is on
        actions only (and on EOS, unless `predict_stop_token` is False).
        """
        prompt = self.prompt_ids(instruction)
        input_ids = prompt + list(action_ids) + [self.eos_id]
        n_labelled = len(action_ids) + (1 if predict_stop_token else 0)
        labels = [IGNORE_INDEX] * (len(input_ids) - len(action_ids) - 1) + list(action_ids) + [self.eos_id]
        if not predict_stop_token:
            labels[-1] = IGNORE_INDEX
        assert sum(label != IGNORE_INDEX for label in labels) == n_labelled  # internal invariant
        return input_ids, labels
