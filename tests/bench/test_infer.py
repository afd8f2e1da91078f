"""`vlaforge bench infer` runs its decoders table and checks the loop's ids (the command works; no speed claim)."""

import torch
from torch import nn

from vlaforge.bench.infer import Args, build_model, embed, kernel_floor, make_inputs, own_decode
from vlaforge.cli.main import main


def test_decoders_table_times_every_decoder_and_checks_the_ids(capsys):
    argv = ["bench", "infer", "--models", "tiny", "--precisions", "fp32", "--repeats", "1", "--warmup", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[2]: line for line in out.splitlines() if line.startswith("| tiny | fp32 |")}
    assert set(rows) == {
        "AR, HF generate", "AR, vlaforge loop", "AR, HF generate, LLM only", "AR, vlaforge loop, LLM only",
        "AR, products + attention only, LLM only", "batched AR (batch 8)", "parallel, chunk 8",
    }  # fmt: skip
    assert rows["AR, vlaforge loop"].endswith("| ids = HF |")
    assert rows["AR, vlaforge loop, LLM only"].endswith("| ids = HF |")
    # LLM-only rows are compared with HF generate from the same embeddings (one round: the ratio of the times)
    cells = {name: line.split(" | ") for name, line in rows.items()}
    loop_ms, hf_ms = float(cells["AR, vlaforge loop, LLM only"][4]), float(cells["AR, HF generate, LLM only"][4])
    ratio = float(cells["AR, vlaforge loop, LLM only"][7].rstrip("x"))
    assert abs(ratio - loop_ms / hf_ms) < 0.05 * ratio + 0.01


def record_linear_inputs(model) -> tuple[list, list]:
    """Hooks on every Linear layer of the LLM recording (layer name, input shape) of each call."""
    calls = []
    handles = [
        module.register_forward_hook(lambda _, args, out, name=name: calls.append((name, tuple(args[0].shape))))
        for name, module in model.language_model.named_modules()
        if isinstance(module, nn.Linear)
    ]
    return calls, handles


def test_kernel_floor_multiplies_exactly_what_the_loop_multiplies():
    """The floor row is only a floor if it replays the loop's products: every layer, on as many rows."""
    model = build_model("tiny", Args())
    embeds = embed(model, make_inputs(model, 1, seed=0))
    recorded = {}
    for name, run in (("loop", own_decode), ("floor", kernel_floor)):
        calls, handles = record_linear_inputs(model)  # hooked layers run through their module call in both
        with torch.inference_mode():
            run(model, embeds, 7)
        for handle in handles:
            handle.remove()
        recorded[name] = sorted(calls)
    assert len(recorded["loop"]) == 7 * (7 * model.language_model.config.num_hidden_layers + 1)
    assert recorded["floor"] == recorded["loop"]


def test_int8_kernel_floor_quantizes_what_the_loop_quantizes(monkeypatch):
    """With int8 layers the floor also replays the loop's activation quantization: the same rows, as often."""
    from vlaforge.infer import generate
    from vlaforge.infer.quantize import quantize_model, quantize_rows

    model = quantize_model(build_model("tiny", Args()), "int8")
    embeds = embed(model, make_inputs(model, 1, seed=0))
    recorded = {}
    for name, run in (("loop", own_decode), ("floor", kernel_floor)):
        calls = []
        monkeypatch.setattr(generate, "quantize_rows", lambda x, calls=calls: calls.append(x.shape) or quantize_rows(x))
        with torch.inference_mode():
            run(model, embeds, 7)
        recorded[name] = sorted(calls)
    assert len(recorded["loop"]) == 7 * 4 * model.language_model.config.num_hidden_layers  # q|k|v, o, gate|up, down
    assert recorded["floor"] == recorded["loop"]
