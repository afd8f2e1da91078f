"""Talk to a `vlaforge serve` policy server from a robot computer: no torch, one file.

    from vlaforge.client import HTTPPolicyClient, WebsocketPolicyClient

    policy = HTTPPolicyClient("http://gpu-box:8000", token="...")      # OpenVLA-compatible REST (POST /act)
    action = policy.act(frame, "put the eggplant in the bowl")          # [A] (or [K, A] for chunked models)

    with WebsocketPolicyClient("ws://gpu-box:8000/ws") as policy:      # msgpack frames, lower latency
        actions = policy.act_batch([{"image": frame, "instruction": "open the drawer"}, ...])  # [B, A]

This module imports only the standard library, numpy, msgpack and (when used) httpx or websockets, so a
robot computer can copy this file, or `pip install --no-deps vlaforge` plus those four packages.

The wire formats are defined here, and the server imports them from here, so both sides agree:
- JSON (REST): arrays are json-numpy objects `{"__numpy__": base64 bytes, "dtype": "<f8", "shape": [7]}`,
  the format the original OpenVLA `deploy.py` and its clients (`json_numpy.patch()`) exchange.
- msgpack (websocket): arrays are maps `{"__ndarray__": true, "dtype": "|u1", "shape": [...], "data": bytes}`.

Neither format can carry Python objects: only numeric dtypes are decoded, and nothing is ever unpickled.
Clients are not thread-safe: give each thread its own.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgpack
import numpy as np

__all__ = [
    "HTTPPolicyClient",
    "WebsocketPolicyClient",
    "PolicyServerError",
    "WireFormatError",
    "encode_json_array",
    "decode_json_array",
    "json_dumps",
    "json_loads",
    "pack",
    "unpack",
]

# Numeric kinds only: b(ool), i(nt), u(nsigned), f(loat). Object, string, void and structured dtypes could
# smuggle Python objects (or just nonsense) into the server, so they are refused.
_ALLOWED_KINDS = "biuf"
_MAX_NDIM = 8


class WireFormatError(ValueError):
    """A message is not valid json-numpy or msgpack-numpy; the message says which part is wrong."""


class PolicyServerError(RuntimeError):
    """The server refused or failed a request.

    Attributes:
        status: HTTP status code (also used for websocket error frames): 4xx your request, 5xx the server.
        message: the server's explanation.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"policy server answered {status}: {message}")
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------------- array codecs
def _check_dtype(descr: Any) -> np.dtype:
    """Parses a dtype string such as "<f8" or "|u1" and refuses anything but plain numeric dtypes."""
    if not isinstance(descr, str) or len(descr) > 16:
        raise WireFormatError(f"array dtype must be a short string like '<f4' or '|u1', got {descr!r}")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError) as err:
        raise WireFormatError(f"array dtype {descr!r} is not a numpy dtype: {err}") from err
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireFormatError(f"array dtype {descr!r} is not allowed; send bool, integer or float arrays")
    return dtype


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or len(shape) > _MAX_NDIM:
        raise WireFormatError(f"array shape must be a list of at most {_MAX_NDIM} integers, got {shape!r}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise WireFormatError(f"array shape must hold non-negative integers, got {shape!r}")
    return tuple(shape)


def _array_from_bytes(data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise WireFormatError(
            f"array of shape {list(shape)} and dtype {dtype.str} needs {expected} bytes, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # native byte order, writeable


def encode_json_array(array: np.ndarray | np.generic) -> dict[str, Any]:
    """A numpy array (or scalar) as a json-numpy object."""
    array = np.asarray(array)
    return {"__numpy__": base64.b64encode(array.tobytes()).decode("ascii"), "dtype": array.dtype.str,
            "shape": list(array.shape)}  # fmt: skip


def decode_json_array(obj: dict[str, Any]) -> np.ndarray:
    """A json-numpy object back to an array; raises WireFormatError on anything malformed."""
    data = obj.get("__numpy__")
    if not isinstance(data, str):
        raise WireFormatError("json-numpy '__numpy__' must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise WireFormatError(f"json-numpy '__numpy__' is not valid base64: {err}") from err
    return _array_from_bytes(raw, _check_dtype(obj.get("dtype")), _check_shape(obj.get("shape")))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        return encode_json_array(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} as JSON; use numpy arrays, str, numbers, lists, dicts")


def _json_hook(obj: dict[str, Any]) -> Any:
    return decode_json_array(obj) if "__numpy__" in obj else obj


def json_dumps(obj: Any) -> str:
    """JSON text with numpy arrays as json-numpy objects (what `json_numpy.dumps` writes)."""
    return json.dumps(obj, default=_json_default)


def json_loads(text: str | bytes) -> Any:
    """Parses JSON text, turning json-numpy objects into arrays; raises WireFormatError when malformed."""
    try:
        return json.loads(text, object_hook=_json_hook)
    except WireFormatError:
        raise
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise WireFormatError(f"invalid JSON ({err})") from err


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype.str)
        return {"__ndarray__": True, "dtype": obj.dtype.str, "shape": list(obj.shape), "data": obj.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__} with msgpack; use numpy arrays, str, numbers, lists, dicts")


def _msgpack_hook(obj: dict[Any, Any]) -> Any:
    if obj.get("__ndarray__") is not True:
        return obj
    data = obj.get("data")
    if not isinstance(data, bytes):
        raise WireFormatError("msgpack array 'data' must be bytes (a msgpack bin)")
    return _array_from_bytes(data, _check_dtype(obj.get("dtype")), _check_shape(obj.get("shape")))


def pack(obj: Any) -> bytes:
    """msgpack bytes, with numpy arrays as `{"__ndarray__": true, ...}` maps."""
    return msgpack.packb(obj, default=_msgpack_default, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Decodes `pack`'s output; raises WireFormatError for malformed, truncated or trailing data."""
    try:
        return msgpack.unpackb(data, object_hook=_msgpack_hook, raw=False, strict_map_key=True)
    except WireFormatError:
        raise
    except Exception as err:  # msgpack raises several unrelated types (ExtraData, FormatError, StackError, ...)
        raise WireFormatError(f"message is not valid msgpack: {type(err).__name__}: {err}") from err


# ------------------------------------------------------------------------------------------- clients
def _observation(
    image: np.ndarray | None,
    instruction: str,
    unnorm_key: str | None,
    images: dict[str, np.ndarray] | None = None,
    state: np.ndarray | None = None,
) -> dict[str, Any]:
    """The observation map both protocols send; optional fields are left out when unset."""
    obs: dict[str, Any] = {"instruction": instruction}
    if image is not None:
        obs["image"] = np.asarray(image)
    for key, value in (("unnorm_key", unnorm_key), ("images", images), ("state", state)):
        if value is not None:
            obs[key] = value
    return obs


class HTTPPolicyClient:
    """Client of `POST /act` (the original OpenVLA REST protocol, json-numpy bodies).

    Args:
        base_url: the server's address, e.g. "http://127.0.0.1:8000".
        token: bearer token, if the server was started with one.
        timeout: seconds to wait for each answer.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        import httpx  # imported here so that websocket-only users need not install it

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def _check(self, response: Any) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except (ValueError, AttributeError):
                message = response.text
            raise PolicyServerError(response.status_code, str(message))
        return json_loads(response.content)

    def act(
        self,
        image: np.ndarray,
        instruction: str,
        unnorm_key: str | None = None,
        *,
        images: dict[str, np.ndarray] | None = None,
        state: np.ndarray | None = None,
    ) -> np.ndarray:
        """The action for one observation: `[A]`, or `[K, A]` for a model that predicts chunks.

        Args:
            image: `[H, W, 3]` uint8 RGB frame of the primary camera.
            instruction: what the robot should do.
            unnorm_key: dataset statistics to unnormalize with (optional when the model has one).
            images: further cameras by name (see `metadata()["cameras"]`).
            state: `[S]` proprioception; also used by the server's workspace bounds.
        """
        body = json_dumps(_observation(image, instruction, unnorm_key, images, state))
        response = self._http.post("/act", content=body, headers={"Content-Type": "application/json"})
        return np.asarray(self._check(response))

    def metadata(self) -> dict[str, Any]:
        """What the server serves: action dimension, chunk size, cameras, image size, statistics keys, ..."""
        return self._check(self._http.get("/metadata"))

    def health(self) -> dict[str, Any]:
        """`GET /healthz`: status and counters (needs no token)."""
        return self._check(self._http.get("/healthz"))

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> HTTPPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def websocket_url(url: str) -> str:
    """Accepts ws://, wss://, http:// or https:// addresses; a bare host:port gets the "/ws" path."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"websocket url must start with ws:// or wss:// (or http://), got {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class WebsocketPolicyClient:
    """Client of the msgpack websocket endpoint (`/ws`): one connection, several observations per message.

    The server sends its metadata as the first frame; every request frame then gets exactly one answer:
    `{"actions": array, "timing": {...}}` or `{"error": message, "status": code}`.

    Args:
        url: e.g. "ws://127.0.0.1:8000/ws" (an http:// address or a missing path are completed).
        token: bearer token, if the server was started with one.
        timeout: seconds to wait for each answer.
        open_timeout: seconds to wait for the connection and handshake.
        max_message_bytes: largest answer accepted.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        open_timeout: float = 10.0,
        max_message_bytes: int = 64 * 2**20,
    ) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        self.url = websocket_url(url)
        self.timeout = timeout
        self.last_timing: dict[str, Any] = {}  # the server's timing fields of the last answer
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self._ws = connect(
                self.url, additional_headers=headers, open_timeout=open_timeout, max_size=max_message_bytes
            )
        except InvalidStatus as err:  # refused during the handshake: 401/403/503 with a JSON body
            response = err.response
            try:
                message = json.loads(response.body or b"{}").get("error", "")
            except ValueError:
                message = ""
            raise PolicyServerError(response.status_code, message or response.reason_phrase) from err
        self._metadata = self._receive()

    def _receive(self) -> Any:
        message = unpack(self._ws.recv(timeout=self.timeout))
        if isinstance(message, dict) and "error" in message:
            raise PolicyServerError(int(message.get("status", 500)), str(message["error"]))
        return message

    def _request(self, payload: dict[str, Any]) -> np.ndarray:
        self._ws.send(pack(payload))
        answer = self._receive()
        self.last_timing = answer.get("timing", {})
        return np.asarray(answer["actions"])

    def act(
        self,
        image: np.ndarray,
        instruction: str,
        unnorm_key: str | None = None,
        *,
        images: dict[str, np.ndarray] | None = None,
        state: np.ndarray | None = None,
    ) -> np.ndarray:
        """The action for one observation, `[A]` (or `[K, A]`); arguments as `HTTPPolicyClient.act`."""
        return self._request(_observation(image, instruction, unnorm_key, images, state))

    def act_batch(self, observations: list[dict[str, Any]]) -> np.ndarray:
        """Actions for several observations in one message: `[B, A]` (or `[B, K, A]`).

        Args:
            observations: dicts with "image" (or "images"), "instruction" and optionally "unnorm_key" and
                "state", as the keyword arguments of `act`.
        """
        if not observations:
            raise ValueError("act_batch needs at least one observation")
        return self._request({"observations": list(observations)})

    def metadata(self) -> dict[str, Any]:
        """The metadata the server sent when the connection opened."""
        return self._metadata

    def close(self) -> None:
        """Closes the connection."""
        self._ws.close()

    def __enter__(self) -> WebsocketPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
