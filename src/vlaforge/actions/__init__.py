"""Actions: the 256-bin action tokenizer and BOUNDS_Q99 normalization."""

from vlaforge.actions.normalize import (
    ActionStats,
    NormalizationError,
    normalize_actions,
    select_unnorm_key,
    unnormalize_actions,
)
from vlaforge.actions.tokenizer import ActionTokenizer

__all__ = [
    "ActionStats",
    "ActionTokenizer",
    "NormalizationError",
    "normalize_actions",
    "select_unnorm_key",
    "unnormalize_actions",
]
