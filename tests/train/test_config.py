"""TrainConfig: presets, validation, JSON round trip, the CLI's "did you mean", the LR schedule."""

from __future__ import annotations

import math

import pytest

from vlaforge.cli.train import parse_config
from vlaforge.config import ConfigError
from vlaforge.train.config import TRAIN_PRESETS, OptimConfig, TrainConfig, get_train_preset
from vlaforge.train.optim import build_optimizer, lr_factor


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_every_preset_builds_and_round_trips_through_json(name, tmp_path):
    cfg = get_train_preset(name)
    cfg.save(tmp_path / "train_config.json")
    assert TrainConfig.load(tmp_path) == cfg


def test_lora_preset_has_the_original_finetune_defaults():
    cfg = get_train_preset("openvla-7b-lora")
    assert (cfg.mode, cfg.lora.rank, cfg.lora.scale_alpha, cfg.lora.dropout) == ("lora", 32, 16, 0.0)
    assert cfg.lora.target_modules == ("all-linear",) and cfg.lora.init == "gaussian"
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.max_grad_norm, cfg.batch_size) == (5e-4, 0.01, None, 16)
    full = get_train_preset("openvla-7b-full")
    assert (full.optim.lr, full.optim.weight_decay, full.optim.max_grad_norm, full.strategy) == (2e-5, 0.0, 1.0, "fsdp")


def test_unknown_preset_and_fields_suggest_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'tiny-lora'"):
        get_train_preset("tiny-lroa")
    with pytest.raises(ConfigError, match=r"max_stepz \(did you mean max_steps\?\)"):
        TrainConfig.from_dict({"max_stepz": 3})
    with pytest.raises(ConfigError, match=r"optim\.lrr \(did you mean optim\.lr\?\)"):
        TrainConfig.from_dict({"optim": {"lrr": 1e-3}})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"mode": "qlora", "strategy": "fsdp"}, "cannot be sharded with FSDP"),
        ({"mode": "lorra"}, "mode must be one of"),
        ({"save_every": -1}, "save_every must be >= 0"),
    ],
)
def test_invalid_values_raise_with_guidance(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**overrides)
    with pytest.raises(ConfigError, match="lora.rank must be >= 1"):
        TrainConfig.from_dict({"lora": {"rank": 0}})
    with pytest.raises(ConfigError, match="optim.lr must be > 0"):
        OptimConfig(lr=0.0)


def test_cli_applies_overrides_on_top_of_a_preset_or_a_saved_config(tmp_path):
    cfg = parse_config(["--preset", "tiny-lora", "--lora.rank", "4", "--optim.lr", "1e-3", "--resume"])
    assert (cfg.mode, cfg.lora.rank, cfg.optim.lr, cfg.resume) == ("lora", 4, 1e-3, True)
    assert cfg.max_steps == get_train_preset("tiny-lora").max_steps  # untouched fields keep the preset's values
    cfg.save(tmp_path / "saved.json")
    again = parse_config(["--config", str(tmp_path / "saved.json"), "--max-steps", "7"])
    assert again.lora.rank == 4 and again.max_steps == 7


def test_cli_rejects_a_misspelled_flag_and_names_the_right_one(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(["--preset", "tiny", "--max-stepz", "3"])
    assert exc.value.code == 2
    assert "--max-steps" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="Did you mean 'tiny'"):
        parse_config(["--preset", "tinny"])


def test_warmup_then_constant_or_cosine():
    constant = OptimConfig(warmup_steps=4)
    assert [lr_factor(s, constant, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = OptimConfig(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(2, cosine, 12) == pytest.approx(1.0)
    assert lr_factor(7, cosine, 12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(12, cosine, 12) == pytest.approx(0.1)


def test_weight_decay_skips_biases_and_norms(tiny_model):
    optimizer = build_optimizer(tiny_model, OptimConfig(weight_decay=0.05))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(tiny_model.parameters()))
