"""The torch-free client against a real uvicorn server on loopback: answers, batching, errors, disconnects.

Run: .venv/bin/pytest tests/serve/test_client.py -q
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import rgb
from vlaforge.client import HTTPPolicyClient, PolicyServerError, WebsocketPolicyClient, json_dumps, pack
from vlaforge.serve.app import create_app
from vlaforge.serve.config import ServeConfig
from vlaforge.serve.server import ServerThread

SRC = Path(__file__).resolve().parents[2] / "src"


def test_http_client(live_server, tiny_model):
    image = rgb(100)
    with HTTPPolicyClient(live_server.url) as client:
        action = client.act(image, "lift the lid")
        np.testing.assert_array_equal(action, tiny_model.predict_action(image, "lift the lid"))
        meta = client.metadata()
        assert meta["action_dim"] == 7 and meta["norm_stats_keys"] == ["synthetic"]
        assert client.health()["status"] == "ok"


def test_websocket_client(live_server, tiny_model):
    images, texts = [rgb(110 + i) for i in range(3)], ["fold the towel", "press the red button", "go left"]
    with WebsocketPolicyClient(live_server.ws_url) as client:
        assert client.metadata()["cameras"] == ["primary"]
        np.testing.assert_array_equal(client.act(images[0], texts[0]), tiny_model.predict_action(images[0], texts[0]))
        batch = client.act_batch([{"image": i, "instruction": t} for i, t in zip(images, texts)])
        np.testing.assert_array_equal(batch, tiny_model.predict_action(images, texts))
        assert client.last_timing["batch_size"] >= 1
    # An http:// address without a path reaches the same endpoint.
    with WebsocketPolicyClient(live_server.url) as client:
        np.testing.assert_array_equal(client.act(images[1], texts[1]), tiny_model.predict_action(images[1], texts[1]))


def test_concurrent_clients_share_batches_and_each_gets_its_own_answer(live_server, tiny_model):
    n_clients, n_requests = 8, 3
    images = [rgb(200 + i) for i in range(n_clients)]
    texts = [f"put block {i} in bin {i % 3}" for i in range(n_clients)]
    expected = [tiny_model.predict_action(images[i], texts[i]) for i in range(n_clients)]
    answers: dict[int, list[np.ndarray]] = {i: [] for i in range(n_clients)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_clients)
    before = HTTPPolicyClient(live_server.url).health()

    def work(i: int) -> None:
        try:
            ws = i % 2 == 1
            client = WebsocketPolicyClient(live_server.ws_url) if ws else HTTPPolicyClient(live_server.url)
            with client:
                barrier.wait(timeout=30)
                for _ in range(n_requests):
                    answers[i].append(client.act(images[i], texts[i]))
        except BaseException as err:  # reported below; a thread cannot fail the test directly
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for i in range(n_clients):
        assert len(answers[i]) == n_requests
        for answer in answers[i]:  # batched decoding is exact: same as the lone call
            np.testing.assert_array_equal(answer, expected[i])
    after = HTTPPolicyClient(live_server.url).health()
    assert after["answered"] - before["answered"] == n_clients * n_requests
    assert after["largest_batch"] > 1  # requests of different clients really shared batches
    assert after["batches"] - before["batches"] < n_clients * n_requests


def test_client_errors_carry_the_servers_reason(live_server):
    with HTTPPolicyClient(live_server.url) as client:
        with pytest.raises(PolicyServerError, match="dtype uint8") as info:
            client.act(np.zeros((8, 8, 3), np.float32), "go")
        assert info.value.status == 422
    with WebsocketPolicyClient(live_server.ws_url) as client:
        with pytest.raises(PolicyServerError, match="unknown unnorm_key") as info:
            client.act(rgb(1), "go", unnorm_key="bridge_orig")
        assert info.value.status == 422
        assert client.act(rgb(1), "go").shape == (7,)  # the connection survives an error


def test_auth_through_the_clients(policy, tiny_model):
    with ServerThread(create_app(policy, ServeConfig(token="t0ken"))) as server:
        for make in (HTTPPolicyClient, WebsocketPolicyClient):
            for token, status in [(None, 401), ("wrong", 403)]:
                with pytest.raises(PolicyServerError) as info:
                    make(server.url, token=token).metadata()
                assert info.value.status == status
            client = make(server.url, token="t0ken")
            np.testing.assert_array_equal(client.act(rgb(2), "go"), tiny_model.predict_action(rgb(2), "go"))
            client.close()


def test_client_imports_and_works_without_torch(live_server, tiny_model):
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys
        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "timm", "torchvision"):
                    raise ImportError(f"{{name}} is blocked: the client must not need it")
        sys.meta_path.insert(0, NoTorch())
        sys.path.insert(0, {str(SRC)!r})
        import numpy as np
        from vlaforge.client import HTTPPolicyClient, WebsocketPolicyClient
        image = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        http = HTTPPolicyClient({live_server.url!r}).act(image, "pick up the sponge")
        ws = WebsocketPolicyClient({live_server.ws_url!r}).act(image, "pick up the sponge")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "timm"))
        print(json.dumps({{"http": http.tolist(), "ws": ws.tolist(), "heavy": heavy}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    image = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    expected = tiny_model.predict_action(image, "pick up the sponge")
    assert out["heavy"] == []
    np.testing.assert_array_equal(out["http"], expected)
    np.testing.assert_array_equal(out["ws"], expected)


def _raw_post_then_hang_up(url: str, body: bytes, send_all: bool) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST /act HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + (body if send_all else body[:100]))
    # closed before (or while) the server answers


def test_clients_hanging_up_mid_request_do_not_disturb_others(live_server, tiny_model):
    from websockets.sync.client import connect

    image = rgb(300)
    body = json_dumps({"image": image, "instruction": "sort the cubes"}).encode()
    expected = tiny_model.predict_action(image, "sort the cubes")
    steady_answers: list[np.ndarray] = []

    def steady() -> None:
        with HTTPPolicyClient(live_server.url) as client:
            for _ in range(6):
                steady_answers.append(client.act(image, "sort the cubes"))

    thread = threading.Thread(target=steady)
    thread.start()
    for i in range(6):
        _raw_post_then_hang_up(live_server.url, body, send_all=i % 2 == 0)  # whole request, or half a body
        with connect(live_server.ws_url, open_timeout=10) as ws:  # a robot that sends and vanishes
            ws.recv(timeout=10)
            ws.send(pack({"image": image, "instruction": "sort the cubes"}))
    thread.join(timeout=120)
    assert len(steady_answers) == 6
    for answer in steady_answers:
        np.testing.assert_array_equal(answer, expected)
    with HTTPPolicyClient(live_server.url) as client:
        assert client.health()["status"] == "ok"
        np.testing.assert_array_equal(client.act(image, "sort the cubes"), expected)


def test_the_original_openvla_client_works_unchanged(live_server, tiny_model):
    """The client snippet of the original deploy.py: requests + json_numpy.patch(), in its own process."""
    script = textwrap.dedent(
        f"""
        import json_numpy
        json_numpy.patch()
        import json, numpy as np, requests
        image = np.random.default_rng(9).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        payload = {{"image": image, "instruction": "wipe the table", "unnorm_key": "synthetic"}}
        action = requests.post({live_server.url + "/act"!r}, json=payload).json()
        bad = requests.post({live_server.url + "/act"!r}, json={{"image": image}})
        print(json.dumps({{"action": action.tolist(), "bad_status": bad.status_code, "bad": bad.json()}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    image = np.random.default_rng(9).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(out["action"], tiny_model.predict_action(image, "wipe the table"))
    assert out["bad_status"] == 422 and "instruction" in out["bad"]["error"]


def test_the_eval_harness_reaches_a_policy_through_the_client(live_server, tiny_model):
    """`vlaforge.sim.policies.RemotePolicy` (what `vlaforge eval` uses for server addresses) over both protocols."""
    policies = pytest.importorskip("vlaforge.sim.policies")
    from vlaforge.sim.env import Observation

    observations = [
        Observation(images={"corner": rgb(500 + i)}, state=np.zeros(4, np.float32), instruction=f"reach goal {i}",
                    task="reach-v3")
        for i in range(3)
    ]  # fmt: skip
    expected = tiny_model.predict_action([o.image for o in observations], [o.instruction for o in observations])
    for url in (live_server.url, live_server.ws_url):
        remote = policies.RemotePolicy(url)
        try:
            np.testing.assert_array_equal(remote.act(observations), expected)
        finally:
            remote.close()
