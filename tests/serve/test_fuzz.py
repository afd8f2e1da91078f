"""Fuzz the HTTP API from its own OpenAPI description (schemathesis): no input crashes it or gets a false 200.

Schema-valid and schema-violating requests are generated for every operation and sent to a live server. Every
answer must be a 200 that matches the schema, or a 4xx with a JSON `{"error", "status"}` body; never a 5xx.
The number of cases run is printed (`-s` shows it).
Run: .venv/bin/pytest tests/serve/test_fuzz.py -q -s -m slow
"""

from __future__ import annotations

from collections import Counter

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from vlaforge.client import json_dumps, json_loads
from vlaforge.serve.app import create_app
from vlaforge.serve.config import ServeConfig
from vlaforge.serve.server import ServerThread

TOKEN = "fuzz-token"
EXAMPLES = {"/act": 600, "/metadata": 100, "/healthz": 50}
FUZZ_SETTINGS = {"deadline": None, "database": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}


def fuzz_operation(operation, n_examples: int, base_url: str, statuses: Counter) -> None:
    """Sends `n_examples` schema-valid and schema-violating requests to one operation and checks each answer."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=n_examples, **FUZZ_SETTINGS)
    @given(case=strategy)
    def check(case):
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        statuses[(operation.path, response.status_code)] += 1
        assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
        if response.status_code >= 400:
            body = response.json()
            assert body["status"] == response.status_code and body["error"], body
        # Schema-valid bodies may still be refused (the schema cannot say "base64 of shape x dtype bytes"),
        # so the positive-acceptance check is the only one left out.
        case.validate_response(response, excluded_checks=[positive_data_acceptance], headers=headers)

    check()


@pytest.mark.slow  # about 30 s: hundreds of requests
def test_fuzz_http_api_from_openapi(policy):
    config = ServeConfig(token=TOKEN, max_request_bytes=1 << 20, max_wait_ms=1.0)
    statuses: Counter[tuple[str, int]] = Counter()
    with ServerThread(create_app(policy, config)) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = {op.path: op for op in (result.ok() for result in schema.get_all_operations())}
        assert set(EXAMPLES) <= set(operations)
        for path, n_examples in EXAMPLES.items():
            fuzz_operation(operations[path], n_examples, server.url, statuses)
    total = sum(statuses.values())
    print(f"\nfuzz (OpenAPI): {total} cases; (path, status) -> count: {dict(sorted(statuses.items()))}")
    assert total >= 500
    assert any(code >= 400 for _, code in statuses) and any(code == 200 for _, code in statuses)


# ------------------------------------------------------------------------------------------- model oracle
OBS_KEYS = ("image", "instruction", "unnorm_key")


CORRUPTIONS = ("none", "dtype", "shape", "instruction", "unnorm_key", "drop", "extra")


@st.composite
def observations(draw) -> dict:
    """A valid observation with, half of the time, one thing wrong with it (well-formed json-numpy throughout)."""
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)
    obs = {"image": image, "instruction": draw(st.text(min_size=1, max_size=60).filter(str.strip))}
    if draw(st.booleans()):
        obs["unnorm_key"] = draw(st.sampled_from([None, "synthetic"]))
    corruption = draw(st.sampled_from(CORRUPTIONS[:1] * 6 + CORRUPTIONS[1:]))
    if corruption == "dtype":
        obs["image"] = image.astype(draw(st.sampled_from([np.float32, np.float64, np.int16, np.bool_, np.uint16])))
    elif corruption == "shape":
        shape = tuple(draw(st.lists(st.integers(0, 9), max_size=4)))
        obs["image"] = np.zeros(shape, np.uint8)
    elif corruption == "instruction":
        obs["instruction"] = draw(
            st.one_of(st.sampled_from(["", "   ", "go " * 100]), st.text(min_size=995, max_size=1010), st.integers())
        )
    elif corruption == "unnorm_key":
        obs["unnorm_key"] = draw(st.one_of(st.text(max_size=12), st.integers()))
    elif corruption == "drop":
        obs.pop(draw(st.sampled_from(OBS_KEYS)), None)
    elif corruption == "extra":
        obs[draw(st.sampled_from(["instrution", "imgae", "extra", "unnorm-key"]))] = 1
    return obs


def protocol_valid(obs: dict) -> bool:
    """The server's documented rules, written out independently of its code."""
    image, text = obs.get("image"), obs.get("instruction")
    return (
        set(obs) <= set(OBS_KEYS)
        and isinstance(image, np.ndarray) and image.dtype == np.uint8
        and image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0
        and isinstance(text, str) and bool(text.strip()) and len(text) <= 1000
        and obs.get("unnorm_key") in (None, "synthetic")
    )  # fmt: skip


@pytest.mark.slow  # about a minute: every valid case runs the model twice (server and reference)
def test_fuzz_act_payloads_against_the_model(policy, tiny_model):
    statuses: Counter[int] = Counter()
    with ServerThread(create_app(policy, ServeConfig(max_wait_ms=1.0))) as server, httpx.Client() as http:

        @settings(max_examples=300, **FUZZ_SETTINGS)
        @given(obs=observations())
        def check(obs):
            response = http.post(f"{server.url}/act", content=json_dumps(obs), timeout=30)
            statuses[response.status_code] += 1
            if not protocol_valid(obs):
                assert 400 <= response.status_code < 500 and response.json()["error"], response.text
                return
            try:
                expected = tiny_model.predict_action(obs["image"], obs["instruction"], unnorm_key=obs.get("unnorm_key"))
            except ValueError:  # e.g. a prompt longer than the model accepts
                assert response.status_code == 422, response.text
                return
            assert response.status_code == 200, response.text
            np.testing.assert_array_equal(json_loads(response.content), expected)

        check()
    print(f"\nfuzz (model oracle): {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
    assert statuses[200] >= 10 and statuses[422] >= 10 and statuses[400] + statuses[422] > 100
