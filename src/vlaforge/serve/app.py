"""The FastAPI app: OpenVLA-compatible `POST /act`, a msgpack websocket, `/healthz`, `/metadata`.

    POST /act        {"image", "instruction", "unnorm_key"?} json-numpy -> the action, json-numpy encoded
                     (the original `deploy.py` protocol; `{"encoded": "<json>"}` gets a double-encoded answer)
    WS   /ws         first frame: metadata; then one answer frame per request frame (msgpack):
                     observation -> {"actions": [A], "timing"}; {"observations": [...]} -> {"actions": [B, A]}
    GET  /metadata   action dimension, chunk size, cameras, image size, statistics keys, server settings
    GET  /healthz    liveness and counters (no token needed)
    GET  /openapi.json, /docs

Every error is a 4xx/5xx with a JSON body `{"error": message, "status": code, "field"?}` (a websocket
error frame has the same map), never a 200.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect

from vlaforge.client import encode_json_array, json_dumps, pack
from vlaforge.serve.config import ServeConfig
from vlaforge.serve.policy import BatchPolicy
from vlaforge.serve.protocol import (
    ACT_REQUEST_SCHEMA,
    ERROR_SCHEMA,
    NUMPY_ARRAY_SCHEMA,
    ProtocolError,
    decode_json_body,
    decode_msgpack_message,
    error_body,
    parse_observation,
    parse_observations,
)
from vlaforge.serve.service import PolicyService

log = logging.getLogger("vlaforge.serve")

_ERROR_CONTENT = {"application/json": {"schema": ERROR_SCHEMA}}
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or malformed bearer token", "content": _ERROR_CONTENT},
    403: {"description": "wrong token", "content": _ERROR_CONTENT},
}
_ACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the action, json-numpy encoded: [A] float64 ([K, A] for chunked models); a JSON string "
        "holding that encoding when the request came as {'encoded': ...}",
        "content": {"application/json": {"schema": {"anyOf": [NUMPY_ARRAY_SCHEMA, {"type": "string"}]}}},
    },
    400: {"description": "the body is not JSON", "content": _ERROR_CONTENT},
    **_AUTH_RESPONSES,
    413: {"description": "the body is larger than the server's max_request_bytes", "content": _ERROR_CONTENT},
    422: {"description": "a field is missing, malformed or unknown to the model", "content": _ERROR_CONTENT},
    503: {"description": "the server is shutting down", "content": _ERROR_CONTENT},
}


def error_response(err: ProtocolError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for a refused request (401 also gets `WWW-Authenticate: Bearer`)."""
    headers = dict(headers or {})
    if err.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(err.status, str(err), err.field), status_code=err.status, headers=headers)


def create_app(policy: BatchPolicy, config: ServeConfig | None = None) -> FastAPI:
    """The policy server's ASGI app; run it with `vlaforge.serve.server.run` (or any ASGI server).

    Args:
        policy: the model adapter (`BatchPolicy.from_pretrained(checkpoint)`).
        config: batching, limits, auth and safety settings (defaults: `ServeConfig()`).
    """
    service = PolicyService(policy, config or ServeConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = FastAPI(
        title="vlaforge policy server",
        version="1",
        summary="OpenVLA-compatible REST (POST /act) and a msgpack websocket (/ws), with dynamic batching.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodySizeLimit, max_bytes=service.config.max_request_bytes, service=service)
    _add_error_handlers(app, service)
    _add_http_routes(app, service)
    _add_websocket_route(app, service)
    if service.config.token is not None:
        _declare_bearer_auth(app)
    return app


def _declare_bearer_auth(app: FastAPI) -> None:
    """Marks /act and /metadata as needing a bearer token in the (cached) OpenAPI description."""
    schema = app.openapi()
    schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path in ("/act", "/metadata"):
        for operation in schema["paths"][path].values():
            operation["security"] = [{"bearer": []}]


def _add_error_handlers(app: FastAPI, service: PolicyService) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404, 405, ...
        return error_response(service.refuse(ProtocolError(exc.status_code, str(exc.detail))), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(service.refuse(ProtocolError(422, f"invalid request: {exc.errors()}")))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # a bug: logged, still JSON
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(service.refuse(ProtocolError(500, f"internal error ({type(exc).__name__})")))


def _add_http_routes(app: FastAPI, service: PolicyService) -> None:
    @app.get("/healthz", summary="Liveness and counters")
    async def healthz() -> JSONResponse:
        """Liveness ("ok" or "draining") and counters; needs no token."""
        return JSONResponse(service.health())

    @app.get("/metadata", summary="What the server serves", responses=_AUTH_RESPONSES)
    async def metadata(request: Request) -> JSONResponse:
        """Action dimension, chunk size, cameras, image size, statistics keys, model name, server settings."""
        denied = service.authorize(request.headers.get("authorization"))
        if denied is not None:
            return error_response(service.refuse(denied))
        return JSONResponse(service.metadata())

    @app.post(
        "/act",
        summary="One action for one observation (the original OpenVLA protocol)",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": ACT_REQUEST_SCHEMA}}}
        },
        responses=_ACT_RESPONSES,
    )
    async def act(request: Request) -> JSONResponse:
        """The action for one observation: `{"image", "instruction", "unnorm_key"?}` with json-numpy arrays."""
        denied = service.authorize(request.headers.get("authorization"))
        if denied is not None:
            return error_response(service.refuse(denied))
        try:
            payload, double_encoded = decode_json_body(await request.body())
            parsed = parse_observation(payload, service.config.max_instruction_chars)
        except ProtocolError as err:
            return error_response(service.refuse(err))
        try:
            (action,), _ = await service.serve([parsed])
        except ProtocolError as err:  # already counted by the service
            return error_response(err)
        return JSONResponse(json_dumps(action) if double_encoded else encode_json_array(action))


def _add_websocket_route(app: FastAPI, service: PolicyService) -> None:
    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        """Metadata first, then one answer frame (actions or error) per msgpack request frame."""
        denied = service.authorize(ws.headers.get("authorization"))
        if denied is None and service.draining:
            denied = ProtocolError(503, "the server is shutting down; retry in a moment")
        if denied is not None:
            await _deny(ws, service.refuse(denied))
            return
        await ws.accept()
        try:
            await ws.send_bytes(pack(service.metadata()))
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                reply = await _answer(service, message.get("bytes"))
                await ws.send_bytes(pack(reply))
        except (WebSocketDisconnect, OSError):  # OSError: uvicorn's ClientDisconnected
            return  # the client left; its pending work was dropped or finished without it


async def _answer(service: PolicyService, data: bytes | None) -> dict[str, Any]:
    """The answer frame (actions or error) for one websocket message."""
    try:
        if data is None:
            raise ProtocolError(400, "send binary msgpack frames (vlaforge.client.pack), not text")
        if len(data) > service.config.max_request_bytes:
            raise ProtocolError(413, f"message of {len(data)} bytes exceeds {service.config.max_request_bytes}")
        observations, batched = decode_msgpack_message(data)
        if len(observations) > service.config.max_observations:
            message = f"{len(observations)} observations in one message; at most {service.config.max_observations}"
            raise ProtocolError(422, message, "observations")
        parsed = parse_observations(observations, service.config.max_instruction_chars)
    except ProtocolError as err:
        return error_body(service.refuse(err).status, str(err), err.field)
    try:
        actions, timings = await service.serve(parsed)
    except ProtocolError as err:
        return error_body(err.status, str(err), err.field)
    timing = {
        "batch_size": max(t.batch_size for t in timings),
        "queue_ms": round(max(t.queue_ms for t in timings), 3),
        "run_ms": round(max(t.run_ms for t in timings), 3),
    }
    return {"actions": np.stack(actions) if batched else actions[0], "timing": timing}


async def _deny(ws: WebSocket, err: ProtocolError) -> None:
    """Refuses a websocket handshake with an HTTP status and JSON body (or close code 1008 as fallback)."""
    try:
        await ws.send_denial_response(error_response(err))
    except RuntimeError:  # the ASGI server does not support denial responses
        await ws.close(code=1008, reason=str(err)[:120])


class BodySizeLimit:
    """ASGI middleware: refuses HTTP bodies over `max_bytes` with a 413 JSON answer, before parsing.

    It reads the whole body (declared by Content-Length or streamed in chunks) and hands it on in one piece.
    """

    def __init__(
        self, app: Callable[..., Awaitable[None]], max_bytes: int, service: PolicyService | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.service = service  # counts the refusals, when given

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send, size)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, send: Callable, size: int) -> None:
        err = ProtocolError(413, f"request body of {size} bytes exceeds this server's limit of {self.max_bytes} bytes")
        if self.service is not None:
            self.service.refuse(err)
        response = error_response(err)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def _replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict]]:
    """A `receive` that yields the buffered body once, then defers to the real one (disconnects)."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
