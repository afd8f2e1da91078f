"""The model a run trains: where it comes from, which vocabulary it uses, and which parameters train.

Sources: a model preset (fresh random weights, e.g. `tiny`) or a checkpoint directory (`OpenVLA.from_pretrained`
format). A fresh model gets a byte-level BPE tokenizer trained on the dataset's instructions whose last 256
base ids are the action tokens (`vlaforge.data.tokenizer`); a checkpoint brings its own tokenizer (the Llama 2
tokenizer for openvla-7b). LoRA runs start from a base checkpoint: the given directory, or for a preset the
fresh model saved once into `output_dir/base` so that a resumed run and `vlaforge merge-lora` find the exact
same base weights.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from vlaforge.config import PRESETS, ConfigError, VLAConfig, get_preset
from vlaforge.model.lora import apply_lora, load_adapter, quantize_4bit
from vlaforge.model.vla import OpenVLA
from vlaforge.train.config import TrainConfig
from vlaforge.train.data import TrainData, check_action_dim

log = logging.getLogger(__name__)

BASE_DIR = "base"  # output_dir/base: the fresh base model of a LoRA run started from a preset
NEW_HEADS = ("proprio_projector.*", "action_head.*")  # vlaforge heads absent from the original: always trained

# Which parameters train in each mode, as name patterns (freezing is data, not code).
TRAINABLE: dict[str, tuple[str, ...]] = {
    "full": ("*",),
    "frozen-vision": ("projector.*", "language_model.*", *NEW_HEADS),
    "lora": ("*.lora_A.*", "*.lora_B.*", *NEW_HEADS),
    "qlora": ("*.lora_A.*", "*.lora_B.*", *NEW_HEADS),
}


def set_trainable(model: torch.nn.Module, mode: str) -> None:
    """Sets `requires_grad` from the mode's patterns in `TRAINABLE`."""
    patterns = TRAINABLE[mode]
    for name, param in model.named_parameters():
        param.requires_grad_(any(fnmatch.fnmatchcase(name, p) for p in patterns))


def parameter_counts(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """`{top-level module: (trainable, frozen)}` parameter counts, plus "total"."""
    counts: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        entry = counts.setdefault(name.split(".", 1)[0], [0, 0])
        entry[0 if param.requires_grad else 1] += param.numel()
    counts["total"] = [sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())]
    return {k: (v[0], v[1]) for k, v in counts.items()}


# ------------------------------------------------------------------------------------------- vocabulary
def vocab_rows(tokenizer: PreTrainedTokenizerBase, multiple: int) -> int:
    """Embedding rows for a tokenizer: `len(tokenizer)` (base + `<PAD>`) rounded up to `multiple`."""
    return -(-len(tokenizer) // multiple) * multiple


def fit_config_to_tokenizer(config: VLAConfig, tokenizer: PreTrainedTokenizerBase) -> VLAConfig:
    """Points the config's `<PAD>` id, action-token range and vocabulary size at the tokenizer (in place)."""
    if tokenizer.pad_token_id is None:
        raise ConfigError("the tokenizer has no <PAD> token; add it right after the base vocabulary")
    config.pad_token_id = tokenizer.pad_token_id
    config.action_vocab_end = None if tokenizer.vocab_size == tokenizer.pad_token_id else tokenizer.vocab_size
    rows = vocab_rows(tokenizer, config.pad_to_multiple_of)
    config.text_config = {**config.text_config, "vocab_size": rows, "pad_token_id": tokenizer.pad_token_id}
    config.validate()
    return config


def fresh_model(cfg: TrainConfig, data: TrainData) -> OpenVLA:
    """A model preset with random weights (seeded) and a tokenizer trained on the dataset's instructions."""
    from vlaforge.data.prompt import PromptBuilder
    from vlaforge.data.tokenizer import build_tokenizer

    config = get_preset(cfg.model)
    prompts = [PromptBuilder.prompt_text(text) for text in data.instructions]  # merges learn the template too
    tokenizer = build_tokenizer(prompts, cfg.data.tokenizer_merges, config.n_action_bins)
    fit_config_to_tokenizer(config, tokenizer)
    if config.parallel_decoding and config.action_dim is None:
        config.action_dim = data.action_dim
    return OpenVLA.create(config, tokenizer, seed=cfg.seed)


def is_checkpoint(model: str) -> bool:
    """True when `model` names a checkpoint directory (it holds config.json); otherwise it must be a preset."""
    return (Path(model) / "config.json").is_file()


def peek_model_config(cfg: TrainConfig) -> VLAConfig:
    """The config of the model `cfg.model` names, without building it (for checks before any work)."""
    from vlaforge.model.weights import read_config

    if is_checkpoint(cfg.model):
        return read_config(Path(cfg.model))
    if cfg.model in PRESETS:
        return get_preset(cfg.model)
    if Path(cfg.model).is_dir():
        raise ConfigError(f"model directory {cfg.model!r} has no config.json; it is not a checkpoint")
    raise ConfigError(
        f"model {cfg.model!r} is neither a model preset ({', '.join(PRESETS)}) nor a checkpoint directory; "
        "pass --model tiny to train from scratch, or download a checkpoint (e.g. openvla/openvla-7b) and pass "
        "its directory"
    )


def use_bf16(precision: str) -> bool:
    """bf16 autocast for "bf16", and for "auto" on GPUs that support it (CPUs train in fp32 by default)."""
    if precision == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def base_dtype(cfg: TrainConfig) -> torch.dtype:
    """Weights dtype at load: fp32 master weights for what trains; a frozen LoRA base in bf16 under bf16."""
    return torch.bfloat16 if cfg.uses_lora and use_bf16(cfg.precision) else torch.float32


def load_checkpoint_model(path: str | Path, dtype: torch.dtype = torch.float32) -> OpenVLA:
    """A checkpoint directory with its tokenizer (fp32 by default: the training master weights)."""
    model = OpenVLA.from_pretrained(path, dtype=dtype)
    if model.processor is None:
        raise ConfigError(
            f"checkpoint {path} has no tokenizer files; training needs its tokenizer (for openvla-7b, the "
            "Llama 2 tokenizer: tokenizer.model / tokenizer.json next to config.json)"
        )
    return model


# ------------------------------------------------------------------------------------------- building
def base_model(cfg: TrainConfig, data: TrainData, resume_dir: Path | None) -> OpenVLA:
    """The model before adapters: from the resumed checkpoint (full modes), a checkpoint or a fresh preset."""
    run_base = Path(cfg.output_dir) / BASE_DIR
    if resume_dir is not None and not cfg.uses_lora:
        return load_checkpoint_model(resume_dir)
    if cfg.uses_lora and run_base.is_dir():
        return load_checkpoint_model(run_base, base_dtype(cfg))
    if is_checkpoint(cfg.model):
        return load_checkpoint_model(cfg.model, base_dtype(cfg))
    return fresh_model(cfg, data)


def build_model(cfg: TrainConfig, data: TrainData, resume_dir: Path | None) -> OpenVLA:
    """The model to train, with the dataset's statistics, adapters (LoRA modes) and trainable flags set.

    Args:
        cfg: the run's config.
        data: the opened training data (instructions, statistics, action dimension).
        resume_dir: the checkpoint a resumed run continues from, or None.
    """
    model = base_model(cfg, data, resume_dir)
    check_action_dim(model.config, data)
    model.config.norm_stats = data.statistics  # the dataset(s) this model is now trained on, as finetune.py
    if cfg.mode == "qlora":
        compute = torch.bfloat16 if use_bf16(cfg.precision) else torch.float32
        quantize_4bit(model, cfg.lora.quant_type, compute_dtype=compute)
    if cfg.uses_lora:
        torch.manual_seed(cfg.seed)  # the adapters' initialization
        if resume_dir is not None:
            load_adapter(model, resume_dir / "adapter")
        else:
            apply_lora(model, cfg.lora)
    set_trainable(model, cfg.mode)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def base_checkpoint_for(cfg: TrainConfig) -> Path:
    """Where the frozen base of a LoRA run lives: the given checkpoint directory, or output_dir/base."""
    return Path(cfg.model) if is_checkpoint(cfg.model) else Path(cfg.output_dir) / BASE_DIR


def save_fresh_base(cfg: TrainConfig, data: TrainData) -> Path | None:
    """LoRA from a preset: writes the fresh base model to output_dir/base once (rank 0 only).

    Every rank (and a resumed run, and `vlaforge merge-lora`) then loads these exact weights.
    Returns the directory written, or None when there was nothing to do.
    """
    target = Path(cfg.output_dir) / BASE_DIR
    if not cfg.uses_lora or is_checkpoint(cfg.model) or target.is_dir():
        return None
    model = fresh_model(cfg, data)
    model.config.norm_stats = data.statistics
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tmp.rename(target)
    return target
