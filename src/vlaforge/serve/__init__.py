"""The policy server: OpenVLA-compatible REST, a msgpack websocket, dynamic batching, a safety layer.

Reading order: `protocol` (what travels on the wire) -> `policy` (the model adapter) -> `batching` (the
dynamic batcher) -> `safety` -> `service` (checks, batches, counts) -> `app` (FastAPI routes) -> `server`
(uvicorn with a graceful shutdown). The client lives in `vlaforge.client` (no torch).

    from vlaforge.serve import BatchPolicy, ServeConfig, create_app, run
    config = ServeConfig(max_batch_size=8, quant="int8")             # quant: "fp32" (default) loads as saved
    policy = BatchPolicy.from_pretrained("path/to/checkpoint", quant=config.quant)
    run(create_app(policy, config), config)

Imports are lazy, so `import vlaforge.serve` pulls in neither torch nor FastAPI.
"""

from __future__ import annotations

from vlaforge.utils.lazy import lazy_getattr

_EXPORTS = {
    "BatchPolicy": "vlaforge.serve.policy",
    "ServeConfig": "vlaforge.serve.config",
    "SafetyConfig": "vlaforge.serve.safety",
    "create_app": "vlaforge.serve.app",
    "run": "vlaforge.serve.server",
    "ServerThread": "vlaforge.serve.server",
    "ServerProcess": "vlaforge.serve.server",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
