"""What a CPU-only machine can do with the real model size: openvla-7b, random weights, bf16 then int8.

    .venv/bin/python scripts/full_size.py                    # needs ~16 GB of free RAM; takes minutes
    .venv/bin/python scripts/full_size.py --threads 2 --json full_size.json
    .venv/bin/python scripts/full_size.py --one-layer   # one 7B decoder layer in fp32 / bf16 / int8 (~2 GB)

Not a test (it needs ~16 GB and minutes). It builds the openvla-7b preset on the meta device, materializes
every parameter directly in bfloat16 (values copied from one shared random pool: values do not change the
speed, and drawing 7.5 B fresh normals would take minutes), and runs `predict_action` once. Then it converts
the LLM's Linear layers to int8 in place (`quantize_model(model, "int8")`, towers and `lm_head` stay bf16)
and runs it again. For each phase it prints latency, weight memory and the process's peak RSS (VmHWM,
reset before each phase). The prompt is random token ids of a typical instruction's length. glibc's malloc
thresholds are raised first, as the `vlaforge` command does (`VLAFORGE_MALLOC=default` keeps glibc's).

fp32 does not fit next to the other jobs of a 24 GB machine (30 GB of weights), so `--one-layer` compares
fp32 with bf16 and int8 on one decoder layer of the 7B shape, for a prefill (the sequence length of a
prediction) and for one decoding step, round-robin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psutil
import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device

from vlaforge.config import get_preset
from vlaforge.infer.quantize import Int8Linear, quantize_model, replace_linears, weight_bytes
from vlaforge.model.llm import text_config_to_hf
from vlaforge.model.vla import OpenVLA
from vlaforge.utils.allocator import tune_allocator

GB = 2**30
MIN_FREE_GB = 18  # ~15 GB of bf16 weights + activations + the Python/torch runtime, with a margin
POOL_ELEMENTS = 2**24  # one random pool (32 MB in bf16) that every parameter is filled from
INIT_STD = 0.02  # the Llama / ViT initializer range
PROMPT_TOKENS = 24  # "In: What action should the robot take to put the eggplant in the bowl?\nOut:" in Llama 2
ACTION_PREFIX_ID = 29871  # Llama 2's "▁" token that the original appends to every prompt
BOS_ID = 1
IMAGE_CHANNELS = 6  # two towers x RGB
SEQUENCE = 1 + 256 + PROMPT_TOKENS + 1  # BOS, patches, prompt, action prefix: what a prediction prefills
LAYER_ROUNDS = 10  # --one-layer: timed rounds
SYNTHETIC_STATS = {"synthetic": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}}


def status_gb(field: str) -> float:
    """VmRSS / VmHWM of this process, in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Resets VmHWM (peak RSS) to the current RSS, so the next phase's peak is its own."""
    Path("/proc/self/clear_refs").write_text("5")


def materialize_bf16(model: OpenVLA, seed: int) -> None:
    """Replaces every meta parameter by a bf16 CPU tensor filled from a shared random pool."""
    generator = torch.Generator().manual_seed(seed)
    pool = (torch.randn(POOL_ELEMENTS, generator=generator) * INIT_STD).to(torch.bfloat16)  # [POOL]
    for index, (name, param) in enumerate(list(model.named_parameters())):
        value = torch.empty(param.shape, dtype=torch.bfloat16)
        flat, offset, start = value.view(-1), (index * 7919) % POOL_ELEMENTS, 0  # a different window per tensor
        while start < flat.numel():  # every element written: every page resident, as after a real load
            n = min(POOL_ELEMENTS - offset, flat.numel() - start)
            flat[start : start + n].copy_(pool[offset : offset + n])
            start, offset = start + n, 0
        set_module_tensor_to_device(model, name, "cpu", value=value, dtype=torch.bfloat16)
    model.to(torch.bfloat16)  # the buffers (rotary frequencies, ...) too


def build_model(seed: int, llm_layers: int | None) -> OpenVLA:
    """openvla-7b on the meta device, then materialized in bf16: the peak stays at the bf16 size."""
    config = get_preset("openvla-7b")
    config.norm_stats = SYNTHETIC_STATS
    if llm_layers is not None:
        config.text_config["num_hidden_layers"] = llm_layers
    with init_empty_weights(include_buffers=False):
        model = OpenVLA(config)
    materialize_bf16(model, seed)
    return model.eval()


def make_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random prompt of a typical length and a random fused-tower image, batch 1."""
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(3, 31000, (PROMPT_TOKENS,), generator=generator)  # avoid specials and action ids
    input_ids = torch.cat([torch.tensor([BOS_ID]), words, torch.tensor([ACTION_PREFIX_ID])])[None]  # [1, T]
    pixel_values = torch.randn(1, IMAGE_CHANNELS, 224, 224, generator=generator)  # [1, 6, 224, 224]
    return input_ids, pixel_values


def timed_predict(model: OpenVLA, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> dict[str, float]:
    """One predict_action call: latency and the peak RSS during it."""
    reset_peak()
    start = time.perf_counter()
    action = model.predict_action(input_ids=input_ids, pixel_values=pixel_values, unnorm_key="synthetic")
    latency = time.perf_counter() - start
    return {"latency_s": latency, "peak_rss_gb": status_gb("VmHWM"), "action": [round(float(a), 4) for a in action]}


def run(seed: int, llm_layers: int | None) -> dict[str, dict]:
    """Build (bf16) -> predict -> int8 in place -> predict; returns the figures of each phase."""
    results: dict[str, dict] = {"baseline": {"rss_gb": status_gb("VmRSS")}}
    reset_peak()
    start = time.perf_counter()
    model = build_model(seed, llm_layers)
    results["build"] = {"seconds": time.perf_counter() - start, "peak_rss_gb": status_gb("VmHWM")}
    input_ids, pixel_values = make_inputs(seed)
    print(f"built openvla-7b in bf16: {weight_bytes(model) / GB:.2f} GiB of weights", flush=True)
    results["bf16"] = {"weights_gb": weight_bytes(model) / GB, **timed_predict(model, input_ids, pixel_values)}
    print(f"bf16: {results['bf16']}", flush=True)
    reset_peak()
    start = time.perf_counter()
    quantize_model(model, "int8")
    results["quantize"] = {"seconds": time.perf_counter() - start, "peak_rss_gb": status_gb("VmHWM")}
    results["int8"] = {"weights_gb": weight_bytes(model) / GB, **timed_predict(model, input_ids, pixel_values)}
    print(f"int8: {results['int8']}", flush=True)
    return results


def markdown(results: dict[str, dict], threads: int, llm_layers: int | None) -> str:
    """The results as the table recorded in docs/results.md."""
    rows = [
        "| phase | weights GiB | seconds | peak RSS GiB |",
        "|---|---|---|---|",
        f"| build on meta + materialize bf16 | {results['bf16']['weights_gb']:.2f} | "
        f"{results['build']['seconds']:.1f} | {results['build']['peak_rss_gb']:.2f} |",
        f"| predict_action, bf16 | {results['bf16']['weights_gb']:.2f} | "
        f"{results['bf16']['latency_s']:.1f} | {results['bf16']['peak_rss_gb']:.2f} |",
        f"| quantize LLM Linear layers to int8 (in place) | {results['int8']['weights_gb']:.2f} | "
        f"{results['quantize']['seconds']:.1f} | {results['quantize']['peak_rss_gb']:.2f} |",
        f"| predict_action, int8 (rest bf16) | {results['int8']['weights_gb']:.2f} | "
        f"{results['int8']['latency_s']:.1f} | {results['int8']['peak_rss_gb']:.2f} |",
    ]
    size = "openvla-7b" if llm_layers is None else f"openvla-7b with {llm_layers} Llama layers (dry run)"
    note = (
        f"{size}; torch {torch.__version__}, {threads} thread(s); "
        f"Python + torch alone: {results['baseline']['rss_gb']:.2f} GiB"
    )
    return note + "\n\n" + "\n".join(rows)


def one_layer(rounds: int) -> str:
    """Times one openvla-7b decoder layer in fp32, bf16 and int8 (prefill and one step); a markdown table."""
    import copy
    import statistics

    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = text_config_to_hf(get_preset("openvla-7b").text_config)
    config._attn_implementation = "sdpa"
    fp32 = LlamaDecoderLayer(config, layer_idx=0).eval()
    int8 = copy.deepcopy(fp32)
    replace_linears(int8, Int8Linear.from_linear)
    layers = {"fp32": (fp32, torch.float32), "bf16": (copy.deepcopy(fp32).bfloat16(), torch.bfloat16),
              "int8 (rest fp32)": (int8, torch.float32)}  # fmt: skip
    rows = ["| tokens | " + " | ".join(f"{name} ms (/ fp32)" for name in layers) + " |", "|---|---|---|---|"]
    for tokens in (SEQUENCE, 1):
        hidden = torch.randn(1, tokens, config.hidden_size)
        rotary = LlamaRotaryEmbedding(config)(hidden, torch.arange(tokens)[None])
        times: dict[str, list[float]] = {name: [] for name in layers}
        with torch.inference_mode():
            for _ in range(rounds + 1):  # the first round warms up and is dropped
                for name, (layer, dtype) in layers.items():
                    start = time.perf_counter()
                    layer(hidden.to(dtype), position_embeddings=tuple(t.to(dtype) for t in rotary))
                    times[name].append(time.perf_counter() - start)
        cells = [f"{statistics.median(t[1:]) * 1e3:.1f} "
                 f"({statistics.median(a / b for a, b in zip(t[1:], times['fp32'][1:])):.2f}x)"
                 for t in times.values()]  # fmt: skip
        rows.append(f"| {tokens} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    """Checks free memory, runs both phases, prints the table (and writes JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight pool and the inputs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--force", action="store_true", help=f"run even with less than {MIN_FREE_GB} GB free")
    parser.add_argument("--llm-layers", type=int, default=None, help="dry run: fewer Llama layers than 32")
    parser.add_argument("--one-layer", action="store_true", help="time one 7B decoder layer in fp32/bf16/int8")
    args = parser.parse_args()
    tune_allocator()  # as the vlaforge command does (VLAFORGE_MALLOC=default: glibc's defaults)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one_layer:
        print(f"one openvla-7b decoder layer; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
        print(one_layer(LAYER_ROUNDS))
        return 0
    free_gb = psutil.virtual_memory().available / GB
    if free_gb < MIN_FREE_GB and not args.force:
        print(f"only {free_gb:.1f} GB of RAM available; this needs {MIN_FREE_GB} GB (--force to try anyway)")
        return 2
    results = run(args.seed, args.llm_layers)
    print(markdown(results, torch.get_num_threads(), args.llm_layers))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
