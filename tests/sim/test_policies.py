"""Policy adapters that need no simulator: a checkpoint loaded quantized, and `load_policy`'s quant checks.

Agreement bounds are those of tests/infer/test_quantize.py (docs/quantization.md), on the same kind of model:
the tiny model with `sharpen_` random weights. Measured here, int8 against fp32 on 12 observations: 0.92 of
the 84 action values identical (bound >= 0.5) and a mean |difference| of 0.05 in normalized units (bound
<= 0.4); a broken kernel gives ~1/256 and ~0.67.
Run: .venv/bin/pytest tests/sim/test_policies.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from tests.conftest import TINY_NORM_STATS, make_tiny_model
from vlaforge.actions.normalize import action_stats_for, normalize_actions
from vlaforge.infer.quantize import Int8Linear, QuantizationError, decoder_of
from vlaforge.sim.env import Observation
from vlaforge.sim.policies import CheckpointPolicy, load_policy
from vlaforge.sim.suites import get_suite

N_OBS = 12
MIN_AGREEMENT = 0.5  # fraction of action values equal to fp32's
MAX_ACTION_L1 = 0.4  # mean |action - fp32 action| in normalized units [-1, 1]


@pytest.fixture(scope="module")
def sharp_checkpoint(tmp_path_factory):
    """The tiny model with `sharpen_` weights (input-dependent action tokens), saved as a checkpoint."""
    from vlaforge.bench.infer import sharpen_

    path = tmp_path_factory.mktemp("sharp-checkpoint")
    sharpen_(make_tiny_model(), seed=0).save_pretrained(path)
    return path


def observations(n: int) -> list[Observation]:
    rng = np.random.default_rng(3)
    return [
        Observation(images={"corner": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)},
                    state=np.zeros(4, np.float32), instruction=f"push the block {i} to the goal", task="push-v3")
        for i in range(n)
    ]  # fmt: skip


def test_int8_checkpoint_policy_quantizes_the_decoder_and_acts_like_fp32(sharp_checkpoint):
    obs = observations(N_OBS)
    fp32 = CheckpointPolicy(sharp_checkpoint)
    int8 = CheckpointPolicy(sharp_checkpoint, quant="int8")
    assert fp32.quant == "fp32" and int8.quant == "int8"
    assert not any(isinstance(m, Int8Linear) for m in fp32.model.modules())  # fp32: loaded as saved
    decoder = decoder_of(int8.model)
    assert not any(type(m) is nn.Linear for m in decoder.modules())
    assert sum(isinstance(m, Int8Linear) for m in decoder.modules()) == 7 * len(decoder.layers)

    reference, actions = fp32.act(obs), int8.act(obs)
    assert actions.shape == reference.shape == (N_OBS, 7) and np.isfinite(actions).all()
    stats = action_stats_for(TINY_NORM_STATS, None)
    reference, actions = normalize_actions(reference, stats), normalize_actions(actions, stats)
    assert np.mean(np.isclose(actions, reference)) >= MIN_AGREEMENT
    assert np.abs(actions - reference).mean() <= MAX_ACTION_L1
    assert not np.array_equal(actions, reference)  # the model really changed


def test_unknown_quant_fails_before_loading(tmp_path):
    with pytest.raises(QuantizationError, match="unknown quantization mode 'int4'; valid modes: fp32, bf16, int8"):
        CheckpointPolicy(tmp_path / "no-such-checkpoint", quant="int4")  # type: ignore[arg-type]
    with pytest.raises(QuantizationError, match="valid modes"):
        load_policy(str(tmp_path / "no-such-checkpoint"), get_suite("demo"), quant="int4")  # type: ignore[arg-type]


def test_quant_applies_to_checkpoints_only():
    suite = get_suite("demo")
    for spec in ("expert", "random"):
        with pytest.raises(ValueError, match="quantization applies to checkpoint policies only"):
            load_policy(spec, suite, quant="int8")
    with pytest.raises(ValueError, match=r"quantize on the server instead \(vlaforge serve CKPT --quant nf4\)"):
        load_policy("ws://127.0.0.1:1", suite, quant="nf4")  # refused before any connection is tried
    assert load_policy("random", suite, quant="fp32").name == "random"
