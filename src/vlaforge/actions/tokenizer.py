"""ActionTokenizer: continuous actions in [-1, 1] <-> the last `n_bins` ids of the base vocabulary.

OpenVLA discretizes every normalized action dimension into 256 uniform bins and overwrites the 256 least
used tokens of Llama 2 (ids 31744..31999 of the 32000-token base vocabulary) with them. The bin with the
largest value gets the *smallest* id, because ids are counted down from the end of the vocabulary.

A quirk kept for faithfulness: `np.digitize` against `linspace(-1, 1, 256)` gives 256 possible indices,
but decoding uses the 255 centres between consecutive edges, so the two extreme tokens decode to the same
value (+-0.99608) and the round-trip error is at most 1/255 of the range.
"""

from __future__ import annotations

import numpy as np

from vlaforge.constants import ACTION_MAX, ACTION_MIN, N_ACTION_BINS


class ActionTokenizer:
    """Maps normalized actions to token ids and back.

    Args:
        vocab_end: one past the last action token id, i.e. the size of the base vocabulary
            (`tokenizer.vocab_size`, 32000 for Llama 2). Added tokens such as `<PAD>` come after it.
        n_bins: number of uniform bins per action dimension.
        min_action: lower edge of the binned range (actions are clipped to it).
        max_action: upper edge of the binned range.
    """

    def __init__(
        self,
        vocab_end: int,
        n_bins: int = N_ACTION_BINS,
        min_action: float = ACTION_MIN,
        max_action: float = ACTION_MAX,
    ) -> None:
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {n_bins}")
        if vocab_end <= n_bins:
            raise ValueError(
                f"vocab_end={vocab_end} leaves no room for {n_bins} action tokens at the end of the vocabulary"
            )
        self.vocab_end = vocab_end
        self.n_bins = n_bins
        self.min_action, self.max_action = min_action, max_action
        self.bins = np.linspace(min_action, max_action, n_bins)  # [K] bin edges
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0  # [K-1] decode values (the quirk)

    @property
    def first_id(self) -> int:
        """Smallest action token id (31744 for Llama 2)."""
        return self.vocab_end - self.n_bins

    @property
    def begin_idx(self) -> int:
        """The original's `action_token_begin_idx`: ids strictly above it are action tokens (31743)."""
        return self.vocab_end - (self.n_bins + 1)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalized actions `[..., A]` -> token ids `[..., A]` (int64). Values are clipped to the range."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), self.min_action, self.max_action)
        bin_index = np.digitize(clipped, self.bins)  # 1..K (K only for exactly max_action)
        return (self.vocab_end - bin_index).astype(np.int64)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids `[..., A]` -> normalized actions `[..., A]` (float64), with the original's formula.

        Ids below the action range decode to the top bin centre and ids at or above `vocab_end` to the
        bottom one, exactly as `OpenVLAForActionPrediction.predict_action` does.
        """
        ids = np.asarray(token_ids, dtype=np.int64)
        centre_index = np.clip(self.vocab_end - ids - 1, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[centre_index]

    def is_action_token(self, token_ids: np.ndarray) -> np.ndarray:
        """Boolean mask of ids that fall in the action-token range."""
        ids = np.asarray(token_ids)
        return (ids > self.begin_idx) & (ids < self.vocab_end)
