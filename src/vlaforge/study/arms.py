"""The study's design as data: which arms are trained and evaluated, and which comparisons they answer.

An *arm* is one row of the results table: a model (a preset trained from scratch, or the `pretrain` arm's
checkpoint adapted further), what trains, which recorded demonstrations it trains on, the training budget,
and how it is evaluated. An arm with `checkpoint_of` trains nothing: it evaluates another arm's checkpoint
(in another precision, or on other tasks). A *comparison* names the arms it compares and the finding of
the paper (or of OpenVLA-OFT) that it reproduces in miniature.

```
 demo suite (3 tasks, from scratch)            ML45 transfer (pretrain on 45 tasks, adapt on 5 held-out)
 base          demo preset: both towers,       pretrain            demo preset on the 45 train tasks
               parallel 256-bin chunk of 4     pretrain-zero-shot  pretrain, evaluated on the held-out 5
 siglip-only   SigLIP tower only               adapt-full          pretrain -> full fine-tuning, few demos
 ar-tokens     1 action, tokens decoded AR     adapt-frozen-vision pretrain -> towers frozen, few demos
 parallel-l1   chunk of 4 from the L1 head     adapt-lora          pretrain -> LoRA, few demos
 base-int8     base, int8 (W8A8) inference     scratch             demo preset on the few demos only
 base-nf4      base, 4-bit NF4 inference
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dataset = Literal["demo", "ml45-train", "ml45-test"]  # the recorded demonstrations (see StudyConfig)
Budget = Literal["main", "pretrain", "adapt"]  # which step budget of StudyConfig a training arm uses

PRETRAINED = "@pretrain"  # `Arm.model` value: start from the `pretrain` arm's checkpoint


@dataclass(frozen=True)
class Arm:
    """One row of the study: how its model is trained (or which arm's checkpoint it reuses) and evaluated."""

    name: str  # row label and directory name
    what: str  # one line for the table
    suite: str  # evaluated on this suite ("demo" or "ml45-test"); "" for arms that are not evaluated
    model: str = "demo"  # model preset trained from scratch, or PRETRAINED
    mode: str = "full"  # training mode (vlaforge.train.config.MODES)
    data: Dataset = "demo"  # the demonstrations it trains on
    budget: Budget = "main"  # its training-step budget
    checkpoint_of: str | None = None  # evaluation-only arm: the arm whose checkpoint it evaluates
    quant: str = "fp32"  # inference precision (vlaforge.infer.quantize.QUANT_MODES)

    @property
    def trains(self) -> bool:
        """True for arms that train a model (the others reuse `checkpoint_of`'s)."""
        return self.checkpoint_of is None


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("base", "both towers (DINOv2 + SigLIP), full training, parallel 256-bin tokens, chunk 4", "demo"),
        Arm("siglip-only", "SigLIP tower only, otherwise as base", "demo", model="demo-siglip"),
        Arm("ar-tokens", "the original decoding: 1 action, its 4 tokens one at a time", "demo", model="demo-ar"),
        Arm("parallel-l1", "OFT: chunk of 4 regressed in one pass, L1 loss", "demo", model="demo-l1"),
        Arm("base-int8", "base's checkpoint, int8 W8A8 LLM layers", "demo", checkpoint_of="base", quant="int8"),
        Arm("base-nf4", "base's checkpoint, 4-bit NF4 LLM layers", "demo", checkpoint_of="base", quant="nf4"),
        Arm("pretrain", "demo preset trained on the 45 ML45 train tasks", "", data="ml45-train", budget="pretrain"),
        Arm("pretrain-zero-shot", "pretrain, no adaptation", "ml45-test", checkpoint_of="pretrain"),
        Arm("adapt-full", "pretrain + full fine-tuning on the few demos", "ml45-test", model=PRETRAINED,
            data="ml45-test", budget="adapt"),
        Arm("adapt-frozen-vision", "pretrain + fine-tuning with the towers frozen", "ml45-test", model=PRETRAINED,
            mode="frozen-vision", data="ml45-test", budget="adapt"),
        Arm("adapt-lora", "pretrain + LoRA on the few demos", "ml45-test", model=PRETRAINED, mode="lora",
            data="ml45-test", budget="adapt"),
        Arm("scratch", "demo preset trained from scratch on the few demos", "ml45-test", data="ml45-test",
            budget="adapt"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """A question the study answers, the arms that answer it, and what the paper found."""

    key: str  # name on the command line (`--comparisons fusion lora`)
    title: str  # heading in the report
    claim: str  # the published finding reproduced in miniature
    arms: tuple[str, ...]  # the arms compared, reference first


COMPARISONS: dict[str, Comparison] = {
    c.key: c
    for c in (
        Comparison("fusion", "Fused DINOv2 + SigLIP towers vs SigLIP only",
                   "OpenVLA: fusing DINOv2's spatial features with SigLIP's helps spatial reasoning",
                   ("base", "siglip-only")),
        Comparison("vision", "Vision towers trained vs frozen (adapting a pretrained model)",
                   "OpenVLA: fine-tuning the vision towers is crucial (80.0% vs 46.7% frozen)",
                   ("adapt-full", "adapt-frozen-vision")),
        Comparison("lora", "Full fine-tuning vs LoRA (adapting a pretrained model)",
                   "OpenVLA: LoRA matches full fine-tuning while training 1.4% of the parameters",
                   ("adapt-full", "adapt-lora")),
        Comparison("precision", "Inference precision: fp32 vs int8 vs 4-bit",
                   "OpenVLA: 4-bit inference matches bf16 success at half the memory",
                   ("base", "base-int8", "base-nf4")),
        Comparison("decoding", "Autoregressive 256-bin tokens vs parallel decoding (+ L1 head)",
                   "OpenVLA-OFT: parallel decoding of action chunks with an L1 head is faster and better "
                   "(LIBERO 76.5% -> 97.1%)",
                   ("ar-tokens", "base", "parallel-l1")),
        Comparison("transfer", "Pretrain on ML45 train tasks, then adapt vs train from scratch",
                   "OpenVLA: a pretrained VLA adapts to new tasks from few demonstrations better than "
                   "training from scratch",
                   ("adapt-lora", "adapt-full", "scratch", "pretrain-zero-shot")),
    )
}  # fmt: skip


def arms_needed(comparisons: tuple[str, ...]) -> list[Arm]:
    """The arms the given comparisons need, with the arms they depend on, in a valid run order.

    Raises:
        ValueError: for an unknown comparison name, listing the valid ones.
    """
    unknown = [key for key in comparisons if key not in COMPARISONS]
    if unknown:
        raise ValueError(f"unknown comparison(s) {unknown}; valid: {', '.join(COMPARISONS)}")
    names: set[str] = set()
    for key in comparisons:
        names.update(COMPARISONS[key].arms)
    for name in list(names):  # the arms they depend on
        arm = ARMS[name]
        if arm.checkpoint_of:
            names.add(arm.checkpoint_of)
        if arm.model == PRETRAINED or ARMS.get(arm.checkpoint_of or "", arm).model == PRETRAINED:
            names.add("pretrain")
    return [arm for name, arm in ARMS.items() if name in names]  # ARMS is in dependency order
