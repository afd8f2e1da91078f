"""The LIBERO adapter, tested against a stand-in environment.

LIBERO cannot run on these machines (its scene assets are not downloadable here), so `FakeLibero` below
mimics the parts of LIBERO's `OffScreenRenderEnv` the adapter uses: `reset`, `set_init_state`, `step`
returning `(obs_dict, reward, done, info)` with LIBERO's observation keys, and `close`. The real backend is
only exercised where LIBERO and its assets are installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.sim.env import EnvSpec, make_env
from vlaforge.sim.libero import NOOP_ACTION, SETTLE_STEPS, LiberoEnv, LiberoTask, quat_to_axis_angle
from vlaforge.sim.suites import get_suite


class FakeLibero:
    """A stand-in for LIBERO's OffScreenRenderEnv: success once the summed x actions reach 1."""

    def __init__(self, task: LiberoTask, image_size: int) -> None:
        self.size = image_size
        self.actions: list[np.ndarray] = []
        self.init_state = None
        self.closed = False

    def _obs(self) -> dict[str, np.ndarray]:
        image = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        image[0, 0] = 255  # a marker in the top-left corner of LIBERO's (upside-down) frame
        return {
            "agentview_image": image,
            "robot0_eye_in_hand_image": image[:, :, ::-1].copy(),
            "robot0_eef_pos": np.array([0.1, 0.2, 0.3]) + float(self.init_state[0]),
            "robot0_eef_quat": np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)]),  # 90 deg about z
            "robot0_gripper_qpos": np.array([0.04, -0.04]),
        }

    def reset(self) -> None:
        self.actions = []

    def set_init_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        self.init_state = state
        return self._obs()

    def step(self, action: np.ndarray):
        self.actions.append(np.asarray(action))
        progress = sum(a[0] for a in self.actions)
        return self._obs(), float(progress), bool(progress >= 1.0), {}

    def close(self) -> None:
        self.closed = True


def _task_loader(suite: str, index: int) -> LiberoTask:
    init_states = np.arange(5, dtype=np.float64)[:, None] * np.ones((5, 3))  # [5 states, 3]
    return LiberoTask(f"{suite} task {index}: put the bowl on the plate", "unused.bddl", init_states)


def _env(**kwargs) -> LiberoEnv:
    return LiberoEnv("libero_spatial/3", task_loader=_task_loader, backend_factory=FakeLibero, **kwargs)


def test_libero_adapter_observations_and_steps():
    env = _env(cameras=("agentview", "wrist"), image_size=8)
    obs = env.reset(seed=7)  # init state 7 % 5 = 2
    backend = env._env
    assert len(backend.actions) == SETTLE_STEPS and all(np.array_equal(a, NOOP_ACTION) for a in backend.actions)
    assert obs.instruction == "libero_spatial task 3: put the bowl on the plate"
    assert obs.images["agentview"][-1, -1].tolist() == [255, 255, 255]  # rotated by 180 degrees
    assert obs.images["agentview"][0, 0].tolist() == [0, 0, 0]
    assert obs.state.shape == (8,) and obs.state[0] == pytest.approx(0.1 + 2.0)
    np.testing.assert_allclose(obs.state[3:6], [0.0, 0.0, np.pi / 2], atol=1e-6)
    first = env.step(np.array([0.6, 0, 0, 0, 0, 0, 1.0]))
    second = env.step(np.array([0.6, 0, 0, 0, 0, 0, 1.0]))
    assert not first.success and second.success and second.observation.step == 2
    with pytest.raises(ValueError, match="7 finite"):
        env.step(np.zeros(4))
    env.close()
    assert backend.closed


def test_libero_tasks_cameras_and_missing_install_are_explained():
    assert get_suite("libero_10").tasks[0] == "libero_10/0" and len(get_suite("libero_90").tasks) == 90
    with pytest.raises(ValueError, match="libero_spatial/0"):
        LiberoEnv("libero_spatial/10", task_loader=_task_loader, backend_factory=FakeLibero)
    with pytest.raises(ValueError, match="valid cameras: agentview, wrist"):
        _env(cameras=("corner",))
    try:
        import libero  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="vlaforge\\[libero\\]"):
            make_env(EnvSpec("libero", "libero_goal/0", ("agentview",), 64, 10))


def test_quat_to_axis_angle():
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0.0, 0.0, 0.0, 1.0])), np.zeros(3))
    half = np.pi / 3  # 120 degrees about x
    np.testing.assert_allclose(quat_to_axis_angle(np.array([np.sin(half), 0, 0, np.cos(half)])), [2 * half, 0, 0])
