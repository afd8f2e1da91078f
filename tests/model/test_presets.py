"""The openvla-7b preset, built on the meta device, against the original's state-dict manifest.

The expected keys and shapes are written out from the manifest in shared/docs/openvla-reference.md §2.6
(verified there by building the real-size modules of the original), independently of vlaforge's modules.
"""

from __future__ import annotations

import pytest
import torch

from vlaforge.config import ConfigError, VLAConfig, get_preset
from vlaforge.model.vla import OpenVLA
from vlaforge.model.weights import to_checkpoint_key


def dino_manifest() -> dict[str, tuple[int, ...]]:
    d, p = 1024, "vision_backbone.featurizer."
    out = {p + "cls_token": (1, 1, d), p + "reg_token": (1, 4, d), p + "pos_embed": (1, 256, d),
           p + "patch_embed.proj.weight": (d, 3, 14, 14), p + "patch_embed.proj.bias": (d,),
           p + "norm.weight": (d,), p + "norm.bias": (d,)}  # fmt: skip
    for i in range(24):
        b = f"{p}blocks.{i}."
        out.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                    b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                    b + "ls1.scale_factor": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                    b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,), b + "mlp.fc2.weight": (d, 4 * d),
                    b + "mlp.fc2.bias": (d,), b + "ls2.scale_factor": (d,)})  # fmt: skip
    return out


def siglip_manifest() -> dict[str, tuple[int, ...]]:
    d, h, p = 1152, 4304, "vision_backbone.fused_featurizer."
    out = {p + "pos_embed": (1, 256, d), p + "patch_embed.proj.weight": (d, 3, 14, 14),
           p + "patch_embed.proj.bias": (d,), p + "norm.weight": (d,), p + "norm.bias": (d,),
           p + "attn_pool.latent": (1, 1, d), p + "attn_pool.q.weight": (d, d), p + "attn_pool.q.bias": (d,),
           p + "attn_pool.kv.weight": (2 * d, d), p + "attn_pool.kv.bias": (2 * d,),
           p + "attn_pool.proj.weight": (d, d), p + "attn_pool.proj.bias": (d,),
           p + "attn_pool.norm.weight": (d,), p + "attn_pool.norm.bias": (d,),
           p + "attn_pool.mlp.fc1.weight": (h, d), p + "attn_pool.mlp.fc1.bias": (h,),
           p + "attn_pool.mlp.fc2.weight": (d, h), p + "attn_pool.mlp.fc2.bias": (d,)}  # fmt: skip
    for i in range(27):
        b = f"{p}blocks.{i}."
        out.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                    b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                    b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "mlp.fc1.weight": (h, d),
                    b + "mlp.fc1.bias": (h,), b + "mlp.fc2.weight": (d, h), b + "mlp.fc2.bias": (d,)})  # fmt: skip
    return out


def projector_and_llm_manifest() -> dict[str, tuple[int, ...]]:
    out = {"projector.fc1.weight": (8704, 2176), "projector.fc1.bias": (8704,),
           "projector.fc2.weight": (4096, 8704), "projector.fc2.bias": (4096,),
           "projector.fc3.weight": (4096, 4096), "projector.fc3.bias": (4096,),
           "language_model.model.embed_tokens.weight": (32064, 4096),
           "language_model.model.norm.weight": (4096,), "language_model.lm_head.weight": (32064, 4096)}  # fmt: skip
    for i in range(32):
        b = f"language_model.model.layers.{i}."
        out.update({b + f"self_attn.{n}_proj.weight": (4096, 4096) for n in "qkvo"})
        out.update({b + "mlp.gate_proj.weight": (11008, 4096), b + "mlp.up_proj.weight": (11008, 4096),
                    b + "mlp.down_proj.weight": (4096, 11008), b + "input_layernorm.weight": (4096,),
                    b + "post_attention_layernorm.weight": (4096,)})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def meta_7b() -> OpenVLA:
    with torch.device("meta"):
        return OpenVLA(get_preset("openvla-7b"))


def test_openvla_7b_has_the_original_parameter_count(meta_7b):
    assert sum(p.numel() for p in meta_7b.parameters()) == 7_541_237_184
    assert sum(p.numel() for p in meta_7b.vision_backbone.parameters()) == 730_911_680
    assert sum(p.numel() for p in meta_7b.projector.parameters()) == 71_385_600


def test_openvla_7b_has_the_original_keys_and_shapes(meta_7b):
    expected = {**dino_manifest(), **siglip_manifest(), **projector_and_llm_manifest()}
    assert len(expected) == 982
    ours = {to_checkpoint_key(k): tuple(v.shape) for k, v in meta_7b.state_dict().items()}
    assert ours == expected


def test_openvla_7b_llm_uses_the_original_config_defaults(meta_7b):
    cfg = meta_7b.language_model.config
    assert (cfg.rms_norm_eps, cfg.max_position_embeddings, cfg.hidden_size, cfg.num_hidden_layers) == (
        1e-6, 2048, 4096, 32,
    )  # fmt: skip


def test_single_tower_preset_builds_a_two_layer_projector():
    model = OpenVLA(get_preset("tiny-siglip"))
    assert model.vision_backbone.fused_featurizer is None
    assert not hasattr(model.projector, "fc3")
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = model.vision_backbone(pixels)
    assert feats.shape == (2, 256, 48)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'tiny'"):
        get_preset("tinny")


def test_config_json_round_trip_and_unknown_field_hint():
    config = get_preset("tiny")
    assert VLAConfig.from_dict(config.to_dict()) == config
    raw = config.to_dict() | {"n_action_binz": 3}
    with pytest.raises(ConfigError, match="n_action_binz.*did you mean n_action_bins"):
        VLAConfig.from_dict(raw)


def test_config_rejects_inconsistent_fields():
    with pytest.raises(ConfigError, match="image_sizes"):
        VLAConfig(image_sizes=[224])
    with pytest.raises(ConfigError, match="action tokens end"):
        VLAConfig(text_config={"model_type": "llama", "vocab_size": 1000}, pad_token_id=32000)
