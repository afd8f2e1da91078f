"""The Meta-World adapter: observation contents, upright frames, reproducible seeds, clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vlaforge.sim.env import EnvSpec, choose_instruction, episode_seed, make_env
from vlaforge.sim.instructions import METAWORLD_INSTRUCTIONS, paraphrases
from vlaforge.sim.suites import MT10_TASKS, SUITES, get_suite, resolve_tasks

pytestmark = pytest.mark.sim


def test_observation_has_images_state_instruction():
    env = make_env(EnvSpec("metaworld", "reach-v3", cameras=("corner", "gripperPOV"), image_size=64))
    try:
        obs = env.reset(seed=3)
        assert list(obs.images) == ["corner", "gripperPOV"]
        for image in obs.images.values():
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
            assert image.std() > 5  # a rendered scene, not a blank buffer
        assert obs.image is obs.images["corner"]
        assert obs.state.shape == (4,) and obs.state.dtype == np.float32
        assert obs.instruction in METAWORLD_INSTRUCTIONS["reach-v3"]
        assert obs.task == "reach-v3" and obs.step == 0
        assert obs.privileged.shape == (39,)
        np.testing.assert_allclose(obs.state, obs.privileged[:4], rtol=1e-6)  # hand xyz + gripper
        result = env.step(np.array([1.0, 0.0, 0.0, 0.0]))
        assert result.observation.step == 1
        assert result.observation.state[0] > obs.state[0]  # +x action moved the hand along +x
        assert isinstance(result.success, bool)
    finally:
        env.close()


def _upright_projection(model, data, camera: str, point: np.ndarray, size: int) -> tuple[float, float]:
    """Pixel (row, col) of a world point in an upright, unmirrored pinhole image of `camera`.

    Upright: the image's up axis is the camera's y axis or its opposite, whichever points up in the world;
    unmirrored: x is flipped with it (a 180-degree turn, not a reflection).
    """
    import mujoco

    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    axes = data.cam_xmat[cam].reshape(3, 3)
    sign = 1.0 if axes[2, 1] >= 0 else -1.0
    right, up, back = sign * axes[:, 0], sign * axes[:, 1], axes[:, 2]
    offset = point - data.cam_xpos[cam]
    depth = -offset @ back
    focal = (size / 2) / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    return size / 2 - focal * (offset @ up) / depth - 0.5, size / 2 + focal * (offset @ right) / depth - 0.5


def test_frames_are_upright_and_not_mirrored():
    """The green goal marker appears where an upright pinhole camera would see it, in every camera.

    Meta-World's corner cameras are mounted upside down; a row flip alone would mirror the scene left-right,
    which the column check catches (the marker is far from the vertical centre line in the checked views).
    """
    import mujoco

    cameras = ("corner", "corner2", "corner3", "topview", "behindGripper")
    size = 128
    env = make_env(EnvSpec("metaworld", "push-v3", cameras=cameras, image_size=size))
    try:
        model, data = env._env.model, env._env.data
        goal = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
        mirrored_detectable = 0
        for seed in range(2):
            obs = env.reset(seed)
            for camera in cameras:
                image = obs.images[camera].astype(int)
                green = (image[..., 1] > 120) & (image[..., 0] < 90) & (image[..., 2] < 90)
                assert green.sum() >= 3, f"goal marker not visible in {camera}"
                rows, cols = np.nonzero(green)
                row, col = _upright_projection(model, data, camera, data.site_xpos[goal], size)
                assert abs(rows.mean() - row) < 1.5 and abs(cols.mean() - col) < 1.5, camera
                mirrored_detectable += abs((size - 1 - col) - col) > 6
        assert mirrored_detectable >= 6  # most views would expose a left-right mirror
    finally:
        env.close()


def test_same_seed_same_episode_and_other_seed_differs():
    spec = EnvSpec("metaworld", "push-v3", cameras=("corner",), image_size=48)
    first, second = make_env(spec), make_env(spec)
    try:
        actions = np.random.default_rng(0).uniform(-1, 1, size=(10, 4))

        def rollout(env, seed):
            obs = [env.reset(seed)]
            obs += [env.step(action).observation for action in actions]
            return obs

        a = rollout(first, 11)
        first.reset(99)  # the env's history must not matter
        b = rollout(first, 11)
        c = rollout(second, 11)  # nor which env instance runs it
        for x, y, z in zip(a, b, c):
            np.testing.assert_array_equal(x.image, y.image)
            np.testing.assert_array_equal(x.image, z.image)
            np.testing.assert_array_equal(x.privileged, z.privileged)
        assert a[0].instruction == c[0].instruction
        other = second.reset(12)
        assert not np.allclose(other.privileged[4:7], a[0].privileged[4:7])  # the puck starts elsewhere
    finally:
        first.close()
        second.close()


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match="drawer-close-v3") as info:
        make_env(EnvSpec("metaworld", "drawer-closed-v3"))
    assert "Valid tasks" in str(info.value) and "window-open-v3" in str(info.value)
    with pytest.raises(ValueError, match="Valid tasks"):
        resolve_tasks(get_suite("mt10"), ["reach-v3", "fly-to-the-moon"])
    with pytest.raises(ValueError, match="Valid suites: .*mt10"):
        get_suite("mt11")


def test_unknown_camera_and_bad_actions_raise():
    with pytest.raises(ValueError, match="valid cameras: .*corner"):
        make_env(EnvSpec("metaworld", "reach-v3", cameras=("ceiling",)))
    env = make_env(EnvSpec("metaworld", "reach-v3", image_size=16))
    try:
        env.reset(0)
        with pytest.raises(ValueError, match="4 finite"):
            env.step(np.zeros(7))
        with pytest.raises(ValueError, match="4 finite"):
            env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    finally:
        env.close()


def test_suites_match_metaworld_benchmarks():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ML45_V3, MT10_V3

    assert set(MT10_TASKS) == set(MT10_V3) and len(MT10_TASKS) == 10
    assert set(SUITES["mt50"].tasks) == set(ALL_V3_ENVIRONMENTS) and len(SUITES["mt50"].tasks) == 50
    assert set(SUITES["ml45-train"].tasks) == set(ML45_V3["train"]) and len(SUITES["ml45-train"].tasks) == 45
    assert set(SUITES["ml45-test"].tasks) == set(ML45_V3["test"]) and len(SUITES["ml45-test"].tasks) == 5
    assert set(SUITES["demo"].tasks) <= set(ALL_V3_ENVIRONMENTS)


def test_every_task_has_paraphrases_and_choice_depends_on_seed():
    for task in SUITES["mt50"].tasks:
        options = paraphrases(task)
        assert len(set(options)) >= 3 and all(o.strip() for o in options), task
    options = paraphrases("drawer-close-v3")
    chosen = {choose_instruction(options, seed) for seed in range(30)}
    assert len(chosen) >= 2  # varies across episodes
    assert choose_instruction(options, 5) == choose_instruction(options, 5)
    with pytest.raises(ValueError, match="drawer-close-v3"):
        paraphrases("drawer-clos-v3")


def test_episode_seeds_are_distinct_and_stable_across_processes():
    seeds = {episode_seed(s, t, e) for s in (0, 7) for t in ("drawer-close-v3", "drawer-open-v3") for e in range(20)}
    assert len(seeds) == 2 * 2 * 20
    code = "from vlaforge.sim.env import episode_seed; print(episode_seed(7, 'push-v3', 3))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(other.stdout) == episode_seed(7, "push-v3", 3)  # no per-process hash salt


def test_loading_a_torch_model_after_rendering_does_not_crash():
    """Regression: Triton (imported by transformers via torchao) segfaulted when loaded after Mesa's LLVM."""
    pytest.importorskip("triton")
    code = (
        "import torch\n"
        "from vlaforge.sim.env import EnvSpec, make_env\n"
        "env = make_env(EnvSpec('metaworld', 'reach-v3', ('corner',), 16)); env.reset(0); env.close()\n"
        "import triton\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
