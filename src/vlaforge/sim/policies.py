"""Policies the harness can evaluate: one small protocol, four adapters.

```
Policy.act(observations: list[Observation]) -> actions [B, A]  or a chunk per env [B, K, A]
```

The harness calls `act` once per step with the observations of every environment that is running, so a
neural policy sees one batch. Adapters:

| `--policy`            | class              | what it is                                                      |
|-----------------------|--------------------|-----------------------------------------------------------------|
| `expert`              | `ExpertPolicy`     | Meta-World's scripted experts (reads the privileged state)      |
| `random`              | `RandomPolicy`     | uniform actions in the action box (a floor, and a harness test) |
| a checkpoint dir      | `CheckpointPolicy` | `OpenVLA.from_pretrained(dir).predict_action` on the batch      |
| `http://` / `ws://`   | `RemotePolicy`     | a `vlaforge serve` policy server, through `vlaforge.client`     |

A checkpoint can be loaded quantized (`quant="int8"`, `vlaforge eval --quant int8`; the modes are in
`vlaforge.infer.quantize`). A server is quantized where it runs: `vlaforge serve CKPT --quant int8`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vlaforge.infer.quant_modes import QuantMode, check_mode
from vlaforge.sim.env import Observation
from vlaforge.sim.suites import Suite


@runtime_checkable
class Policy(Protocol):
    """Anything that maps a batch of observations to actions."""

    name: str  # a label for reports, e.g. "expert" or the checkpoint's directory name

    def act(self, observations: Sequence[Observation]) -> np.ndarray:
        """Actions for a batch of observations.

        Args:
            observations: B observations, one per running environment (different tasks may be mixed).

        Returns:
            `[B, A]` actions, or `[B, K, A]` action chunks (the harness executes the first action of each
            chunk; see `vlaforge.sim.rollout.actions_to_execute`).
        """
        ...

    def close(self) -> None:
        """Frees models, connections or other resources."""
        ...


class ExpertPolicy:
    """Meta-World's scripted expert of each observation's task (the reference that validates the harness)."""

    name = "expert"

    def __init__(self) -> None:
        from vlaforge.sim.metaworld import MetaWorldExpert

        self._expert = MetaWorldExpert()

    def act(self, observations: Sequence[Observation]) -> np.ndarray:
        actions = []
        for obs in observations:
            if obs.privileged is None:
                raise ValueError(f"the scripted expert needs the privileged state, which task '{obs.task}' lacks")
            actions.append(self._expert.action(obs.task, obs.privileged))
        return np.stack(actions)  # [B, 4]

    def close(self) -> None:
        pass


class RandomPolicy:
    """Uniformly random actions in `[low, high]`; seeded, so a run is reproducible.

    Args:
        low: `[A]` lower bounds.
        high: `[A]` upper bounds.
        seed: seed of the action RNG.
    """

    name = "random"

    def __init__(self, low: Sequence[float], high: Sequence[float], seed: int = 0) -> None:
        self._low = np.asarray(low, dtype=np.float32)
        self._high = np.asarray(high, dtype=np.float32)
        self._rng = np.random.default_rng(seed)

    def act(self, observations: Sequence[Observation]) -> np.ndarray:
        shape = (len(observations), self._low.size)  # [B, A]
        return self._rng.uniform(self._low, self._high, size=shape).astype(np.float32)

    def close(self) -> None:
        pass


class CheckpointPolicy:
    """An OpenVLA checkpoint directory, called with one batch per step.

    What the model is given follows its config: `num_images` cameras per sample (the observation's first
    cameras, in order, so render them in the order the model was trained with), the robot state when
    `proprio_dim > 0`, and it may return action chunks `[B, K, A]`.

    Args:
        path: a directory written by `OpenVLA.save_pretrained` (with tokenizer files).
        unnorm_key: which dataset statistics to unnormalize actions with (optional when there is one).
        camera: single-camera models: which camera's image they see (default: each observation's first).
        dtype: weight dtype, "float32" or "bfloat16" (with `quant`: of the layers that stay float).
        quant: quantization mode, one of `vlaforge.infer.quantize.QUANT_MODES`: "fp32" (the default)
            loads the checkpoint as it is; "bf16", "int8", "bnb-int8" or "nf4" load it with `load_quantized`.

    Raises:
        ValueError: for an unknown `quant` (before loading), a checkpoint without tokenizer files, or one
            that needs frame history.
    """

    def __init__(
        self,
        path: str | Path,
        unnorm_key: str | None = None,
        camera: str | None = None,
        dtype: str = "float32",
        quant: QuantMode = "fp32",
    ) -> None:
        check_mode(quant)  # a typo fails here, before torch and the weights are loaded
        import torch

        from vlaforge.infer.quantize import load_for_inference

        self.model = load_for_inference(path, quant, dtype=getattr(torch, dtype))
        self.quant = quant  # reported in the evaluation's header
        if self.model.processor is None:
            raise ValueError(f"checkpoint {path} has no tokenizer files; the policy needs them to build prompts")
        if getattr(self.model.config, "history", 1) > 1:
            raise ValueError(f"checkpoint {path} uses {self.model.config.history} frames of history, which the "
                             "evaluation harness does not keep yet")  # fmt: skip
        self.name = Path(path).name
        self.unnorm_key = unnorm_key
        self.camera = camera
        self.num_images = int(getattr(self.model.config, "num_images", 1))
        self.uses_state = int(getattr(self.model.config, "proprio_dim", 0)) > 0

    def _images(self, obs: Observation) -> np.ndarray | list[np.ndarray]:
        if self.num_images == 1:
            return obs.images[self.camera] if self.camera else obs.image
        if len(obs.images) < self.num_images:
            raise ValueError(f"the model takes {self.num_images} cameras but the environment renders "
                             f"{list(obs.images)}; pass more with --cameras")  # fmt: skip
        return list(obs.images.values())[: self.num_images]

    def act(self, observations: Sequence[Observation]) -> np.ndarray:
        images = [self._images(obs) for obs in observations]
        instructions = [obs.instruction for obs in observations]
        proprio = np.stack([obs.state for obs in observations]) if self.uses_state else None  # [B, S]
        actions = self.model.predict_action(images, instructions, proprio=proprio, unnorm_key=self.unnorm_key)
        return np.asarray(actions)  # [B, A] or [B, K, A]

    def close(self) -> None:
        del self.model


class RemotePolicy:
    """A policy server (`vlaforge serve`), reached through `vlaforge.client`.

    `ws://` / `wss://` addresses use the websocket client and send the whole batch in one message;
    `http://` / `https://` addresses use the REST client, one request per observation. The server's
    metadata says what its model takes: its cameras (filled from the observation's cameras in order) and
    the state size (the observation's state is sent when it is > 0).

    Args:
        url: the server address.
        token: bearer token, if the server needs one.
        unnorm_key: dataset statistics to unnormalize with.
        timeout: seconds to wait for each answer.
    """

    def __init__(self, url: str, token: str | None = None, unnorm_key: str | None = None, timeout: float = 60.0):
        try:
            from vlaforge.client import HTTPPolicyClient, WebsocketPolicyClient
        except ImportError as err:
            raise ImportError(
                f"evaluating a server policy needs vlaforge.client and its dependencies "
                f"(pip install 'vlaforge[serve]'): {err}"
            ) from err
        self.name = url
        self.unnorm_key = unnorm_key
        self._batched = url.startswith(("ws://", "wss://"))
        if self._batched:
            self._client: Any = WebsocketPolicyClient(url, token=token, timeout=timeout)
        else:
            self._client = HTTPPolicyClient(url, token=token, timeout=timeout)
        info = self._client.metadata()
        self.server_cameras: list[str] = list(info.get("cameras") or ["primary"])  # the first one is sent as "image"
        self.state_dim = int(info.get("state_dim") or 0)
        self.quant: str | None = info.get("quant")  # the server's quantization mode (None: not reported)

    def _message(self, obs: Observation) -> dict[str, Any]:
        if len(obs.images) < len(self.server_cameras):
            raise ValueError(f"the served model takes cameras {self.server_cameras} but the environment renders "
                             f"{list(obs.images)}; pass more with --cameras")  # fmt: skip
        frames = list(obs.images.values())
        message: dict[str, Any] = {"image": frames[0], "instruction": obs.instruction}
        if len(self.server_cameras) > 1:
            message["images"] = dict(zip(self.server_cameras[1:], frames[1:]))
        if self.state_dim:
            message["state"] = obs.state
        if self.unnorm_key is not None:
            message["unnorm_key"] = self.unnorm_key
        return message

    def act(self, observations: Sequence[Observation]) -> np.ndarray:
        messages = [self._message(obs) for obs in observations]
        if self._batched:
            return np.asarray(self._client.act_batch(messages))
        answers = [
            self._client.act(
                m["image"], m["instruction"], m.get("unnorm_key"), images=m.get("images"), state=m.get("state")
            )
            for m in messages
        ]
        return np.stack([np.asarray(a) for a in answers])  # [B, A] or [B, K, A]

    def metadata(self) -> dict[str, Any]:
        """The server's metadata (action dimension, chunk size, cameras, ...)."""
        return self._client.metadata()

    def close(self) -> None:
        self._client.close()


SERVER_SCHEMES = ("http://", "https://", "ws://", "wss://")  # a --policy starting with one is a server address
POLICY_FORMS = "'expert', 'random', a checkpoint directory, or a server address (http://host:port, ws://host:port)"


def load_policy(
    spec: str,
    suite: Suite,
    *,
    unnorm_key: str | None = None,
    token: str | None = None,
    seed: int = 0,
    quant: QuantMode = "fp32",
) -> Policy:
    """Builds the policy `spec` names (see the table in this module's docstring).

    Args:
        spec: "expert", "random", a checkpoint directory, or an http(s):// / ws(s):// server address.
        suite: the suite it will be evaluated on (the expert exists for Meta-World only; the random
            policy uses its action box).
        unnorm_key: for checkpoints and servers: which dataset statistics to unnormalize with.
        token: for servers: bearer token.
        seed: for the random policy.
        quant: for checkpoints: quantization mode (see `CheckpointPolicy`); other policies take "fp32" only.

    Raises:
        ValueError: for an unusable spec, with the accepted forms; for an unknown `quant`, or one other
            than "fp32" with a policy that is not a checkpoint.
    """
    check_mode(quant)
    is_server = spec.startswith(SERVER_SCHEMES)
    if quant != "fp32" and (is_server or spec in ("expert", "random")):
        hint = f"quantize on the server instead (vlaforge serve CKPT --quant {quant})" if is_server else "drop --quant"
        raise ValueError(f"--quant {quant}: quantization applies to checkpoint policies only, not to '{spec}'; {hint}")
    if spec == "expert":
        if suite.family != "metaworld":
            raise ValueError(f"--policy expert exists for Meta-World suites only; '{suite.name}' is {suite.family}")
        return ExpertPolicy()
    if spec == "random":
        return RandomPolicy(suite.action_low, suite.action_high, seed=seed)
    if is_server:
        return RemotePolicy(spec, token=token, unnorm_key=unnorm_key)
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{spec} is a directory but not a checkpoint (no config.json); --policy takes {POLICY_FORMS}"
            )
        return CheckpointPolicy(path, unnorm_key=unnorm_key, quant=quant)
    raise ValueError(f"--policy '{spec}' is not usable: it must be {POLICY_FORMS}")
