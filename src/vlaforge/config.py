"""Typed model configuration, its `config.json` form (the released openvla-7b layout) and named presets.

`VLAConfig` holds exactly what `config.json` of an openvla-7b checkpoint holds, plus a few optional
vlaforge fields. `VLAConfig.from_dict` reads a released `config.json` as it is; `to_dict` writes one that
the original loader would also accept. Presets are plain instances: `get_preset("tiny")`.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from vlaforge.constants import N_ACTION_BINS

DINOV2_REG4_L14 = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_SO400M_14 = "vit_so400m_patch14_siglip_224"

# Keys of a Hugging Face `PretrainedConfig` dump that carry no meaning for vlaforge (generation defaults,
# labels, serialization flags). They are accepted on load and not written back.
_HF_GENERIC_KEYS = {
    "_name_or_path", "add_cross_attention", "architectures", "auto_map", "bad_words_ids",
    "begin_suppress_tokens", "bos_token_id", "chunk_size_feed_forward", "cross_attention_hidden_size",
    "decoder_start_token_id", "diversity_penalty", "do_sample", "dtype", "early_stopping",
    "encoder_no_repeat_ngram_size", "eos_token_id", "exponential_decay_length_penalty", "finetuning_task",
    "forced_bos_token_id", "forced_eos_token_id", "id2label", "is_decoder", "is_encoder_decoder", "label2id",
    "length_penalty", "max_length", "min_length", "no_repeat_ngram_size", "num_beam_groups", "num_beams",
    "num_return_sequences", "output_attentions", "output_hidden_states", "output_projector_states",
    "output_scores", "prefix", "problem_type", "pruned_heads", "remove_invalid_values", "repetition_penalty",
    "return_dict", "return_dict_in_generate", "sep_token_id", "suppress_tokens", "task_specific_params",
    "temperature", "tf_legacy_loss", "tie_encoder_decoder", "tie_word_embeddings", "tokenizer_class", "top_k",
    "top_p", "torch_dtype", "torchscript", "transformers_version", "typical_p", "use_bfloat16", "model_type",
    "use_fused_vision_backbone",
}  # fmt: skip


# vlaforge's extension fields and their defaults: omitted from config.json while they keep these values.
_EXTENSION_DEFAULTS = {"action_head": "tokens", "action_chunk": 1, "action_dim": None, "proprio_dim": 0,
                       "num_images": 1, "history": 1}  # fmt: skip


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


@dataclass
class VLAConfig:
    """Architecture of an OpenVLA model and the metadata its checkpoint carries.

    Field names follow the released `config.json` so that checkpoints load by their own names.
    """

    # --- Vision: one timm tower, or two fused on the channel axis (DINOv2 first, as the original).
    timm_model_ids: list[str] = field(default_factory=lambda: [DINOV2_REG4_L14, SIGLIP_SO400M_14])
    image_sizes: list[int] = field(default_factory=lambda: [224, 224])  # input resolution per tower
    timm_override_act_layers: list[str | None] = field(default_factory=lambda: [None, None])  # act per tower
    timm_model_kwargs: list[dict[str, Any]] | None = None  # vlaforge: per-tower timm overrides (depth, ...)
    image_resize_strategy: Literal["resize-naive", "letterbox"] = "resize-naive"  # how images reach 224 px

    # --- Language model: any Hugging Face causal-LM config (Llama 2 for openvla-7b).
    text_config: dict[str, Any] = field(default_factory=dict)  # as saved: may hold only the diffs
    pad_token_id: int = 32000  # id of <PAD>, added right after the base vocabulary
    pad_to_multiple_of: int = 64  # embedding rows are padded to a multiple of this
    llm_max_length: int = 2048  # maximum prompt length the tokenizer pads/truncates to
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"  # attention kernel of the LLM

    # --- Actions.
    n_action_bins: int = N_ACTION_BINS  # uniform bins per action dimension
    action_vocab_end: int | None = None  # vlaforge: one past the last action id; None = pad_token_id
    norm_stats: dict[str, Any] | None = None  # per-dataset statistics, selected by `unnorm_key`

    # --- Beyond the original (vlaforge extensions; the defaults reproduce openvla-7b exactly).
    action_head: Literal["tokens", "parallel-tokens", "l1"] = "tokens"  # AR bins | one-pass bins | one-pass L1
    action_chunk: int = 1  # K: future actions predicted per observation (K > 1 needs a parallel head)
    action_dim: int | None = None  # A: action dimensions; required by the parallel heads
    proprio_dim: int = 0  # > 0: the robot state is projected into one extra token after the patches
    num_images: int = 1  # cameras per observation (e.g. third-person + wrist), each adds P patch tokens
    history: int = 1  # frames of the first camera: the current one and history - 1 earlier ones

    # --- Identity: names the original uses; kept so that configs round-trip unchanged.
    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "no-align+fused-gelu-mlp"
    hf_llm_id: str = "meta-llama/Llama-2-7b-hf"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def use_fused_vision_backbone(self) -> bool:
        """True when two towers are fused (3-layer projector), False for one (2-layer projector)."""
        return len(self.timm_model_ids) == 2

    @property
    def parallel_decoding(self) -> bool:
        """True when all action positions are predicted in one forward pass (OFT-style)."""
        return self.action_head != "tokens"

    @property
    def images_per_sample(self) -> int:
        """Images per sample.

        Order: the first camera's `history - 1` earlier frames (oldest first), then the current frame of
        every camera (the first camera first).
        """
        return self.history - 1 + self.num_images

    @property
    def vocab_end(self) -> int:
        """Size of the base vocabulary; the action tokens are its last `n_action_bins` ids."""
        return self.pad_token_id if self.action_vocab_end is None else self.action_vocab_end

    def validate(self) -> None:
        """Raises ConfigError with a hint when fields disagree."""
        n = len(self.timm_model_ids)
        if n not in (1, 2):
            raise ConfigError(f"timm_model_ids must name 1 or 2 towers, got {n}: {self.timm_model_ids}")
        if len(self.image_sizes) != n:
            raise ConfigError(f"image_sizes has {len(self.image_sizes)} entries but there are {n} towers")
        if len(set(self.image_sizes)) != 1:
            raise ConfigError(f"all towers must see the same image size, got {self.image_sizes}")
        if len(self.timm_override_act_layers) != n:
            raise ConfigError(f"timm_override_act_layers needs {n} entries, got {self.timm_override_act_layers}")
        if self.timm_model_kwargs is not None and len(self.timm_model_kwargs) != n:
            raise ConfigError(f"timm_model_kwargs needs one dict per tower ({n}), got {len(self.timm_model_kwargs)}")
        if self.n_action_bins < 2:
            raise ConfigError(f"n_action_bins must be >= 2, got {self.n_action_bins}")
        self._validate_extensions()
        vocab = self.text_config.get("vocab_size")
        if vocab is not None and not self.n_action_bins < self.vocab_end <= vocab:
            raise ConfigError(
                f"the action tokens end at id {self.vocab_end} but the LLM vocabulary has {vocab} rows; "
                "set pad_token_id/action_vocab_end from the tokenizer (tokenizer.vocab_size)"
            )

    def _validate_extensions(self) -> None:
        if self.action_head not in ("tokens", "parallel-tokens", "l1"):
            raise ConfigError(f"action_head must be 'tokens', 'parallel-tokens' or 'l1', got {self.action_head!r}")
        if self.action_chunk < 1 or self.num_images < 1 or self.history < 1 or self.proprio_dim < 0:
            raise ConfigError("action_chunk, num_images and history must be >= 1 and proprio_dim >= 0")
        if self.action_chunk > 1 and not self.parallel_decoding:
            raise ConfigError(
                f"action_chunk={self.action_chunk} needs a parallel head: set action_head='parallel-tokens' or 'l1'"
            )
        if self.parallel_decoding and (self.action_dim is None or self.action_dim < 1):
            raise ConfigError(f"action_head={self.action_head!r} needs action_dim (the robot's action dimensions)")

    # ----------------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content, in the released openvla-7b layout."""
        out = {"model_type": "openvla", "use_fused_vision_backbone": self.use_fused_vision_backbone}
        out.update(asdict(self))
        out["text_config"] = dict(self.text_config)
        for optional in ("timm_model_kwargs", "action_vocab_end"):
            if out[optional] is None:
                del out[optional]
        for name, default in _EXTENSION_DEFAULTS.items():  # keep the released layout when unused
            if out[name] == default:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VLAConfig:
        """Reads a `config.json` dict (released openvla-7b or vlaforge)."""
        if raw.get("model_type") not in ("openvla", None):
            raise ConfigError(f"config.json has model_type {raw.get('model_type')!r}; expected 'openvla'")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known - _HF_GENERIC_KEYS)
        if unknown:
            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k
                     for k in unknown]  # fmt: skip
            raise ConfigError(f"config.json has unknown fields: {', '.join(hints)}")
        config = cls(**{k: copy.deepcopy(v) for k, v in raw.items() if k in known})
        fused = raw.get("use_fused_vision_backbone")
        if fused is not None and bool(fused) != config.use_fused_vision_backbone:
            raise ConfigError(
                f"use_fused_vision_backbone={fused} disagrees with {len(config.timm_model_ids)} timm_model_ids"
            )
        return config

    def save(self, path: str | Path) -> None:
        """Writes `config.json` to `path`."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> VLAConfig:
        """Reads `config.json` from `path`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no config file at {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(raw)


# ------------------------------------------------------------------------------------------- presets
def _openvla_7b() -> VLAConfig:
    """openvla-7b exactly: DINOv2-L/14-reg4 + SigLIP-So400m/14 at 224 px, Llama 2 7B with 32064 rows."""
    return VLAConfig(
        text_config={"model_type": "llama", "vocab_size": 32064, "pad_token_id": 32000, "torch_dtype": "bfloat16"},
    )


def _tiny() -> VLAConfig:
    """The real architecture at toy size: runs the whole pipeline on a CPU in seconds.

    Same towers as the fixture in shared/reference/openvla-tiny (depth 3, widths 32/48), a 2-layer Llama of
    width 64, and a vocabulary for vlaforge's byte-level tokenizer (`vlaforge.data.tokenizer`).
    """
    return VLAConfig(
        timm_model_kwargs=[
            {"depth": 3, "embed_dim": 32, "num_heads": 2},
            {"depth": 3, "embed_dim": 48, "num_heads": 3},
        ],
        text_config={
            "model_type": "llama",
            "vocab_size": 576,
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "pad_token_id": 515,
        },  # fmt: skip
        pad_token_id=515,
        llm_max_length=256,
        llm_backbone_id="tiny-llama",
        hf_llm_id="",
    )


def siglip_only(config: VLAConfig) -> VLAConfig:
    """`config` with its SigLIP tower alone (the paper's fusion ablation): same size, a 2-layer projector."""
    config.timm_model_ids = [SIGLIP_SO400M_14]
    config.image_sizes = config.image_sizes[-1:]
    config.timm_override_act_layers = [None]
    config.timm_model_kwargs = config.timm_model_kwargs[-1:]
    config.vision_backbone_id = "siglip-vit-so400m"
    config.arch_specifier = "no-align+gelu-mlp"
    config.validate()
    return config


def _tiny_siglip() -> VLAConfig:
    """`tiny` with a single SigLIP tower (the paper's fusion ablation); the projector has 2 layers."""
    return siglip_only(_tiny())


def _demo() -> VLAConfig:
    """The CPU demo on Meta-World: both towers, projector, Llama and action tokens, scaled down.

    98 px images (7 x 7 = 49 patches per tower), towers of width 96, a 3-layer Llama of width 192, a proprio
    token (the demo-feasibility study found it necessary at this budget) and the 256-bin action tokens read
    in one pass for a chunk of 4 actions. The vocabulary is resized to the tokenizer trained on the
    dataset's instructions when training starts.
    """
    config = _tiny()
    config.image_sizes = [98, 98]
    config.timm_model_kwargs = [
        {"depth": 4, "embed_dim": 96, "num_heads": 3},
        {"depth": 4, "embed_dim": 96, "num_heads": 3},
    ]
    config.text_config.update(
        hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4
    )
    config.llm_max_length = 128
    config.action_head, config.action_chunk, config.action_dim, config.proprio_dim = "parallel-tokens", 4, 4, 4
    config.llm_backbone_id = "demo-llama"
    config.validate()
    return config


def _demo_siglip() -> VLAConfig:
    """`demo` with the SigLIP tower only (the paper's fusion ablation, `vlaforge study`); 2-layer projector."""
    return siglip_only(_demo())


def _demo_ar() -> VLAConfig:
    """`demo` decoded as the original: one action per observation, its tokens one at a time (autoregressive)."""
    config = _demo()
    config.action_head, config.action_chunk = "tokens", 1
    config.validate()
    return config


def _demo_l1() -> VLAConfig:
    """`demo` with OpenVLA-OFT's continuous head: a chunk of 4 actions regressed in one pass with an L1 loss."""
    config = _demo()
    config.action_head = "l1"
    config.validate()
    return config


PRESETS = {
    "openvla-7b": _openvla_7b, "tiny": _tiny, "tiny-siglip": _tiny_siglip, "demo": _demo,
    "demo-siglip": _demo_siglip, "demo-ar": _demo_ar, "demo-l1": _demo_l1,
}  # fmt: skip


def get_preset(name: str) -> VLAConfig:
    """A fresh copy of the named preset; unknown names get a "did you mean" hint."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, 1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}.{hint}")
    return PRESETS[name]()
