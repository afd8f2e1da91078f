"""Language model: any Hugging Face causal LM, built from the `text_config` of the checkpoint.

Box 3 of the paper's figure. openvla-7b stores only the *differences* of its Llama config from the
defaults of transformers 4.40.1, so those defaults are filled in here explicitly (notably rms_norm_eps 1e-6
and max_position_embeddings 2048, which differ from Llama-2-7b-hf). Writing them down keeps the model
identical whatever defaults a newer transformers release picks.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from vlaforge.config import ConfigError

# LlamaConfig defaults of transformers 4.40.1, which openvla-7b's diff-only text_config relies on.
ORIGINAL_LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# Keys of an old config dump that the LLM does not need (generation defaults and serialization flags).
_DROP = {"torch_dtype", "dtype", "transformers_version", "_name_or_path", "architectures", "use_cache"}


def text_config_to_hf(text_config: dict[str, Any]) -> PretrainedConfig:
    """The transformers config object for a checkpoint's `text_config` dict."""
    raw = {k: v for k, v in text_config.items() if k not in _DROP and v is not None}
    model_type = raw.pop("model_type", None)
    if model_type is None:
        raise ConfigError("text_config has no model_type (e.g. 'llama'); it names the LLM architecture")
    if model_type == "llama":
        raw = {**ORIGINAL_LLAMA_DEFAULTS, **raw}
        raw.setdefault("num_key_value_heads", raw["num_attention_heads"])
    try:
        return AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"transformers cannot build a {model_type!r} config from text_config: {err}") from err


def build_language_model(text_config: dict[str, Any], attn_implementation: str = "sdpa") -> PreTrainedModel:
    """A randomly initialized causal LM (`LlamaForCausalLM` for openvla-7b); weights are loaded later."""
    hf_config = text_config_to_hf(text_config)
    return AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
