"""`vlaforge bench infer` runs its decoders table and checks the loop's ids (the command works; no speed claim)."""

from vlaforge.cli.main import main


def test_decoders_table_times_every_decoder_and_checks_the_ids(capsys):
    argv = ["bench", "infer", "--models", "tiny", "--precisions", "fp32", "--repeats", "1", "--warmup", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[2]: line for line in out.splitlines() if line.startswith("| tiny | fp32 |")}
    assert set(rows) == {
        "AR, HF generate", "AR, vlaforge loop", "AR, HF generate, LLM only", "AR, vlaforge loop, LLM only",
        "batched AR (batch 8)", "parallel, chunk 8",
    }  # fmt: skip
    assert rows["AR, vlaforge loop"].endswith("| ids = HF |")
    assert rows["AR, vlaforge loop, LLM only"].endswith("| ids = HF |")
    # LLM-only rows are compared with HF generate from the same embeddings (one round: the ratio of the times)
    cells = {name: line.split(" | ") for name, line in rows.items()}
    loop_ms, hf_ms = float(cells["AR, vlaforge loop, LLM only"][4]), float(cells["AR, HF generate, LLM only"][4])
    ratio = float(cells["AR, vlaforge loop, LLM only"][7].rstrip("x"))
    assert abs(ratio - loop_ms / hf_ms) < 0.05 * ratio + 0.01
