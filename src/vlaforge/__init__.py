"""vlaforge: an open, readable, weight-compatible reimplementation of OpenVLA that goes beyond it.

Public API (imports are lazy so that `import vlaforge` stays fast):
    OpenVLA, VLAConfig, get_preset, ActionTokenizer, VLAProcessor, build_tokenizer
"""

from __future__ import annotations

from vlaforge.utils.lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "OpenVLA": "vlaforge.model.vla",
    "VLAConfig": "vlaforge.config",
    "get_preset": "vlaforge.config",
    "ActionTokenizer": "vlaforge.actions.tokenizer",
    "VLAProcessor": "vlaforge.data.processor",
    "build_tokenizer": "vlaforge.data.tokenizer",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
