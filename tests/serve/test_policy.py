"""`BatchPolicy` loaded quantized: `ServeConfig.quant` -> `from_pretrained(quant=...)` -> /metadata and /act.

Run: .venv/bin/pytest tests/serve/test_policy.py -q
"""

from __future__ import annotations

import json_numpy
import numpy as np
import pytest
from fastapi.testclient import TestClient
from torch import nn

from tests.serve.conftest import rgb
from vlaforge.infer.quantize import Int8Linear, QuantizationError, decoder_of
from vlaforge.serve.app import create_app
from vlaforge.serve.config import ServeConfig
from vlaforge.serve.policy import BatchPolicy


def test_serve_config_quant_int8_serves_an_int8_model_and_says_so(tiny_checkpoint):
    config = ServeConfig(quant="int8")
    policy = BatchPolicy.from_pretrained(tiny_checkpoint, quant=config.quant)
    decoder = decoder_of(policy.model)
    assert any(isinstance(m, Int8Linear) for m in decoder.modules())
    assert not any(type(m) is nn.Linear for m in decoder.modules())
    image = rgb(11)
    with TestClient(create_app(policy, config)) as client:
        assert client.get("/metadata").json()["quant"] == "int8"
        response = client.post("/act", content=json_numpy.dumps({"image": image, "instruction": "open the drawer"}))
    assert response.status_code == 200
    action = json_numpy.loads(response.text)
    assert action.shape == (7,) and np.isfinite(action).all()
    np.testing.assert_array_equal(action, policy.model.predict_action(image, "open the drawer"))


def test_quant_settings_are_checked(tiny_model):
    with pytest.raises(QuantizationError, match="unknown quantization mode 'int4'; valid modes"):
        ServeConfig(quant="int4")  # type: ignore[arg-type]
    with pytest.raises(QuantizationError, match="valid modes"):
        BatchPolicy(tiny_model, quant="fp16")  # type: ignore[arg-type]
    # A setting the policy was not loaded with would be silently ignored: refused instead.
    with pytest.raises(ValueError, match=r"quant 'int8' but the policy was loaded as 'fp32'.*from_pretrained"):
        create_app(BatchPolicy(tiny_model), ServeConfig(quant="int8"))
