"""What travels on the wire: requests, their validation, error bodies and the OpenAPI schema of /act.

The array codecs live in `vlaforge.client` (one torch-free file for robot computers) and are re-used here,
so the server and the client cannot disagree. Everything a client sends is checked here before it reaches
the batcher: a bad request gets a `ProtocolError` (a 4xx with a JSON body that says what was wrong) and
never shares a batch with other clients' requests.

An observation (REST body or websocket message) is a map:
    image        [H, W, 3] uint8 RGB, the primary camera (or give it as images["primary"])
    images       {camera name: [H, W, 3] uint8}, optional further cameras
    instruction  non-empty string
    unnorm_key   optional string: which dataset statistics unnormalize the action
    state        optional [S] float/int vector (proprioception; anchors the workspace bounds)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaforge.client import WireFormatError, json_loads, unpack

API_VERSION = 1  # bumped when a message changes incompatibly; reported by /metadata
PRIMARY_CAMERA = "primary"
OBSERVATION_FIELDS = ("image", "images", "instruction", "unnorm_key", "state")


class ProtocolError(ValueError):
    """A request the server refuses; `status` is its HTTP code (400 unreadable, 422 invalid, ...).

    Attributes:
        status: the HTTP status code to answer with.
        field: the offending field, when there is one (e.g. "image").
    """

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def of_item(self, index: int | None) -> ProtocolError:
        """The same error for observation `index` of a batch message, saying which one it was."""
        if index is None:
            return self
        return ProtocolError(self.status, f"observations[{index}]: {self}", self.field)


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of every error answer (and of websocket error frames)."""
    body: dict[str, Any] = {"error": message, "status": status}
    if field is not None:
        body["field"] = field
    return body


@dataclass
class Request:
    """One validated observation, as the policy receives it.

    Attributes:
        images: camera name -> `[H, W, 3]` uint8; always holds the primary camera.
        instruction: what the robot should do.
        unnorm_key: statistics key as sent (None: the model's only one); resolved by the policy.
        state: `[S]` float64 proprioception, or None.
    """

    images: dict[str, np.ndarray]
    instruction: str
    unnorm_key: str | None = None
    state: np.ndarray | None = None
    resolved_key: str = field(default="", repr=False)  # set by the policy's check (the key actually used)

    @property
    def image(self) -> np.ndarray:
        """The primary camera's frame."""
        return self.images[PRIMARY_CAMERA]


# ------------------------------------------------------------------------------------------- decoding
def decode_json_body(body: bytes) -> tuple[dict[str, Any], bool]:
    """Parses a `POST /act` body; returns the observation map and whether it came double-encoded.

    The original's clients either send json-numpy directly or, without json_numpy installed, the JSON text
    of it under "encoded" (`{"encoded": "<json string>"}`); the answer is then double-encoded too.
    """
    payload = _json(body, "body")
    if isinstance(payload, dict) and set(payload) == {"encoded"}:
        if not isinstance(payload["encoded"], str):
            raise ProtocolError(422, "'encoded' must be a string holding the JSON of the request", "encoded")
        return _expect_map(_json(payload["encoded"], "encoded"), "body"), True
    return _expect_map(payload, "body"), False


def _json(raw: bytes | str, what: str) -> Any:
    try:
        return json_loads(raw)
    except WireFormatError as err:
        raise ProtocolError(400, f"{what}: {err}; send a JSON object with json-numpy arrays") from err


def parse_observations(observations: list[Any], max_instruction_chars: int) -> list[Request]:
    """`parse_observation` for each map of a message; errors of a batch name the observation's index."""
    requests = []
    for index, obs in enumerate(observations):
        try:
            requests.append(parse_observation(obs, max_instruction_chars))
        except ProtocolError as err:
            raise err.of_item(index if len(observations) > 1 else None) from err
    return requests


def decode_msgpack_message(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    """Parses a websocket message; returns the observation maps and whether a batch was sent.

    A message is one observation map, or `{"observations": [map, ...]}` for several at once.
    """
    try:
        message = unpack(data)
    except WireFormatError as err:
        raise ProtocolError(400, f"{err}; send msgpack maps (vlaforge.client.pack)") from err
    message = _expect_map(message, "message")
    if "observations" not in message:
        return [message], False
    if set(message) != {"observations"}:
        raise ProtocolError(422, "a batch message holds only 'observations': [observation, ...]", "observations")
    batch = message["observations"]
    if not isinstance(batch, list) or not batch:
        raise ProtocolError(422, "'observations' must be a non-empty list of observation maps", "observations")
    return [_expect_map(obs, f"observations[{i}]") for i, obs in enumerate(batch)], True


def _expect_map(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ProtocolError(422, f"{what} must be a map/object of observation fields, got {type(obj).__name__}")
    return obj


# ------------------------------------------------------------------------------------------- validation
def parse_observation(obs: dict[str, Any], max_instruction_chars: int) -> Request:
    """Checks the fields of one observation map (types, shapes, dtypes) and builds a `Request`.

    Model-specific checks (known cameras, statistics key, prompt length) are the policy's.
    """
    unknown = [key for key in obs if key not in OBSERVATION_FIELDS]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, OBSERVATION_FIELDS, 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProtocolError(422, f"unknown field {key!r}{hint}; fields are {', '.join(OBSERVATION_FIELDS)}", key)
    return Request(
        images=_parse_images(obs),
        instruction=_parse_instruction(obs.get("instruction"), max_instruction_chars),
        unnorm_key=_parse_unnorm_key(obs.get("unnorm_key")),
        state=_parse_state(obs.get("state")),
    )


def check_image(image: Any, name: str) -> np.ndarray:
    """A `[H, W, 3]` uint8 array, or a ProtocolError that says what the image is instead."""
    if not isinstance(image, np.ndarray):
        raise ProtocolError(
            422, f"{name} must be a uint8 [H, W, 3] array (json-numpy or msgpack-numpy), got {type(image).__name__}",
            name,
        )  # fmt: skip
    if image.dtype != np.uint8:
        raise ProtocolError(422, f"{name} must have dtype uint8 (0..255), got {image.dtype}", name)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ProtocolError(422, f"{name} must have shape [H, W, 3] (RGB), got {list(image.shape)}", name)
    return image


def _parse_images(obs: dict[str, Any]) -> dict[str, np.ndarray]:
    images = obs.get("images")
    if images is None:
        images = {}
    if not isinstance(images, dict) or not all(isinstance(k, str) for k in images):
        raise ProtocolError(422, "'images' must map camera names to [H, W, 3] uint8 arrays", "images")
    out = {name: check_image(img, f"images[{name!r}]") for name, img in images.items()}
    if obs.get("image") is not None:
        if PRIMARY_CAMERA in out:
            raise ProtocolError(422, f"give the primary camera once: 'image' or images[{PRIMARY_CAMERA!r}]", "image")
        out[PRIMARY_CAMERA] = check_image(obs["image"], "image")
    if PRIMARY_CAMERA not in out:
        raise ProtocolError(422, f"missing field 'image' (the primary camera, or images[{PRIMARY_CAMERA!r}])", "image")
    return out


def _parse_instruction(instruction: Any, max_chars: int) -> str:
    if instruction is None:
        raise ProtocolError(422, "missing field 'instruction' (what the robot should do)", "instruction")
    if not isinstance(instruction, str):
        raise ProtocolError(422, f"'instruction' must be a string, got {type(instruction).__name__}", "instruction")
    if not instruction.strip():
        raise ProtocolError(422, "'instruction' is empty; say what the robot should do", "instruction")
    if len(instruction) > max_chars:
        raise ProtocolError(
            422, f"'instruction' has {len(instruction)} characters; this server accepts at most {max_chars}",
            "instruction",
        )  # fmt: skip
    try:
        instruction.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ProtocolError(422, f"'instruction' is not valid unicode text: {err.reason}", "instruction") from err
    return instruction


def _parse_unnorm_key(key: Any) -> str | None:
    if key is None or isinstance(key, str):
        return key
    raise ProtocolError(422, f"'unnorm_key' must be a string or null, got {type(key).__name__}", "unnorm_key")


def _parse_state(state: Any) -> np.ndarray | None:
    if state is None:
        return None
    if isinstance(state, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in state):
        state = np.asarray(state, dtype=np.float64)  # plain JSON lists are fine for a short vector
    if not isinstance(state, np.ndarray) or state.dtype.kind not in "iuf" or state.ndim != 1 or state.size == 0:
        raise ProtocolError(422, "'state' must be a non-empty 1-D numeric array (proprioception)", "state")
    state = state.astype(np.float64)
    if not np.all(np.isfinite(state)):
        raise ProtocolError(422, "'state' contains NaN or inf", "state")
    return state


# ------------------------------------------------------------------------------------------- OpenAPI
NUMPY_ARRAY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A json-numpy array: base64 of the raw C-order bytes, its dtype and its shape.",
    "required": ["__numpy__", "dtype", "shape"],
    "properties": {
        "__numpy__": {"type": "string", "description": "base64 of the array's bytes"},
        "dtype": {"type": "string", "example": "|u1", "description": "numpy dtype string ('|u1' for images)"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "example": [224, 224, 3]},
    },
}

ACT_REQUEST_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "title": "Observation",
            "required": ["image", "instruction"],
            "properties": {
                "image": NUMPY_ARRAY_SCHEMA,
                "instruction": {"type": "string", "example": "put the eggplant in the bowl"},
                "unnorm_key": {"type": ["string", "null"], "description": "dataset statistics to unnormalize with"},
                "images": {"type": "object", "additionalProperties": NUMPY_ARRAY_SCHEMA},
                "state": NUMPY_ARRAY_SCHEMA,
            },
            "additionalProperties": False,
            "example": {  # a 2 x 2 black image
                "image": {"__numpy__": "AAAAAAAAAAAAAAAA", "dtype": "|u1", "shape": [2, 2, 3]},
                "instruction": "pick up the cup",
            },
        },
        {
            "type": "object",
            "title": "Encoded",
            "description": "The original's fallback: the observation's JSON text, double-encoded.",
            "required": ["encoded"],
            "properties": {"encoded": {"type": "string"}},
            "additionalProperties": False,
        },
    ]
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}, "field": {"type": "string"}},
}
