"""Wire formats (json-numpy, msgpack-numpy) and request validation, without a server.

Run: .venv/bin/pytest tests/serve/test_protocol.py -q
"""

from __future__ import annotations

import base64
import json
import pickle
import re
from pathlib import Path

import json_numpy
import msgpack
import numpy as np
import pytest

import vlaforge.client as client_module
from vlaforge.client import WireFormatError, decode_json_array, json_dumps, json_loads, pack, unpack
from vlaforge.serve.protocol import (
    ProtocolError,
    decode_json_body,
    decode_msgpack_message,
    parse_observation,
)

ARRAYS = [
    np.arange(24, dtype=np.uint8).reshape(2, 4, 3),
    np.linspace(-1, 1, 7),
    np.array([[1.5, -2.0]], dtype=">f4"),  # big-endian input
    np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2],  # not contiguous
    np.zeros((0, 3), dtype=np.float32),
    np.array(3.25),  # 0-d
    np.array([True, False]),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
def test_json_codec_interoperates_with_json_numpy(array):
    # What the original's clients send (json_numpy) we decode; what we send, json_numpy decodes.
    ours = json_loads(json_numpy.dumps({"x": array}))["x"]
    theirs = json_numpy.loads(json_dumps({"x": array}))["x"]
    for decoded in (ours, np.asarray(theirs)):
        assert decoded.shape == array.shape
        np.testing.assert_array_equal(decoded, array)
        assert decoded.dtype.newbyteorder("=") == array.dtype.newbyteorder("=")


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
def test_msgpack_codec_round_trips(array):
    message = {"obs": [{"image": array, "n": 3}], "text": "hi", "scalar": np.float32(2.5)}
    decoded = unpack(pack(message))
    np.testing.assert_array_equal(decoded["obs"][0]["image"], array)
    assert decoded["obs"][0]["image"].dtype == array.dtype.newbyteorder("=")
    assert decoded["obs"][0]["image"].flags.writeable
    assert decoded["scalar"] == 2.5 and decoded["text"] == "hi"


def _json_array(dtype: str, shape, data: bytes) -> dict:
    return {"__numpy__": base64.b64encode(data).decode(), "dtype": dtype, "shape": shape}


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [
        (_json_array("|O", [1], b"\0" * 8), "not allowed"),
        (_json_array("<U2", [1], b"\0" * 8), "not allowed"),
        (_json_array("|V8", [1], b"\0" * 8), "not allowed"),
        (_json_array("no-such-dtype", [1], b"\0"), "not a numpy dtype"),
        (_json_array("|u1", [2, 2], b"\0" * 3), "needs 4 bytes"),
        (_json_array("|u1", [-1], b""), "non-negative"),
        (_json_array("|u1", [True], b"\0"), "non-negative integers"),
        (_json_array("|u1", [1] * 9, b"\0"), "at most 8"),
        ({"__numpy__": "***", "dtype": "|u1", "shape": [1]}, "base64"),
        ({"__numpy__": 5, "dtype": "|u1", "shape": [1]}, "base64 string"),
    ],
)
def test_json_array_decoding_refuses_malformed_arrays(obj, complaint):
    with pytest.raises(WireFormatError, match=complaint):
        decode_json_array(obj)


def test_no_pickle_on_the_wire(tmp_path):
    """An object-dtype array (numpy's way to carry pickles) is refused by both codecs before any unpickling."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = pickle.dumps(Payload())
    with pytest.raises(WireFormatError, match="not allowed"):
        unpack(msgpack.packb({"__ndarray__": True, "dtype": "|O", "shape": [1], "data": evil}))
    with pytest.raises(WireFormatError, match="not allowed"):
        json_loads(json.dumps(_json_array("|O", [1], evil)))
    with pytest.raises(WireFormatError):
        pack({"x": np.array([object()], dtype=object)})
    assert not marker.exists()
    # And no module of the server or client can unpickle: none imports pickle or lets numpy do it.
    sources = [Path(client_module.__file__), *Path(client_module.__file__).parent.joinpath("serve").glob("*.py")]
    assert len(sources) >= 5
    unpickling = re.compile(r"import\s+pickle|from\s+pickle|pickle\.load|allow_pickle\s*=\s*True|np\.load\(")
    for source in sources:
        assert not unpickling.search(source.read_text()), source


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", msgpack.packb({"a": 1})[:-1], msgpack.packb({"a": 1}) + b"\x01", b"\x91" * 5000 + b"\x00"],
    ids=["empty", "reserved-byte", "truncated", "trailing", "deep-nesting"],
)
def test_unpack_refuses_malformed_msgpack(data):
    with pytest.raises(WireFormatError):
        unpack(data)


def test_json_loads_refuses_malformed_json():
    for text in [b"{", b"\xff\xfe\x00", b"[" * 100000 + b"]" * 100000, b"nope"]:
        with pytest.raises(WireFormatError):
            json_loads(text)


# ------------------------------------------------------------------------------------------- observations
def _obs(**overrides):
    obs = {"image": np.zeros((8, 8, 3), np.uint8), "instruction": "pick up the cup"}
    obs.update(overrides)
    return {k: v for k, v in obs.items() if v is not ...}


def test_parse_observation_accepts_the_original_payload_and_extras():
    request = parse_observation(_obs(unnorm_key="bridge_orig", state=[0.1, 0.2, 0.3]), 1000)
    assert request.instruction == "pick up the cup" and request.unnorm_key == "bridge_orig"
    assert request.image.shape == (8, 8, 3)
    np.testing.assert_array_equal(request.state, [0.1, 0.2, 0.3])
    wrist = np.ones((4, 4, 3), np.uint8)
    request = parse_observation(_obs(image=..., images={"primary": wrist, "wrist": wrist}), 1000)
    assert set(request.images) == {"primary", "wrist"}


BAD_OBSERVATIONS = [
    (_obs(image=...), "image", "missing field 'image'"),
    (_obs(instruction=...), "instruction", "missing field 'instruction'"),
    (_obs(image=np.zeros((8, 8, 3), np.float32)), "image", "dtype uint8"),
    (_obs(image=np.zeros((8, 8), np.uint8)), "image", r"shape \[H, W, 3\]"),
    (_obs(image=np.zeros((8, 8, 4), np.uint8)), "image", r"shape \[H, W, 3\]"),
    (_obs(image=np.zeros((0, 8, 3), np.uint8)), "image", r"shape \[H, W, 3\]"),
    (_obs(image="a picture of a cup"), "image", "got str"),
    (_obs(image=[[[0, 0, 0]]]), "image", "got list"),
    (_obs(instruction=""), "instruction", "empty"),
    (_obs(instruction="   \n"), "instruction", "empty"),
    (_obs(instruction=42), "instruction", "must be a string"),
    (_obs(instruction="x" * 1001), "instruction", "at most 1000"),
    (_obs(instruction="bad \ud800 surrogate"), "instruction", "unicode"),
    (_obs(unnorm_key=3), "unnorm_key", "string or null"),
    (_obs(state="up"), "state", "1-D numeric"),
    (_obs(state=np.array([np.nan])), "state", "NaN"),
    (_obs(state=np.zeros((2, 2))), "state", "1-D numeric"),
    (_obs(images={"primary": np.zeros((2, 2, 3), np.uint8)}), "image", "once"),
    (_obs(images=[1, 2]), "images", "camera names"),
    (_obs(instrution="typo"), "instrution", "did you mean 'instruction'"),
]


@pytest.mark.parametrize(("obs", "field", "complaint"), BAD_OBSERVATIONS)
def test_parse_observation_refuses_bad_fields(obs, field, complaint):
    with pytest.raises(ProtocolError, match=complaint) as info:
        parse_observation(obs, max_instruction_chars=1000)
    assert info.value.status == 422 and info.value.field == field


def test_decode_json_body_handles_both_original_encodings():
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    plain = json_numpy.dumps({"image": image, "instruction": "go"})
    payload, double = decode_json_body(plain.encode())
    assert not double and payload["instruction"] == "go"
    np.testing.assert_array_equal(payload["image"], image)
    payload, double = decode_json_body(json.dumps({"encoded": plain}).encode())
    assert double
    np.testing.assert_array_equal(payload["image"], image)
    for body, status in [(b"{oops", 400), (b"[1, 2]", 422), (b'{"encoded": 5}', 422), (b'{"encoded": "{"}', 400)]:
        with pytest.raises(ProtocolError) as info:
            decode_json_body(body)
        assert info.value.status == status, body


def test_decode_msgpack_message_single_and_batch():
    obs = _obs()
    single, batched = decode_msgpack_message(pack(obs))
    assert not batched and len(single) == 1
    many, batched = decode_msgpack_message(pack({"observations": [obs, obs]}))
    assert batched and len(many) == 2
    for message in [[1, 2], {"observations": []}, {"observations": [obs], "extra": 1}, {"observations": [5]}]:
        with pytest.raises(ProtocolError) as info:
            decode_msgpack_message(pack(message))
        assert info.value.status == 422
