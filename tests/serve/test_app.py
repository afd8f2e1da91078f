"""The FastAPI app in-process (Starlette's TestClient): answers, errors, auth, metadata, websocket, safety.

Every expected action is computed by calling `model.predict_action` on the same inputs.
Run: .venv/bin/pytest tests/serve/test_app.py -q
"""

from __future__ import annotations

import json
import re

import json_numpy
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from tests.conftest import TINY_NORM_STATS, make_tiny_model
from tests.serve.conftest import rgb
from vlaforge.client import encode_json_array, json_dumps, pack, unpack
from vlaforge.serve.app import create_app
from vlaforge.serve.config import ServeConfig
from vlaforge.serve.policy import BatchPolicy
from vlaforge.serve.protocol import Request
from vlaforge.serve.safety import SafetyConfig
from vlaforge.serve.service import PolicyService


@pytest.fixture(scope="module")
def client(policy):
    with TestClient(create_app(policy, ServeConfig(max_request_bytes=256 * 1024))) as test_client:
        yield test_client


def post_act(client: TestClient, payload: dict | bytes | str, headers: dict | None = None):
    body = payload if isinstance(payload, (bytes, str)) else json_numpy.dumps(payload)
    return client.post("/act", content=body, headers={"Content-Type": "application/json", **(headers or {})})


# ------------------------------------------------------------------------------------------- answers
@pytest.mark.parametrize(("seed", "size"), [(0, (64, 80)), (1, (224, 224)), (2, (17, 300))])
def test_act_answers_like_predict_action(client, tiny_model, seed, size):
    image, instruction = rgb(seed, *size), f"pick up block {seed}"
    response = post_act(client, {"image": image, "instruction": instruction})
    assert response.status_code == 200
    action = json_numpy.loads(response.text)  # exactly what an original OpenVLA client does
    np.testing.assert_array_equal(action, tiny_model.predict_action(image, instruction))
    assert action.dtype == np.float64 and action.shape == (7,)


def test_act_accepts_the_double_encoded_form_and_an_explicit_key(client, tiny_model):
    image = rgb(3)
    inner = json_numpy.dumps({"image": image, "instruction": "open the drawer", "unnorm_key": "synthetic"})
    response = client.post("/act", json={"encoded": inner})
    assert response.status_code == 200
    action = json_numpy.loads(response.json())  # the answer is double-encoded too, as the original's
    np.testing.assert_array_equal(action, tiny_model.predict_action(image, "open the drawer", unnorm_key="synthetic"))


# ------------------------------------------------------------------------------------------- bad input
IMAGE = rgb(4)
BAD_BODIES = [
    ("wrong-shape", {"image": IMAGE[..., 0], "instruction": "go"}, 422, r"shape \[H, W, 3\]"),
    ("four-channels", {"image": np.zeros((8, 8, 4), np.uint8), "instruction": "go"}, 422, r"\[H, W, 3\]"),
    ("float-image", {"image": IMAGE.astype(np.float32), "instruction": "go"}, 422, "dtype uint8"),
    ("not-an-image", {"image": "cat.png", "instruction": "go"}, 422, "got str"),
    ("empty-instruction", {"image": IMAGE, "instruction": ""}, 422, "empty"),
    ("huge-instruction", {"image": IMAGE, "instruction": "x" * 5000}, 422, "at most 1000"),
    ("too-many-tokens", {"image": IMAGE, "instruction": "go " * 300}, 422, "too long"),
    ("missing-image", {"instruction": "go"}, 422, "missing field 'image'"),
    ("missing-instruction", {"image": IMAGE}, 422, "missing field 'instruction'"),
    ("unknown-unnorm-key", {"image": IMAGE, "instruction": "go", "unnorm_key": "bridge"}, 422, "keys: synthetic"),
    ("unknown-field", {"image": IMAGE, "instruction": "go", "unnorm": "x"}, 422, "did you mean 'unnorm_key'"),
    ("state-not-numeric", {"image": IMAGE, "instruction": "go", "state": "up"}, 422, "1-D numeric"),
    ("unknown-camera", {"image": IMAGE, "images": {"wrist": IMAGE}, "instruction": "go"}, 422, "unknown"),
    ("malformed-json", b'{"image": ', 400, "invalid JSON"),
    ("not-utf8", b"\xff\xfe\xfa", 400, "invalid JSON"),
    ("top-level-list", b"[1, 2, 3]", 422, "must be a map"),
    ("object-dtype", json.dumps({"image": {"__numpy__": "AA==", "dtype": "|O", "shape": [1]}}), 400, "not allowed"),
    ("short-buffer", json.dumps({"image": {"__numpy__": "AAAA", "dtype": "|u1", "shape": [9, 9, 3]}}), 400, "needs"),
    ("encoded-not-str", json.dumps({"encoded": {"a": 1}}), 422, "must be a string"),
    ("too-large", {"image": rgb(5, 300, 300), "instruction": "go"}, 413, "exceeds"),
]


@pytest.mark.parametrize(("body", "status", "complaint"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_bad_requests_get_a_4xx_with_a_json_reason_and_never_reach_the_model(client, body, status, complaint):
    before = client.get("/healthz").json()
    response = post_act(client, body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["status"] == status
    assert re.search(complaint, payload["error"]), payload
    after = client.get("/healthz").json()
    assert after["batches"] == before["batches"] and after["answered"] == before["answered"]
    assert after["refused"] == before["refused"] + 1


def test_a_streamed_body_over_the_limit_is_refused(client):
    chunks = (b"x" * 65536 for _ in range(8))  # no Content-Length: counted while it arrives
    response = client.post("/act", content=chunks)
    assert response.status_code == 413 and "exceeds" in response.json()["error"]


def test_unknown_routes_and_methods_answer_json(client):
    for response, status in [(client.get("/act"), 405), (client.get("/nothing"), 404)]:
        assert response.status_code == status and response.json()["status"] == status
    assert client.get("/act").headers["allow"] == "POST"


# ------------------------------------------------------------------------------------------- auth
def test_bearer_token_auth(policy, tiny_model):
    with TestClient(create_app(policy, ServeConfig(token="s3cret"))) as client:
        body = {"image": IMAGE, "instruction": "go"}
        missing = post_act(client, body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in missing.json()["error"]
        assert post_act(client, body, headers={"Authorization": "Basic abc"}).status_code == 401
        assert post_act(client, body, headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.get("/metadata").status_code == 401
        assert client.get("/metadata", headers={"Authorization": "Bearer wrong"}).status_code == 403
        good = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
        response = client.post("/act", content=json_numpy.dumps(body), headers=good)
        np.testing.assert_array_equal(json_numpy.loads(response.text), tiny_model.predict_action(IMAGE, "go"))
        assert client.get("/healthz").status_code == 200  # liveness needs no token
        for headers, status in [({}, 401), ({"Authorization": "Bearer wrong"}, 403)]:
            with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws", headers=headers):
                pass
            assert denied.value.status_code == status
        with client.websocket_connect("/ws", headers={"Authorization": "Bearer s3cret"}) as ws:
            assert unpack(ws.receive_bytes())["server"]["auth"] is True


# ------------------------------------------------------------------------------------------- metadata
def test_metadata_describes_the_model(client, tiny_model):
    meta = client.get("/metadata").json()
    stats = tiny_model.norm_stats
    assert meta["norm_stats_keys"] == sorted(stats)
    assert meta["action_dim"] == len(stats["synthetic"]["action"]["q01"])
    assert meta["chunk_size"] == 1 and meta["cameras"] == ["primary"] and meta["state_dim"] == 0
    assert meta["quant"] == "fp32"
    assert meta["image_size"] == [tiny_model.config.image_sizes[0]] * 2
    assert meta["llm_backbone"] == tiny_model.config.llm_backbone_id and meta["model_name"] == "tiny"
    assert meta["server"]["max_batch_size"] == ServeConfig().max_batch_size and meta["server"]["auth"] is False


def test_openapi_describes_act(client):
    schema = client.get("/openapi.json").json()
    act = schema["paths"]["/act"]["post"]
    observation = act["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0]
    assert observation["required"] == ["image", "instruction"]
    assert {"200", "400", "401", "403", "413", "422"} <= set(act["responses"])
    assert {"/healthz", "/metadata"} <= set(schema["paths"])


# ------------------------------------------------------------------------------------------- websocket
def test_websocket_single_batch_and_errors(client, tiny_model):
    images = [rgb(10 + i) for i in range(3)]
    texts = ["stack the cups", "wipe the table", "close the lid"]
    with client.websocket_connect("/ws") as ws:
        assert unpack(ws.receive_bytes())["action_dim"] == 7  # the handshake
        ws.send_bytes(pack({"image": images[0], "instruction": texts[0]}))
        answer = unpack(ws.receive_bytes())
        np.testing.assert_array_equal(answer["actions"], tiny_model.predict_action(images[0], texts[0]))
        assert answer["timing"]["batch_size"] >= 1
        ws.send_bytes(pack({"observations": [{"image": i, "instruction": t} for i, t in zip(images, texts)]}))
        np.testing.assert_array_equal(unpack(ws.receive_bytes())["actions"], tiny_model.predict_action(images, texts))
        errors = [
            (b"\xc1 not msgpack", 400, "msgpack"),
            (pack({"observations": [{"image": images[0], "instruction": "go"}, {"image": images[1]}]}), 422,
             "observations[1]: missing field 'instruction'"),
            (pack({"image": images[0].astype(np.int16), "instruction": "go"}), 422, "uint8"),
            (pack({"observations": [{"image": images[0][:2, :2], "instruction": "go"}] * 65}), 422, "at most 64"),
        ]  # fmt: skip
        for data, status, complaint in errors:
            ws.send_bytes(data)
            reply = unpack(ws.receive_bytes())
            assert reply["status"] == status and complaint in reply["error"], reply
        ws.send_text("hello")
        assert unpack(ws.receive_bytes())["status"] == 400
        ws.send_bytes(pack({"image": images[2], "instruction": texts[2]}))  # the connection still works
        expected = tiny_model.predict_action(images[2], texts[2])
        np.testing.assert_array_equal(unpack(ws.receive_bytes())["actions"], expected)


def test_one_batch_mixes_statistics_keys():
    two_keys = {"synthetic": TINY_NORM_STATS["synthetic"], "wide": {"action": {"q01": [-1.0] * 7, "q99": [2.0] * 7}}}
    model = make_tiny_model(norm_stats=two_keys)
    images, keys = [rgb(20 + i) for i in range(4)], ["wide", "synthetic", "wide", "synthetic"]
    with TestClient(create_app(BatchPolicy(model))) as client, client.websocket_connect("/ws") as ws:
        unpack(ws.receive_bytes())
        ws.send_bytes(pack({"observations": [{"image": i, "instruction": "go", "unnorm_key": k}
                                             for i, k in zip(images, keys)]}))  # fmt: skip
        actions = unpack(ws.receive_bytes())["actions"]
        for image, key, action in zip(images, keys, actions):
            np.testing.assert_array_equal(action, model.predict_action(image, "go", unnorm_key=key))
        response = post_act(client, {"image": images[0], "instruction": "go"})
        assert response.status_code == 422 and "synthetic, wide" in response.json()["error"]


# ------------------------------------------------------------------------------------------- safety
def test_safety_limits_are_applied_to_served_actions(policy, tiny_model):
    low, high = [-0.02] * 6 + [0.0], [0.02] * 6 + [0.5]
    safety = SafetyConfig(scale=0.5, action_low=low, action_high=high)
    images = [rgb(30 + i) for i in range(4)]
    with TestClient(create_app(policy, ServeConfig(safety=safety))) as client:
        for image in images:
            raw = tiny_model.predict_action(image, "go")
            expected = np.clip(np.where(np.arange(7) < 6, raw * 0.5, raw), low, high)  # gripper is not scaled
            np.testing.assert_allclose(json_numpy.loads(post_act(client, {"image": image, "instruction": "go"}).text),
                                       expected)  # fmt: skip
        assert client.get("/metadata").json()["server"]["safety"]["scale"] == 0.5


def test_workspace_bounds_need_state_and_keep_the_arm_inside(policy, tiny_model):
    low, high = [-0.01, -0.01, -0.01], [0.01, 0.01, 0.01]
    config = ServeConfig(safety=SafetyConfig(workspace_low=low, workspace_high=high))
    image = rgb(40)
    raw = tiny_model.predict_action(image, "go")
    with TestClient(create_app(policy, config)) as client:
        refused = post_act(client, {"image": image, "instruction": "go"})
        assert refused.status_code == 422 and refused.json()["field"] == "state"
        state = np.array([0.009, -0.009, 0.0, 1.0])
        action = json_numpy.loads(post_act(client, {"image": image, "instruction": "go", "state": state}).text)
    np.testing.assert_allclose(state[:3] + action[:3], np.clip(state[:3] + raw[:3], low, high))
    np.testing.assert_array_equal(action[3:], raw[3:])


# ------------------------------------------------------------------------------------------- isolation
class PickyPolicy(BatchPolicy):
    """Fails every batch that contains the instruction "explode" (stands in for an input that breaks the model)."""

    def infer(self, requests: list[Request]) -> list[np.ndarray]:
        if any(r.instruction == "explode" for r in requests):
            raise RuntimeError("the model choked")
        return super().infer(requests)


def test_a_failing_request_does_not_fail_its_batch_mates(tiny_model):
    service = PolicyService(PickyPolicy(tiny_model), ServeConfig())
    requests = [Request({"primary": rgb(50 + i)}, text) for i, text in enumerate(["go", "explode", "stop"])]
    for request in requests:
        service.policy.check(request)
    results = service.run_batch(requests)
    assert isinstance(results[1], RuntimeError)
    for index in (0, 2):
        expected = tiny_model.predict_action(requests[index].image, requests[index].instruction)
        np.testing.assert_array_equal(results[index], expected)


def test_internal_errors_are_500_json_not_200(tiny_model):
    with TestClient(create_app(PickyPolicy(tiny_model)), raise_server_exceptions=False) as client:
        response = post_act(client, {"image": IMAGE, "instruction": "explode"})
        assert response.status_code == 500 and "RuntimeError" in response.json()["error"]
        assert client.get("/healthz").json()["failed"] == 1
        assert post_act(client, {"image": IMAGE, "instruction": "go"}).status_code == 200


def test_json_dumps_of_an_answer_matches_json_numpy():
    action = np.linspace(-1, 1, 7)
    assert json_numpy.loads(json.dumps(encode_json_array(action))).tolist() == action.tolist()
    assert json_numpy.loads(json_dumps(action)).tolist() == action.tolist()


# ------------------------------------------------------------------------------------------- model extensions
def extended_model():
    """Tiny model with an L1 head (chunks of 3), 2 cameras and a 4-D proprio token."""
    from vlaforge.config import get_preset
    from vlaforge.data.tokenizer import build_tokenizer
    from vlaforge.model.vla import OpenVLA

    config = get_preset("tiny")
    stats = json.loads(json.dumps(TINY_NORM_STATS))
    stats["synthetic"]["proprio"] = {"q01": [-1.0] * 4, "q99": [1.0] * 4}
    config.norm_stats = stats
    config.action_head, config.action_chunk, config.action_dim = "l1", 3, 7
    config.proprio_dim, config.num_images = 4, 2
    config.validate()
    return OpenVLA.create(config, build_tokenizer(), seed=0)


def test_chunks_cameras_and_state_are_served():
    model = extended_model()
    observations = [
        {"image": rgb(60 + i), "images": {"camera1": rgb(70 + i, 32, 32)}, "instruction": f"task {i}",
         "state": np.linspace(-0.5, 0.5, 4) * i}
        for i in range(3)
    ]  # fmt: skip
    expected = model.predict_action(
        [[o["image"], o["images"]["camera1"]] for o in observations],
        [o["instruction"] for o in observations],
        proprio=np.stack([o["state"] for o in observations]),
    )
    with TestClient(create_app(BatchPolicy(model))) as client, client.websocket_connect("/ws") as ws:
        meta = unpack(ws.receive_bytes())
        assert meta["chunk_size"] == 3 and meta["cameras"] == ["primary", "camera1"] and meta["state_dim"] == 4
        ws.send_bytes(pack({"observations": observations}))
        actions = unpack(ws.receive_bytes())["actions"]
        assert actions.shape == (3, 3, 7)
        np.testing.assert_allclose(actions, expected, rtol=1e-6, atol=1e-9)
        single = json_numpy.loads(post_act(client, observations[1]).text)
        obs = observations[1]
        alone = model.predict_action([obs["image"], obs["images"]["camera1"]], obs["instruction"], proprio=obs["state"])
        np.testing.assert_allclose(single, alone, rtol=1e-6, atol=1e-9)
        for missing, field in [("images", "images"), ("state", "state")]:
            response = post_act(client, {k: v for k, v in observations[0].items() if k != missing})
            assert response.status_code == 422 and response.json()["field"] == field
