"""LoRA and QLoRA for OpenVLA through peft: inject adapters, save/load them, merge them into plain weights.

LoRA freezes a weight `W` and learns a low-rank update: `W' = W + (alpha / r) * B @ A`, with `A` `[r, in]`
and `B` `[out, r]`. The original fine-tuning script (`vla-scripts/finetune.py`) uses rank 32, alpha
`min(r, 16)`, dropout 0, Gaussian init of `A` (`B` starts at zero, so training starts from the base model)
and `target_modules="all-linear"`. QLoRA keeps the frozen base weights in 4 bits (bitsandbytes NF4) and
trains the same adapters on top.

Target modules. peft's "all-linear" shorthand only knows which layer is the output head (to skip it) for a
transformers `PreTrainedModel`; OpenVLA is a plain `nn.Module`, so vlaforge resolves the shorthands itself,
into explicit module names, and hands peft that list:

| `target_modules`   | adapted modules                                                                   |
|--------------------|-----------------------------------------------------------------------------------|
| `all-linear`       | every `nn.Linear` (both ViTs, projector, every Llama linear) except `lm_head`      |
| `openvla`          | what finetune.py actually adapted with peft 0.11.1: every module whose *leaf* name |
|                    | is the leaf name of some Linear, so also `lm_head` and the Conv2d `patch_embed.proj`|
| other names        | modules whose full name is, or ends with, the given name (`q_proj`, `projector`)   |

Adapters are injected in place (`peft.inject_adapter_in_model`), so the model stays an `OpenVLA`; its
adapter files are peft's (`adapter_config.json`, `adapter_model.safetensors`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from vlaforge.config import ConfigError

if TYPE_CHECKING:
    from vlaforge.model.vla import OpenVLA

ADAPTER_CONFIG_NAME = "adapter_config.json"  # peft's file names
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_META_NAME = "vlaforge_adapter.json"  # vlaforge: base checkpoint and quantization of the base
ADAPTER_NAME = "default"  # peft's default adapter name
SHORTHANDS = ("all-linear", "openvla")
QUANTIZED_MODULES = "language_model.model"  # QLoRA quantizes the Llama decoder's linears (the bulk of 7B)


@dataclass
class LoRAConfig:
    """LoRA hyperparameters; the defaults are those of the original `finetune.py`."""

    rank: int = 32  # r: rank of the update B @ A
    alpha: int | None = None  # scaling numerator (update scaled by alpha / r); None: min(rank, 16) as finetune.py
    dropout: float = 0.0  # dropout on the adapter's input
    target_modules: tuple[str, ...] = ("all-linear",)  # "all-linear", "openvla", or module names (see module doc)
    init: Literal["gaussian", "kaiming"] = "gaussian"  # init of A (B starts at 0): gaussian as finetune.py
    quant_type: Literal["nf4", "fp4"] = "nf4"  # QLoRA only: 4-bit format of the frozen base weights

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0 (or None for min(rank, 16)), got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules is empty; use 'all-linear' or name the modules to adapt")

    @property
    def scale_alpha(self) -> int:
        """The alpha actually used."""
        return self.alpha if self.alpha is not None else min(self.rank, 16)


# --------------------------------------------------------------------------------------- targets
def _linear4bit() -> tuple[type, ...]:
    """bitsandbytes' 4-bit linear class once bitsandbytes is imported (no model holds one before that).

    Checking `sys.modules` keeps plain LoRA free of the bitsandbytes import and its CPU-kernel log lines.
    """
    bnb = sys.modules.get("bitsandbytes")
    return (bnb.nn.Linear4bit,) if bnb is not None else ()


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, *_linear4bit()))


def _adaptable(module: nn.Module) -> bool:
    return _is_linear(module) or isinstance(module, nn.Conv2d)


def resolve_target_modules(model: nn.Module, targets: tuple[str, ...] | list[str]) -> list[str]:
    """Full names of the modules to adapt (see the table in the module docstring).

    Raises:
        ConfigError: a name matches no adaptable module; the message lists a few that exist.
    """
    names: dict[str, None] = {}  # ordered set
    modules = dict(model.named_modules())
    for target in targets:
        if target == "all-linear":
            found = [n for n, m in modules.items() if _is_linear(m) and not n.endswith("lm_head")]
        elif target == "openvla":
            leaves = {n.rsplit(".", 1)[-1] for n, m in modules.items() if _is_linear(m)}
            found = [n for n, m in modules.items() if n.rsplit(".", 1)[-1] in leaves and _adaptable(m)]
        else:
            found = [n for n, m in modules.items() if (n == target or n.endswith("." + target)) and _adaptable(m)]
            if not found:  # a container name ("projector"): every adaptable module inside it
                prefix = target + "."
                found = [n for n, m in modules.items() if (n.startswith(prefix) or f".{prefix}" in n) and _adaptable(m)]
        if not found:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if _adaptable(m)})
            raise ConfigError(
                f"lora.target_modules entry {target!r} matches no Linear/Conv2d module; use one of "
                f"{', '.join(SHORTHANDS)} or a module name such as {', '.join(leaves[:12])}"
            )
        names.update(dict.fromkeys(found))
    return list(names)


# --------------------------------------------------------------------------------------- inject
def apply_lora(model: OpenVLA, config: LoRAConfig) -> OpenVLA:
    """Injects LoRA adapters in place and freezes everything else; returns the same model.

    Args:
        model: a plain (or 4-bit quantized, see `quantize_4bit`) OpenVLA.
        config: rank, alpha, dropout, targets, init.

    Returns:
        `model`, whose only trainable parameters are now the adapters' `lora_A` / `lora_B` (in fp32).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(model):
        raise ValueError("the model already has LoRA adapters; merge them (merge_lora) or start from a plain model")
    targets = resolve_target_modules(model, config.target_modules)
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.scale_alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        init_lora_weights="gaussian" if config.init == "gaussian" else True,
        bias="none",
    )
    inject_adapter_in_model(peft_config, model, adapter_name=ADAPTER_NAME)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
        if "lora_" in name:  # peft creates adapters in the base's dtype (bf16 for a bf16 base); keep them fp32
            param.data = param.data.float()
    model._lora_config = config  # noqa: SLF001 (kept for save_adapter)
    return model


def has_lora(model: nn.Module) -> bool:
    """True when peft adapter layers are present."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


def peft_config_of(model: nn.Module) -> dict[str, Any]:
    """The peft `LoraConfig` (as a dict) the adapters were created with."""
    from peft.tuners.lora import LoraLayer

    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    if not layers:
        raise ValueError("the model has no LoRA adapters")
    config: LoRAConfig = model._lora_config  # noqa: SLF001
    return {
        "peft_type": "LORA",
        "r": config.rank,
        "lora_alpha": config.scale_alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted(layers),
        "init_lora_weights": "gaussian" if config.init == "gaussian" else True,
        "bias": "none",
        "task_type": None,
    }


# --------------------------------------------------------------------------------------- QLoRA
def quantize_4bit(
    model: OpenVLA, quant_type: str = "nf4", compute_dtype: torch.dtype = torch.float32, within: str = QUANTIZED_MODULES
) -> OpenVLA:
    """Replaces every `nn.Linear` under `within` by a frozen bitsandbytes `Linear4bit` (in place).

    The default quantizes the Llama decoder (attention and MLP linears: 6.5B of openvla-7b's 7.5B weights);
    the vision towers, the projector, the embeddings and `lm_head` stay in full precision, as transformers'
    `load_in_4bit` also keeps the output head. bitsandbytes' CPU kernels need every quantized layer's
    `out_features` to be a multiple of 32 in eval mode (see docs/training.md).
    """
    import bitsandbytes as bnb

    root = model.get_submodule(within)
    device = next(model.parameters()).device
    for name, linear in list(root.named_modules()):
        if type(linear) is not nn.Linear:
            continue
        quantized = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            compute_dtype=compute_dtype, quant_type=quant_type,
        )  # fmt: skip
        quantized.weight = bnb.nn.Params4bit(linear.weight.data.float(), requires_grad=False, quant_type=quant_type)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data.float(), requires_grad=False)
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, child, quantized.to(device))
    return model


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The float weight of a plain or bitsandbytes 4-bit linear layer."""
    if not isinstance(layer, _linear4bit()):
        return layer.weight.detach()  # any module with a plain `weight`
    import bitsandbytes as bnb

    state = layer.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        # bitsandbytes repacks CPU weights for its eval-mode kernel; saving its state undoes that.
        layer.state_dict()
        state = layer.weight.quant_state
    return bnb.functional.dequantize_4bit(layer.weight.data, state).to(torch.float32)


def is_quantized(model: nn.Module) -> bool:
    """True when some layer holds bitsandbytes 4-bit weights."""
    return any(isinstance(m, _linear4bit()) for m in model.modules())


# --------------------------------------------------------------------------------------- merge
def merged_state_dict(model: OpenVLA) -> dict[str, torch.Tensor]:
    """The state dict of the plain OpenVLA equal to base + adapters: `W + (alpha / r) B @ A` per adapted layer.

    4-bit base weights are dequantized (so the result equals the quantized model with its adapters). The
    keys are those of a plain `OpenVLA`; the model itself is not modified.
    """
    from peft.tuners.lora import LoraLayer

    from vlaforge.model.vla import OpenVLA

    with torch.device("meta"):
        plain_keys = list(OpenVLA(model.config).state_dict())
    out: dict[str, torch.Tensor] = {}
    for key in plain_keys:
        module_name, _, attr = key.rpartition(".")
        module = model.get_submodule(module_name)
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            if attr == "weight":
                weight = dequantized_weight(base)
                delta = module.get_delta_weight(ADAPTER_NAME).detach()
                out[key] = (weight.to(torch.float32) + delta.to(torch.float32)).to(weight.dtype)
            else:
                out[key] = getattr(base, attr).detach()
        elif attr == "weight":
            out[key] = dequantized_weight(module)
        else:
            out[key] = getattr(module, attr).detach()
    return out


def plain_model(config: Any, state: dict[str, torch.Tensor], processor: Any = None) -> OpenVLA:
    """A plain OpenVLA built from a (merged) state dict without a second random initialization."""
    from accelerate import init_empty_weights

    from vlaforge.model.vla import OpenVLA

    with init_empty_weights(include_buffers=False):
        model = OpenVLA(config)
    model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True, assign=True)
    model.processor = processor
    return model.eval()


def merge_lora(model: OpenVLA) -> OpenVLA:
    """A new plain OpenVLA whose outputs equal those of `model` (base + adapters); `model` is unchanged."""
    return plain_model(model.config, merged_state_dict(model), model.processor)


# --------------------------------------------------------------------------------------- adapter files
def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors under peft's file key names (`...q_proj.lora_A.weight`)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()}


def save_adapter(model: nn.Module, path: str | Path, base: str | None = None, quantized: str | None = None) -> None:
    """Writes peft's adapter files plus `vlaforge_adapter.json` (which base, quantized or not) into `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), str(path / (ADAPTER_WEIGHTS_NAME + ".tmp")), metadata={"format": "pt"})
    os.replace(path / (ADAPTER_WEIGHTS_NAME + ".tmp"), path / ADAPTER_WEIGHTS_NAME)
    (path / ADAPTER_CONFIG_NAME).write_text(json.dumps(peft_config_of(model), indent=2) + "\n")
    meta = {"base": base, "quantized": quantized, "lora": asdict(model._lora_config)}  # noqa: SLF001
    (path / ADAPTER_META_NAME).write_text(json.dumps(meta, indent=2) + "\n")


@dataclass
class AdapterInfo:
    """What an adapter directory says about itself."""

    path: Path  # the adapter directory
    lora: LoRAConfig  # its hyperparameters
    base: str | None = None  # checkpoint directory of the base model, when recorded
    quantized: str | None = None  # "nf4"/"fp4" when trained on a 4-bit base (QLoRA)
    target_modules: list[str] = field(default_factory=list)  # the adapted modules' full names


def read_adapter(path: str | Path) -> AdapterInfo:
    """Reads an adapter directory written by `save_adapter`; errors say what is missing."""
    path = Path(path)
    for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a LoRA adapter directory: {name} is missing")
    peft_config = json.loads((path / ADAPTER_CONFIG_NAME).read_text())
    meta_file = path / ADAPTER_META_NAME
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    lora = LoRAConfig(**meta["lora"]) if "lora" in meta else LoRAConfig(
        rank=peft_config["r"], alpha=peft_config["lora_alpha"], dropout=peft_config.get("lora_dropout", 0.0)
    )  # fmt: skip
    lora.target_modules = tuple(peft_config["target_modules"])
    return AdapterInfo(path, lora, meta.get("base"), meta.get("quantized"), list(peft_config["target_modules"]))


def load_adapter(model: OpenVLA, path: str | Path) -> OpenVLA:
    """Injects the adapter saved in `path` into a plain (or 4-bit) base model and loads its weights."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    info = read_adapter(path)
    apply_lora(model, info.lora)
    state = load_file(str(Path(path) / ADAPTER_WEIGHTS_NAME))
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"adapter {path} does not fit this base model: {len(missing)} missing adapter tensors "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    return model


def merge_adapter_dir(adapter: str | Path, base: str | Path | None = None) -> OpenVLA:
    """Base checkpoint + adapter directory -> a plain OpenVLA with merged weights.

    Args:
        adapter: an adapter directory (`adapter_config.json` + `adapter_model.safetensors`), or a training
            checkpoint holding one in `adapter/` (its dataset statistics then go with the merged model).
        base: the base checkpoint directory; default: the one recorded when the adapter was saved.

    Returns:
        The merged model. For an adapter trained on a 4-bit base (QLoRA), the base is quantized first, so
        the merged weights are dequant(quant(W)) + delta: the model the adapter was trained with.
    """
    from vlaforge.model.vla import OpenVLA
    from vlaforge.model.weights import read_config

    adapter, stats_source = Path(adapter), None
    if (adapter / "adapter").is_dir() and not (adapter / ADAPTER_CONFIG_NAME).is_file():
        adapter, stats_source = adapter / "adapter", adapter
    info = read_adapter(adapter)
    base = base if base is not None else info.base
    if base is None or not Path(base).is_dir():
        raise FileNotFoundError(
            f"the base checkpoint of adapter {adapter} ({base}) is not a directory; pass --base DIR"
        )
    model = OpenVLA.from_pretrained(base, dtype=torch.float32)
    if info.quantized:
        quantize_4bit(model, info.quantized)
    load_adapter(model, adapter)
    merged = merge_lora(model)
    if stats_source is not None and (stats_source / "config.json").is_file():
        merged.config.norm_stats = read_config(stats_source).norm_stats
    return merged
