"""`vlaforge serve` as a real process: SIGTERM lets every request already received finish, then it exits.

Run: .venv/bin/pytest tests/serve/test_shutdown.py -q
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.serve.conftest import rgb
from vlaforge.client import HTTPPolicyClient, WebsocketPolicyClient
from vlaforge.serve.server import ServerProcess


@pytest.mark.slow  # starts `vlaforge serve` as a process: ~10-20 s of imports and model loading
def test_sigterm_finishes_in_flight_requests(tiny_checkpoint, tiny_model):
    n_http, n_ws = 4, 4
    images = [rgb(400 + i) for i in range(n_http + n_ws)]
    expected = [tiny_model.predict_action(image, "put the cup away") for image in images]
    # One at a time, so the queue is still long when SIGTERM arrives.
    with ServerProcess(tiny_checkpoint, ["--max-batch-size", "1", "--threads", "1"]) as server:
        http = [HTTPPolicyClient(server.url) for _ in range(n_http)]
        ws = [WebsocketPolicyClient(server.url) for _ in range(n_ws)]  # connected before the signal
        for client in http:
            client.health()  # opens the keep-alive connection now
        answers: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def ask(i: int, client) -> None:
            try:
                answers[i] = client.act(images[i], "put the cup away")
            except BaseException as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=ask, args=(i, c)) for i, c in enumerate([*http, *ws])]
        for thread in threads:
            thread.start()
        probe = HTTPPolicyClient(server.url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the server has received every request
            health = probe.health()
            if health["inflight"] + health["answered"] >= n_http + n_ws:
                break
            time.sleep(0.005)
        probe.close()
        received_while_running = health["answered"]
        exit_code = server.stop(timeout_s=60)
        for thread in threads:
            thread.join(timeout=60)
        for client in [*http, *ws]:
            client.close()
    assert received_while_running < n_http + n_ws  # some were still queued when SIGTERM arrived
    assert not errors, errors
    for i, answer in answers.items():
        np.testing.assert_array_equal(answer, expected[i])
    assert len(answers) == n_http + n_ws
    log = "".join(server.output)
    assert "draining" in log and "Traceback" not in log, log
    assert exit_code in (0, -15), log  # uvicorn re-raises SIGTERM after its clean shutdown
