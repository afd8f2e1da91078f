"""`vlaforge bench infer`: decoding speed and quantization, one table per run, ratios from the same run.

    vlaforge bench infer                          # decoders x precisions on tiny, mid and demo
    vlaforge bench infer --table quant            # every quantization mode: memory, latency, agreement
    vlaforge bench infer --table backends         # int8 backends compared (torch.ao, torchao, quanto, ...)
    vlaforge bench infer --models mid --repeats 30 --threads 1 --output docs/results.md
    vlaforge bench infer --precisions fp32 --compile  # adds the loop under torch.compile (~30 s per model)

Decoders (same weights, same inputs, each in fp32 / bf16 / int8): AR through Hugging Face `generate` on
the multimodal embeddings (the original's path, the baseline), AR through vlaforge's KV-cache loop, the
same loop on a batch of 8, and parallel decoding of a chunk of 8 actions in one pass (the token-head
weights with `action_head="parallel-tokens"`); with `--compile`, also the loop under torch.compile. A
call goes from processed tensors to action token ids (vision included); the two AR decoders are timed once
more from the multimodal embeddings ("LLM only": the decoding alone, without the vision towers and the
projector that both share, ratios against HF `generate` from the same embeddings), and a third time as the
loop's matrix products and attention alone ("products + attention only": the floor of any decoding loop on
these kernels, see `kernel_floor`). Variants run round-robin, so
machine noise hits them alike; every ratio is the median of per-round ratios. Models use random weights
(`--checkpoint` times a trained one): speed does not depend on the values, and agreement with fp32 on
random weights is a pessimistic stand-in (small logit margins).
On a machine shared with other jobs, pass `--threads 1`: with more threads every parallel region waits for
its slowest, possibly descheduled, thread (measured 3-10x slower here).
"""

from __future__ import annotations

import copy
import gc
import logging
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import tyro

from vlaforge.config import PRESETS, VLAConfig, get_preset
from vlaforge.data.tokenizer import build_tokenizer
from vlaforge.infer.generate import (
    LayerPlan,
    Rows,
    greedy_decode,
    greedy_generate,
    last_rows,
    linear_fn,
    shared_input_fn,
)
from vlaforge.infer.quantize import (
    QUANT_MODES,
    action_agreement,
    check_mode,
    decoder_of,
    linear_weight_bytes,
    quantize_model,
    weight_bytes,
)
from vlaforge.model.vla import MultimodalInputs, OpenVLA

# "mid": the tiny towers with a Llama of width 512 x 4 layers (all Linear widths multiples of 32 for nf4).
MID_LLM = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4, "num_attention_heads": 8,
           "num_key_value_heads": 8}  # fmt: skip
DEFAULT_ACTION_DIM = 7  # OpenVLA's end-effector deltas + gripper
ACTION_ROW_GAIN = 4.0  # random weights: boost the action rows of lm_head so greedy decoding emits actions
INSTRUCTIONS = ("open the drawer", "push the red button down", "close the window", "pick up the can",
                "reach the green goal", "turn the faucet left", "press the handle", "slide the plate")  # fmt: skip
MS = 1e3
MB = 2**20


@dataclass
class Args:
    """Benchmark inference: decoders x precisions, or the quantization modes."""

    table: Literal["decoders", "quant", "backends"] = "decoders"  # decoders x precisions | modes | int8 backends
    models: tuple[str, ...] = ("tiny", "mid", "demo")  # presets, or "mid" (tiny towers + Llama 512 x 4)
    precisions: tuple[str, ...] = ("fp32", "bf16", "int8")  # decoders table: quantization modes to time
    repeats: int = 20  # timed rounds (every variant once per round)
    warmup: int = 2  # untimed calls per variant first
    batch: int = 8  # batch of the batched-AR row
    chunk: int = 8  # K of the parallel-decoding row
    held_out: int = 32  # quant table: observations the agreement with fp32 is measured on
    threads: int | None = None  # torch threads (default: torch's choice)
    compile: bool = False  # decoders table: also time the AR loop under torch.compile (opt-in, slow to compile)
    checkpoint: Path | None = None  # time/compare a trained checkpoint instead of random weights
    output: Path | None = None  # also append the table (markdown) to this file
    seed: int = 0  # weights and inputs


# ------------------------------------------------------------------------------------------- models
def bench_config(name: str) -> VLAConfig:
    """The config of a benchmark model: a preset name, or "mid"."""
    if name != "mid":
        return get_preset(name)
    config = get_preset("tiny")
    config.text_config.update(MID_LLM)
    config.llm_backbone_id = "mid-llama"
    return config


def head_config(config: VLAConfig, head: str | None, chunk: int) -> VLAConfig:
    """`config` with a token head (AR, chunk 1), a parallel token head reading `chunk` actions, or its own.

    `head` is "tokens", "parallel-tokens" or None (keep the config's head and chunk).
    """
    config = copy.deepcopy(config)
    config.action_dim = config.action_dim or DEFAULT_ACTION_DIM
    if head is not None:
        config.action_head, config.action_chunk = (head, chunk) if head == "parallel-tokens" else ("tokens", 1)
    config.validate()
    return config


def sharpen_(model: OpenVLA, seed: int) -> OpenVLA:
    """Random weights with unit-gain init and boosted action rows of `lm_head`.

    Greedy decoding then emits action tokens that depend on the input (Hugging Face's 0.02 init gives
    near-uniform logits, whose argmax is mostly a non-action token).
    """
    generator = torch.Generator().manual_seed(seed)
    tokenizer = model.action_tokenizer
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                fan_in = int(np.prod(param.shape[1:]))
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        model.language_model.lm_head.weight[tokenizer.first_id : tokenizer.vocab_end] *= ACTION_ROW_GAIN
    return model


def build_model(name: str, args: Args, head: str | None = "tokens") -> OpenVLA:
    """The benchmark model `name` (or `args.checkpoint`) in fp32, with the requested head (None: its own)."""
    if args.checkpoint is not None:
        trained = OpenVLA.from_pretrained(args.checkpoint, dtype=torch.float32)
        if trained.processor is None:
            raise ValueError(f"{args.checkpoint} has no tokenizer files; the benchmark builds prompts with them")
        model = OpenVLA(head_config(trained.config, head, args.chunk))
        missing, _ = model.load_state_dict(trained.state_dict(), strict=False)  # an L1 head is not used here
        if missing:
            raise ValueError(f"{args.checkpoint} lacks weights the benchmark needs, e.g. {missing[:3]}")
        model.processor = trained.processor
        return model.eval()
    model = OpenVLA.create(head_config(bench_config(name), head, args.chunk), build_tokenizer(), seed=args.seed)
    return sharpen_(model, args.seed)


@dataclass
class Inputs:
    """Processed model inputs for one batch."""

    input_ids: torch.Tensor  # [B, T]
    pixel_values: torch.Tensor  # [B, (N,) C, H, W]
    attention_mask: torch.Tensor | None  # [B, T]
    proprio: torch.Tensor | None  # [B, Dp]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]


def make_inputs(model: OpenVLA, n: int, seed: int) -> Inputs:
    """`n` synthetic observations: random images, instructions from a fixed list, random proprio."""
    config, rng = model.config, np.random.default_rng(seed)
    side, n_images = config.image_sizes[0], config.images_per_sample
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n * n_images)]
    per_sample = images if n_images == 1 else [images[i : i + n_images] for i in range(0, len(images), n_images)]
    batch = model.processor(per_sample, [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(n)])
    mask = batch["attention_mask"] if bool((batch["attention_mask"] == 0).any()) else None
    proprio = torch.from_numpy(rng.uniform(-1, 1, (n, config.proprio_dim))).float() if config.proprio_dim else None
    return Inputs(batch["input_ids"], batch["pixel_values"], mask, proprio)


# ------------------------------------------------------------------------------------------- decoders
def embed(model: OpenVLA, inputs: Inputs) -> MultimodalInputs:
    """The LLM's input: vision towers, projector and text embeddings (what both AR decoders start with)."""
    with torch.inference_mode():
        return model.embed_inputs(inputs.input_ids, inputs.pixel_values, inputs.attention_mask, proprio=inputs.proprio)


def hf_decode(model: OpenVLA, embeds: MultimodalInputs, n_tokens: int) -> torch.Tensor:
    """Hugging Face `generate` on multimodal embeddings. Returns `[B, n_tokens]`."""
    with torch.inference_mode():
        ids = model.language_model.generate(
            inputs_embeds=embeds.embeds, attention_mask=embeds.attention_mask, max_new_tokens=n_tokens,
            do_sample=False, eos_token_id=None,  # always A tokens, as vlaforge's loop
        )  # fmt: skip
    if ids.shape[1] != n_tokens:
        raise RuntimeError(f"generate returned {ids.shape[1]} tokens instead of {n_tokens}; the baseline is off")
    return ids


def hf_generate(model: OpenVLA, inputs: Inputs, n_tokens: int) -> torch.Tensor:
    """The baseline: Hugging Face `generate` on vlaforge's multimodal embeddings. Returns `[B, n_tokens]`."""
    return hf_decode(model, embed(model, inputs), n_tokens)


def own_loop(model: OpenVLA, inputs: Inputs, n_tokens: int, torch_compile: bool = False) -> torch.Tensor:
    """vlaforge's KV-cache loop (optionally under torch.compile). Returns `[B, n_tokens]`."""
    return greedy_generate(
        model, inputs.input_ids, inputs.pixel_values, inputs.attention_mask, n_tokens, proprio=inputs.proprio,
        torch_compile=torch_compile,
    )  # fmt: skip


def own_decode(model: OpenVLA, embeds: MultimodalInputs, n_tokens: int) -> torch.Tensor:
    """vlaforge's KV-cache loop on multimodal embeddings. Returns `[B, n_tokens]`."""
    return greedy_decode(model.language_model, embeds.embeds, embeds.attention_mask, n_tokens)


def split_heads(projected: torch.Tensor, batch: int, head_dim: int) -> torch.Tensor:
    """`[B*L, heads*hd] -> [B, heads, L, hd]` (a view, as the loop's)."""
    return projected.view(batch, -1, projected.shape[-1] // head_dim, head_dim).transpose(1, 2)  # [B, h, L, hd]


def kernel_floor(model: OpenVLA, embeds: MultimodalInputs, n_tokens: int) -> torch.Tensor:
    """The AR loop's matrix products and attention alone, on the loop's shapes: a floor for any decoding loop.

    Replays what the loop multiplies - every Linear layer on the rows it sees (the prefill's last layer: keys
    and values of all S positions, the rest for the last one; each decode step: one row) and SDPA with the
    same query lengths - and skips everything else: norms, rotary, SiLU, residual adds, KV-cache copies. The
    layers are resolved into functions once per call, as the loop's `DecoderPlan` does. A decode step attends
    to the S prompt keys only (the loop: S + t), so the floor is a lower bound. HF `generate` runs these
    products too (plus the last prefill layer in full), so no loop built on the same kernels is faster.
    Returns the argmax of the last head product (meaningless ids: no check is made).
    """
    llm, (batch, seq_len, width) = model.language_model, embeds.embeds.shape
    with torch.inference_mode():
        layers = [FloorLayer.of(layer, embeds.embeds.dtype) for layer in llm.get_decoder().layers]
        lm_head = linear_fn(llm.lm_head)
        rows, last = embeds.embeds.reshape(batch * seq_len, width), embeds.embeds[:, -1]  # [B*S, D], [B, D]
        cached = []
        for index, layer in enumerate(layers):
            shared = layer.plan.shared(rows)  # [B*S, D], or its int8 rows (quantized once, as the loop does)
            keys = split_heads(layer.plan.k(shared), batch, layer.plan.head_dim)  # [B, Hkv, S, hd]
            values = split_heads(layer.plan.v(shared), batch, layer.plan.head_dim)  # [B, Hkv, S, hd]
            cached.append((keys, values))
            if index < len(layers) - 1:
                layer.products(rows, shared, keys, values)
            else:  # the last layer: one position
                layer.products(last, last_rows(shared, batch, 1), keys, values)
        logits = lm_head(last)  # [B, V]
        for _ in range(n_tokens - 1):
            for layer, (keys, values) in zip(layers, cached):
                shared = layer.plan.shared(last)  # [B, D], or its int8 rows
                layer.plan.k(shared)  # [B, Hkv*hd]: the step's own key
                layer.plan.v(shared)  # [B, Hkv*hd]: and value
                layer.products(last, shared, keys, values)
            logits = lm_head(last)  # [B, V]
    return logits.argmax(dim=-1)


class FloorLayer(NamedTuple):
    """One decoder layer for `kernel_floor`: the loop's plan, plus the MLP's three products taken apart."""

    plan: LayerPlan  # q, k, v, o and the attention, as the loop resolves them
    shared: Callable[[torch.Tensor], Rows]  # what gate and up share of their input (`shared_input_fn`)
    gate: Callable[[Rows], torch.Tensor]  # [N, D] -> [N, I]
    up: Callable[[Rows], torch.Tensor]  # [N, D] -> [N, I]
    down: Callable[[torch.Tensor], torch.Tensor]  # [N, I] -> [N, D]

    @classmethod
    def of(cls, layer: torch.nn.Module, dtype: torch.dtype) -> FloorLayer:
        mlp = layer.mlp
        return cls(
            LayerPlan.of(layer, dtype), shared_input_fn((mlp.gate_proj, mlp.up_proj)), linear_fn(mlp.gate_proj),
            linear_fn(mlp.up_proj), linear_fn(mlp.down_proj),
        )  # fmt: skip

    def products(self, rows: torch.Tensor, shared: Rows, keys: torch.Tensor, values: torch.Tensor) -> None:
        """The products after the keys and values: q, attention (causal when Q > 1), o, gate, up, down.

        `rows` `[B*Q, D]` stand in for every input; `shared` is `plan.shared(rows)` (q's input, as in the loop).
        """
        query = split_heads(self.plan.q(shared), keys.shape[0], self.plan.head_dim)  # [B, H, Q, hd]
        out = self.plan.attend(query, keys, values, None, query.shape[2] > 1).reshape(rows.shape[0], -1)  # [B*Q, H*hd]
        self.plan.o(out)  # [B*Q, D]
        mlp_rows = self.shared(rows)  # [B*Q, D], or its int8 rows
        self.up(mlp_rows)  # [B*Q, I]
        self.down(self.gate(mlp_rows))  # [B*Q, D]


def parallel_ids(model: OpenVLA, inputs: Inputs) -> torch.Tensor:
    """Parallel decoding: one forward pass, `[B, K, A]` action token ids."""
    from vlaforge.model.action_heads import argmax_action_ids

    with torch.inference_mode():
        logits = model(inputs.input_ids, inputs.pixel_values, inputs.attention_mask, proprio=inputs.proprio).logits
    return argmax_action_ids(logits, model.action_tokenizer)


COMPILED_LOOP = "AR, vlaforge loop, torch.compile"
HF, LOOP = "AR, HF generate", "AR, vlaforge loop"
FLOOR = "AR, products + attention only"  # the loop's matrix products and attention alone (`kernel_floor`)
LLM_ONLY = ", LLM only"  # rows timed from the multimodal embeddings: the decoding alone, without the towers


@dataclass
class Case:
    """One timed variant: a model, a precision and a decoder."""

    model: str
    precision: str
    decoder: str
    batch: int
    actions_per_row: int
    run: Callable[[], torch.Tensor]  # one call: processed inputs (or embeddings, LLM_ONLY) -> action token ids
    note: str = ""
    scope: str = ""  # "" (a whole call, vision included) or LLM_ONLY; ratios compare rows of the same scope
    times: list[float] = field(default_factory=list)

    @property
    def actions_per_call(self) -> int:
        return self.batch * self.actions_per_row


def decoder_cases(name: str, precision: str, args: Args, ar_base: OpenVLA, parallel_base: OpenVLA) -> list[Case]:
    """The four decoders of one model in one precision (models are quantized copies of the fp32 ones)."""
    ar = quantize_model(copy.deepcopy(ar_base), precision)
    n_tokens = ar.config.action_dim
    single, batch = make_inputs(ar, 1, args.seed), make_inputs(ar, args.batch, args.seed)
    embeds = embed(ar, single)
    cases = [
        Case(name, precision, HF, 1, 1, lambda: hf_generate(ar, single, n_tokens)),
        Case(name, precision, LOOP, 1, 1, lambda: own_loop(ar, single, n_tokens)),
        Case(name, precision, HF + LLM_ONLY, 1, 1, lambda: hf_decode(ar, embeds, n_tokens), scope=LLM_ONLY),
        Case(name, precision, LOOP + LLM_ONLY, 1, 1, lambda: own_decode(ar, embeds, n_tokens), scope=LLM_ONLY),
        Case(name, precision, FLOOR + LLM_ONLY, 1, 1, lambda: kernel_floor(ar, embeds, n_tokens), scope=LLM_ONLY),
        Case(name, precision, f"batched AR (batch {args.batch})", args.batch, 1, lambda: own_loop(ar, batch, n_tokens)),
    ]  # fmt: skip
    if args.compile:
        compiled_loop = partial(own_loop, ar, single, n_tokens, torch_compile=True)
        cases.append(Case(name, precision, COMPILED_LOOP, 1, 1, compiled_loop))
    parallel = quantize_model(copy.deepcopy(parallel_base), precision)
    cases.append(
        Case(name, precision, f"parallel, chunk {args.chunk}", 1, args.chunk, lambda: parallel_ids(parallel, single))
    )
    hf_ids = cases[0].run()
    for case in cases:
        if case.decoder.startswith(LOOP):
            case.note = "ids = HF" if torch.equal(hf_ids, case.run()) else "ids differ from HF"
    return cases


def time_round_robin(cases: list[Case], repeats: int, warmup: int) -> None:
    """Times every runnable case once per round, `repeats` rounds, after `warmup` untimed calls each."""
    for case in cases:
        for _ in range(warmup):
            case.run()
    for _ in range(repeats):
        for case in cases:
            start = time.perf_counter()
            case.run()
            case.times.append(time.perf_counter() - start)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator/denominator (both timed in the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, linear interpolation."""
    return float(np.quantile(np.asarray(values), q))


def decoder_rows(cases: list[Case]) -> list[list[str]]:
    """Table rows; ratios against HF generate (same precision), fp32 (same decoder) and the AR loop."""
    find = {(c.precision, c.decoder): c for c in cases}
    rows = []
    for case in cases:
        hf, fp32 = find[(case.precision, HF + case.scope)], find.get(("fp32", case.decoder))
        loop = find[(case.precision, LOOP + case.scope)]
        speed_vs_ar = case.actions_per_call / paired_ratio(case.times, loop.times)
        p50 = percentile(case.times, 0.5)
        rows.append([
            case.model, case.precision, case.decoder, str(case.batch), f"{p50 * MS:.1f}",
            f"{percentile(case.times, 0.95) * MS:.1f}", f"{case.actions_per_call / p50:.1f}",
            f"{paired_ratio(case.times, hf.times):.2f}x",
            f"{paired_ratio(case.times, fp32.times):.2f}x" if fp32 else "n/a",
            f"{speed_vs_ar:.1f}x", case.note,
        ])  # fmt: skip
    return rows


DECODER_HEADER = ["model", "precision", "decoder", "batch", "p50 ms", "p95 ms", "actions/s",
                  "p50 / HF generate", "p50 / fp32", "actions/s / AR loop", "note"]  # fmt: skip


def run_decoders(args: Args) -> tuple[list[str], list[list[str]]]:
    """Times every decoder x precision for each model; returns the table."""
    rows = []
    for name in available_models(args):
        ar_base = build_model(name, args)
        parallel_base = build_model(name, args, head="parallel-tokens")
        cases = [c for p in args.precisions for c in decoder_cases(name, p, args, ar_base, parallel_base)]
        print(f"[{name}] timing {len(cases)} variants x {args.repeats} rounds", file=sys.stderr, flush=True)
        time_round_robin(cases, args.repeats, args.warmup)
        rows += decoder_rows(cases)
        print_targets(cases)
    return DECODER_HEADER, rows


def print_targets(cases: list[Case]) -> None:
    """The issue's targets, checked on the fp32 rows of one model."""
    find = {(c.precision, c.decoder): c for c in cases}
    for scope, what in (("", "whole call"), (LLM_ONLY, "LLM only")):
        hf, loop = find.get(("fp32", HF + scope)), find.get(("fp32", LOOP + scope))
        if hf and loop:
            ratio = paired_ratio(loop.times, hf.times)
            print(f"[{cases[0].model}] own AR loop / HF generate (fp32, {what}): {ratio:.2f}x (target <= 0.70x)")
    hf, floor = find.get(("fp32", HF + LLM_ONLY)), find.get(("fp32", FLOOR + LLM_ONLY))
    if hf and floor:
        ratio = paired_ratio(floor.times, hf.times)
        print(f"[{cases[0].model}] its products + attention alone / HF generate (fp32, LLM only): {ratio:.2f}x (floor)")
    hf, loop = find.get(("fp32", HF)), find.get(("fp32", LOOP))
    if hf and ("fp32", COMPILED_LOOP) in find:
        ratio = paired_ratio(find[("fp32", COMPILED_LOOP)].times, hf.times)
        print(f"[{cases[0].model}] own AR loop, torch.compile / HF generate (fp32): {ratio:.2f}x")
    parallel = [c for (p, d), c in find.items() if p == "fp32" and d.startswith("parallel")]
    if parallel and loop:
        gain = parallel[0].actions_per_call / paired_ratio(parallel[0].times, loop.times)
        print(f"[{cases[0].model}] parallel chunk actions/s / AR loop (fp32): {gain:.1f}x (target >= 8x)")


def available_models(args: Args) -> list[str]:
    """The requested models that exist (a preset that is not defined yet is skipped with a note)."""
    if args.checkpoint is not None:
        return [args.checkpoint.name]
    names = [n for n in args.models if n == "mid" or n in PRESETS]
    for missing in sorted(set(args.models) - set(names)):
        print(f"skipping {missing!r}: not a preset (available: mid, {', '.join(PRESETS)})")
    return names


# ------------------------------------------------------------------------------------------- quant table
def action_ids(model: OpenVLA, inputs: Inputs) -> torch.Tensor:
    """Greedy action ids by the model's own head: `[B, A]` (token head, AR loop) or `[B, K, A]` (parallel)."""
    if model.config.action_head == "tokens":
        return own_loop(model, inputs, model.config.action_dim or DEFAULT_ACTION_DIM)
    if model.config.action_head == "parallel-tokens":
        return parallel_ids(model, inputs)
    raise ValueError(f"action_head={model.config.action_head!r} predicts no tokens; agreement needs a token head")


def decoder_name(config: VLAConfig) -> str:
    """How a model decodes, for the tables."""
    return "AR" if config.action_head == "tokens" else f"parallel, chunk {config.action_chunk}"


def predict_ids(model: OpenVLA, inputs: Inputs, batch: int) -> torch.Tensor:
    """Action ids (see `action_ids`) for all observations, `batch` at a time."""
    parts = []
    for start in range(0, inputs.size, batch):
        rows = slice(start, start + batch)
        part = Inputs(
            inputs.input_ids[rows], inputs.pixel_values[rows],
            None if inputs.attention_mask is None else inputs.attention_mask[rows],
            None if inputs.proprio is None else inputs.proprio[rows],
        )  # fmt: skip
        parts.append(action_ids(model, part))
    return torch.cat(parts)


def read_status_mb(field_name: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def setup_process(args: Args) -> None:
    """Thread count, and bitsandbytes' logger quieted (on the CPU it logs a line per 8-bit matmul)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def peak_memory_child(name: str, mode: str, args: Args) -> dict[str, float]:
    """Runs in a fresh process: build, quantize, then one AR prediction with the peak RSS reset before it."""
    setup_process(args)
    if mode in ("bnb-int8", "nf4"):
        import bitsandbytes  # noqa: F401  (its import is part of the mode's baseline)
    baseline = read_status_mb("VmRSS")
    model = quantize_model(build_model(name, args, head=None), mode)
    inputs = make_inputs(model, 1, args.seed)
    gc.collect()
    ready = read_status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak RSS) to the current RSS
    action_ids(model, inputs)
    return {"baseline": baseline, "ready": ready, "peak": read_status_mb("VmHWM")}


def measure_peaks(name: str, args: Args) -> dict[str, dict[str, float]]:
    """Peak RSS of each mode, each in its own spawned process (so models do not share the count)."""
    context = multiprocessing.get_context("spawn")
    peaks = {}
    for mode in QUANT_MODES:
        with context.Pool(1) as pool:
            peaks[mode] = pool.apply(peak_memory_child, (name, mode, args))
    return peaks


QUANT_HEADER = ["model", "decoder", "mode", "LLM Linear MB", "all weights MB", "peak RSS MB", "peak - import MB",
                "p50 ms", "p50 / fp32", "token agreement", "action L1"]  # fmt: skip


def quant_rows(name: str, args: Args) -> list[list[str]]:
    """One model's rows: every mode's memory, AR latency and agreement with fp32 on held-out inputs."""
    base = build_model(name, args, head=None)  # the model's own head: how it is deployed
    models = {mode: quantize_model(copy.deepcopy(base), mode) for mode in QUANT_MODES}
    held_out = make_inputs(base, args.held_out, args.seed + 1)  # not the inputs the latency is timed on
    ids = {mode: predict_ids(model, held_out, args.batch) for mode, model in models.items()}
    single, decoder = make_inputs(base, 1, args.seed), decoder_name(base.config)
    cases = [Case(name, mode, decoder, 1, 1, partial(action_ids, models[mode], single)) for mode in QUANT_MODES]
    time_round_robin(cases, args.repeats, args.warmup)
    peaks = measure_peaks(name, args)
    rows = []
    for case in cases:
        mode, model, peak = case.precision, models[case.precision], peaks[case.precision]
        agree, l1 = action_agreement(ids["fp32"], ids[mode], base.action_tokenizer)
        rows.append([
            name, decoder, mode, f"{linear_weight_bytes(decoder_of(model)) / MB:.2f}",
            f"{weight_bytes(model) / MB:.2f}",
            f"{peak['peak']:.0f}", f"{peak['peak'] - peak['baseline']:.0f}",
            f"{percentile(case.times, 0.5) * MS:.1f}", f"{paired_ratio(case.times, cases[0].times):.2f}x",
            f"{agree:.3f}", f"{l1:.4f}",
        ])  # fmt: skip
    return rows


def run_quant(args: Args) -> tuple[list[str], list[list[str]]]:
    """The quantization table for every requested model."""
    return QUANT_HEADER, [row for name in available_models(args) for row in quant_rows(name, args)]


# ------------------------------------------------------------------------------------------- int8 backends
def torch_ao_dynamic(model: OpenVLA) -> OpenVLA:
    """torch.ao's dynamic int8 Linear (fbgemm); deprecated since torch 2.10, slated for removal."""
    torch.ao.quantization.quantize_dynamic(decoder_of(model), {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def torchao_int8(model: OpenVLA, dynamic: bool) -> OpenVLA:
    """torchao 0.18 int8 weights, float activations (weight-only) or int8 activations (dynamic), eager."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    quantize_(decoder_of(model), Int8DynamicActivationInt8WeightConfig() if dynamic else Int8WeightOnlyConfig())
    return model


def quanto_int8(model: OpenVLA) -> OpenVLA:
    """optimum-quanto qint8 weights (float activations), frozen."""
    from optimum.quanto import freeze, qint8, quantize

    quantize(decoder_of(model), weights=qint8)
    freeze(decoder_of(model))
    return model


BACKENDS: dict[str, Callable[[OpenVLA], OpenVLA]] = {
    "fp32 (reference)": partial(quantize_model, mode="fp32"),
    "bf16": partial(quantize_model, mode="bf16"),
    "torch.ao quantize_dynamic int8 (deprecated)": torch_ao_dynamic,
    "torchao Int8WeightOnlyConfig": partial(torchao_int8, dynamic=False),
    "torchao Int8DynamicActivationInt8WeightConfig": partial(torchao_int8, dynamic=True),
    "quanto qint8 weights": quanto_int8,
    "bitsandbytes LLM.int8() (bnb-int8)": partial(quantize_model, mode="bnb-int8"),
    "vlaforge int8 (W8A8, torch._int_mm)": partial(quantize_model, mode="int8"),
    "vlaforge int8, rest of the model bf16": lambda model: quantize_model(model.to(torch.bfloat16), "int8"),
}
BACKEND_HEADER = ["model", "int8 backend (LLM Linear layers)", "p50 ms", "p50 / fp32", "relative logit error"]


def backend_rows(name: str, args: Args) -> list[list[str]]:
    """One model's rows: AR latency and logit error of every int8 backend, timed round-robin."""
    base = build_model(name, args)
    inputs, n_tokens = make_inputs(base, 1, args.seed), base.config.action_dim
    models, missing = {}, []
    for label, make in BACKENDS.items():
        try:
            models[label] = make(copy.deepcopy(base))
        except ImportError as err:  # optional: `pip install -e '.[quant,quant-compare]'`
            missing.append([name, label, "n/a", "n/a", f"not installed ({err.name})"])
    cases = [
        Case(name, label, "AR", 1, 1, partial(own_loop, model, inputs, n_tokens)) for label, model in models.items()
    ]
    time_round_robin(cases, args.repeats, args.warmup)
    logits = {}
    with torch.inference_mode():
        for label, model in models.items():
            out = model(inputs.input_ids, inputs.pixel_values, inputs.attention_mask, proprio=inputs.proprio)
            logits[label] = out.logits.float()
    reference = logits["fp32 (reference)"]
    return [
        [name, case.precision, f"{percentile(case.times, 0.5) * MS:.1f}",
         f"{paired_ratio(case.times, cases[0].times):.2f}x",
         f"{float((logits[case.precision] - reference).norm() / reference.norm()):.4f}"]
        for case in cases
    ] + missing  # fmt: skip


def run_backends(args: Args) -> tuple[list[str], list[list[str]]]:
    """The int8 backend comparison that chose `int8` (docs/quantization.md)."""
    return BACKEND_HEADER, [row for name in available_models(args) for row in backend_rows(name, args)]


# ------------------------------------------------------------------------------------------- output
def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def describe_run(args: Args) -> str:
    """One line saying what was measured and how, to print above the table."""
    threads = args.threads or torch.get_num_threads()
    return (
        f"torch {torch.__version__}, {threads} thread(s), {args.repeats} rounds after {args.warmup} warm-up "
        f"call(s); p50/p95 per call; ratios = median of per-round ratios"
    )


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge bench infer`."""
    args = tyro.cli(Args, args=argv, prog="vlaforge bench infer", description=__doc__)
    for precision in args.precisions:
        check_mode(precision)  # an unknown mode fails before any model is built
    setup_process(args)
    run = {"decoders": run_decoders, "quant": run_quant, "backends": run_backends}[args.table]
    header, rows = run(args)
    text = f"{describe_run(args)}\n\n{markdown_table(header, rows)}\n"
    print(text)
    if args.output is not None:
        with args.output.open("a") as handle:
            handle.write(f"\n<!-- vlaforge bench infer --table {args.table} -->\n{text}")
    return 0
