"""Beyond the original: parallel decoding (token and L1 heads), action chunks, proprio and several images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlaforge.actions.normalize import NormalizationError
from vlaforge.config import get_preset
from vlaforge.data.tokenizer import build_tokenizer
from vlaforge.model.action_heads import parallel_attention_mask
from vlaforge.model.vla import OpenVLA

STATS4 = {
    "sim": {
        "action": {"q01": [-1.0] * 4, "q99": [1.0] * 4, "mask": [True, True, True, False]},
        "proprio": {"q01": [-0.5, 0.3, 0.0, 0.0], "q99": [0.5, 0.9, 0.3, 1.0]},
    }
}


def make_model(
    head: str, chunk: int = 4, proprio: int = 0, cameras: int = 1, history: int = 1, seed: int = 0, attention="sdpa"
):
    config = get_preset("tiny")
    config.attn_implementation = attention
    config.action_head, config.action_chunk, config.action_dim = head, chunk, 4
    config.proprio_dim, config.num_images, config.history = proprio, cameras, history
    config.image_sizes = [112, 112]  # 64 patches per image: keeps these tests fast
    config.norm_stats = json.loads(json.dumps(STATS4))
    config.validate()
    return OpenVLA.create(config, build_tokenizer(), seed=seed)


def sample_images(rng, n_samples: int, per_sample: int):
    def image():
        return rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)

    return [image() if per_sample == 1 else [image() for _ in range(per_sample)] for _ in range(n_samples)]


def test_mask_is_causal_over_the_prompt_and_bidirectional_over_actions():
    valid = torch.tensor([[False, True, True, True, True, True]])  # one padding slot in front
    allowed = parallel_attention_mask(valid, n_action=2, dtype=torch.float32)[0, 0] == 0
    assert allowed[2, :3].tolist() == [False, True, True] and not allowed[2, 3:].any()  # prompt: causal
    assert allowed[4].tolist() == [False, True, True, True, True, True]  # first action sees the next one
    assert allowed[5].tolist() == [False, True, True, True, True, True]
    assert allowed[0].tolist() == [True, False, False, False, False, False]  # padding: itself only (no NaN)


@pytest.mark.parametrize("head", ["parallel-tokens", "l1"])
def test_parallel_heads_predict_chunks_batched_equal_to_single(head):
    model = make_model(head, chunk=3, proprio=4, cameras=2)
    rng = np.random.default_rng(0)
    images = sample_images(rng, 3, 2)
    texts = ["open the drawer", "push the button down now", "close"]
    states = rng.uniform(-0.5, 0.5, (3, 4))
    batched = model.predict_action(images, texts, proprio=states)
    assert batched.shape == (3, 3, 4)
    single = np.stack([model.predict_action(i, t, proprio=s) for i, t, s in zip(images, texts, states)])
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", ["parallel-tokens", "l1"])
def test_inference_pass_equals_the_full_decoder_pass(head):
    """Inference computes the last layer for the action positions only; training runs the whole HF decoder."""
    model = make_model(head, chunk=3, proprio=4).eval()
    rng = np.random.default_rng(3)
    batch = model.processor(sample_images(rng, 2, 1), ["open the drawer", "push"])  # different lengths: padded
    state = torch.tensor(rng.uniform(-1, 1, (2, 4)), dtype=torch.float32)
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask")}
    with torch.no_grad():
        fast = model(**inputs, proprio=state)  # grad off: the trimmed path
    with torch.enable_grad():
        full = model(**inputs, proprio=state)  # grad on: the whole HF decoder
    torch.testing.assert_close(fast.logits, full.logits.detach(), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(fast.actions.numpy(), full.actions.detach().numpy())


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_unpadded_inference_pass_attends_block_causally_as_the_full_decoder_pass(attention):
    """Without padding the inference pass builds no dense mask: the prompt attends causally and the action
    positions see every position, in two unmasked attention calls. It must still equal the HF decoder."""
    model = make_model("parallel-tokens", chunk=3, attention=attention).eval()
    rng = np.random.default_rng(4)
    batch = model.processor(sample_images(rng, 2, 1), ["open the drawer", "shut the drawer"])  # same length
    assert bool(batch["attention_mask"].all())
    with torch.no_grad():
        fast = model(batch["input_ids"], batch["pixel_values"], None)  # grad off: the trimmed, block-causal path
    with torch.enable_grad():
        full = model(batch["input_ids"], batch["pixel_values"], None)  # grad on: HF decoder with the dense mask
    torch.testing.assert_close(fast.logits, full.logits.detach(), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(fast.actions.numpy(), full.actions.detach().numpy())


def test_state_and_images_change_the_prediction():
    model = make_model("l1", chunk=2, proprio=4, cameras=2)
    rng = np.random.default_rng(1)
    images = sample_images(rng, 1, 2)[0]
    a = model.predict_action(images, "open", proprio=np.zeros(4))
    b = model.predict_action(images, "open", proprio=np.full(4, 0.4))
    c = model.predict_action(images[::-1], "open", proprio=np.zeros(4))
    assert not np.allclose(a, b) and not np.allclose(a, c)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["parallel-tokens", "l1"])
def test_training_steps_reduce_the_loss_on_a_fixed_batch(head):
    torch.manual_seed(0)
    model = make_model(head, chunk=2, proprio=4, history=2).train()
    rng = np.random.default_rng(2)
    batch = model.processor(sample_images(rng, 4, 2), ["open", "close the door", "push", "reach the goal"])
    targets = torch.tensor(rng.uniform(-0.9, 0.9, (4, 2, 4)), dtype=torch.float32)
    chunk_mask = torch.tensor([[True, True], [True, False], [True, True], [True, True]])
    proprio = torch.tensor(rng.uniform(-1, 1, (4, 4)), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        out = model(**batch, proprio=proprio, action_chunk=targets, action_chunk_mask=chunk_mask)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.85 * losses[0]  # the whole model learns: both heads fall steadily
    assert "l1" in out.metrics


def test_masked_chunk_steps_do_not_contribute_to_the_loss():
    model = make_model("l1", chunk=2)
    batch = model.processor([np.zeros((16, 16, 3), np.uint8)], ["open"])
    targets = torch.zeros(1, 2, 4)
    mask = torch.tensor([[True, False]])
    with torch.no_grad():
        a = model(**batch, action_chunk=targets, action_chunk_mask=mask).loss
        targets[0, 1] = 5.0  # a step past the episode's end: any value
        b = model(**batch, action_chunk=targets, action_chunk_mask=mask).loss
    assert torch.equal(a, b)


def test_parallel_heads_refuse_token_labels():
    model = make_model("parallel-tokens", chunk=1)
    batch = model.processor([np.zeros((16, 16, 3), np.uint8)], ["open"])
    with pytest.raises(ValueError, match="prompt-only input_ids"):
        model(**batch, labels=batch["input_ids"])


def test_checkpoint_round_trip_keeps_the_extensions(tmp_path):
    model = make_model("l1", chunk=3, proprio=4, cameras=2)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["action_head"], config["action_chunk"], config["proprio_dim"], config["num_images"]) == (
        "l1", 3, 4, 2,
    )  # fmt: skip
    loaded = OpenVLA.from_pretrained(tmp_path)
    rng = np.random.default_rng(3)
    images = sample_images(rng, 1, 2)[0]
    np.testing.assert_array_equal(
        loaded.predict_action(images, "go", proprio=np.zeros(4)),
        model.predict_action(images, "go", proprio=np.zeros(4)),
    )


def test_mismatched_cameras_chunks_and_state_are_explained():
    model = make_model("l1", chunk=3, proprio=4, cameras=2)
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="takes 2 images per sample"):
        model.predict_action([image], "go", proprio=np.zeros(4))
    with pytest.raises(ValueError, match="needs the robot state"):
        model.predict_action([image, image], "go")
    batch = model.processor([[image, image]], ["go"])
    with pytest.raises(ValueError, match=r"action_chunk must be \[B, 3, 4\]"):
        model(**batch, proprio=torch.zeros(1, 4), action_chunk=torch.zeros(1, 8, 4))
    with pytest.raises(ValueError, match=r"pixel_values \[B, 2, C, H, W\]"):
        model(batch["input_ids"], batch["pixel_values"][:, :1], proprio=torch.zeros(1, 4))
    model.config.norm_stats = {"other": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7}}}
    with pytest.raises(NormalizationError, match="predicts 4-D actions but the statistics of 'other' have 7"):
        model.predict_action([image, image], "go", proprio=np.zeros(4))


def test_original_recipe_is_the_default():
    config = get_preset("openvla-7b")
    assert (config.action_head, config.action_chunk, config.proprio_dim, config.num_images) == ("tokens", 1, 0, 1)
    assert "action_head" not in config.to_dict()  # the released config.json layout is kept
