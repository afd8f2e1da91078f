"""`ServeConfig`: everything `vlaforge serve` can be told, with safe defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlaforge.infer.quant_modes import QuantMode, check_mode
from vlaforge.serve.safety import SafetyConfig


@dataclass
class ServeConfig:
    """How the policy server loads its model, listens, batches, authenticates and limits requests."""

    # --- Model.
    quant: QuantMode = "fp32"  # quantization: fp32 (as saved), bf16, int8 (fastest on CPUs), bnb-int8, nf4

    # --- Network.
    host: str = "127.0.0.1"  # interface to bind; "0.0.0.0" exposes the server to the network (set a token!)
    port: int = 8000  # TCP port; 0 picks a free one (the chosen port is printed)
    token: str | None = None  # bearer token clients must send; None disables auth (CLI: $VLAFORGE_SERVE_TOKEN)

    # --- Batching.
    max_batch_size: int = 8  # most requests run as one batch; 1 serves them one at a time
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for more to arrive

    # --- Limits.
    max_request_bytes: int = 16 * 2**20  # larger HTTP bodies (413) and websocket messages (closed) are refused
    max_instruction_chars: int = 1000  # longer instructions are refused before tokenization (422)
    max_observations: int = 64  # most observations one websocket message may carry (422 beyond)
    shutdown_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests get to finish

    # --- Actions.
    safety: SafetyConfig = field(default_factory=SafetyConfig)  # clipping, scaling, workspace bounds

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the field and a valid range (or the valid quantization modes)."""
        check_mode(self.quant)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (1 = no batching), got {self.max_batch_size}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be at least 1024, got {self.max_request_bytes}")
        if self.max_observations < 1:
            raise ValueError(f"max_observations must be >= 1, got {self.max_observations}")
        if self.max_instruction_chars < 1:
            raise ValueError(f"max_instruction_chars must be >= 1, got {self.max_instruction_chars}")
        if self.token is not None and not self.token.strip():
            raise ValueError("token is empty; pass a real secret or leave it unset to disable auth")
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0, got {self.shutdown_timeout_s}")
        self.safety.validate()
