"""Fast offscreen MuJoCo rendering on a CPU: backend choice, cheap scene flags, upright frames.

Three things make MuJoCo rendering fast enough for evaluation on a 2-core machine (measured with
`vlaforge bench sim`; the numbers are in docs/simulation.md):

1. Our own `mujoco.Renderer` instead of the environment's `render()`: shadows and reflections off, and
   `model.vis.quality.offsamples = 0` (no multisample anti-aliasing). Together about 10x faster than the
   defaults on the llvmpipe software rasterizer, with no visible effect at 112-224 px.
2. A headless GL backend picked before MuJoCo is imported: EGL if it works, OSMesa otherwise. Both run on
   the CPU here at the same speed; EGL is tried first because it also uses a GPU when there is one.
3. One renderer per environment, reused for every camera and every step.

Upright frames: several Meta-World cameras (corner, corner2-4) are mounted upside down, i.e. their image
"up" axis points toward the floor. The upright view of such a camera is the frame rotated by 180 degrees
(both axes flipped). Flipping only the rows would give a mirror image of the scene, so we decide per camera,
from its pose, whether to rotate.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import mujoco

logger = logging.getLogger(__name__)

# Run in a fresh interpreter: MuJoCo reads MUJOCO_GL once, at import, so a failed backend cannot be swapped
# for another inside the same process.
_PROBE = "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()"


def _probe_backend(backend: str, timeout: float = 60.0) -> bool:
    """Whether MuJoCo can open a `backend` GL context, tested in a child interpreter."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend == "osmesa":
        env["PYOPENGL_PLATFORM"] = "osmesa"
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=timeout)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


def configure_gl() -> str:
    """Picks the headless GL backend for MuJoCo (EGL, else OSMesa) and exports it in `os.environ`.

    Must run before the first `import mujoco` of the process. An explicit `MUJOCO_GL` is respected. The choice
    is exported, so worker processes started afterwards inherit it without probing again.

    Returns:
        The backend name ("egl", "osmesa", or whatever `MUJOCO_GL` already said).

    Raises:
        RuntimeError: if neither backend works, with the packages to install.
    """
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        if chosen in ("egl", "osmesa"):  # PyOpenGL must agree with MuJoCo, even if OpenGL is imported first
            os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
        return chosen
    if "mujoco" in sys.modules:
        logger.warning(
            "mujoco was imported before vlaforge could pick a headless GL backend; it keeps its default (glfw, "
            "which needs a display). Set MUJOCO_GL=egl (or osmesa) in the environment, or import vlaforge.sim "
            "modules before mujoco."
        )
        return ""
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library) and _probe_backend(backend):
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            logger.info("MuJoCo offscreen rendering uses %s", backend)
            return backend
    raise RuntimeError(
        "no headless OpenGL backend works for MuJoCo. Install EGL or OSMesa "
        "(Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri libosmesa6), "
        "or set MUJOCO_GL yourself (egl, osmesa, glfw)."
    )


def _load_triton_before_mesa() -> None:
    """Imports Triton (if installed) before Mesa's software rasterizer is loaded into this process.

    Mesa's llvmpipe (behind both EGL and OSMesa here) and Triton each carry their own LLVM; loading Triton
    after Mesa segfaults (measured: `import triton` right after a MuJoCo render crashes, the other order
    works). Triton arrives with torch models (transformers imports torchao, which imports Triton), so in a
    process that has torch, we load Triton first. Worker processes that only render do not have torch.
    """
    if "torch" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def camera_is_upside_down(model: mujoco.MjModel, data: mujoco.MjData, camera: str) -> bool:
    """Whether `camera`'s image "up" axis points below the horizon (so its frames need a 180-degree turn).

    MuJoCo cameras look along their local -z axis with +y as image up; `data.cam_xmat` holds the world
    orientation of each camera as a row-major 3x3 matrix whose columns are the camera's x, y, z axes.
    """
    import mujoco

    camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    rotation = data.cam_xmat[camera_id].reshape(3, 3)  # [3, 3], columns = camera axes in world frame
    image_up = rotation[:, 1]  # [3]
    return bool(image_up[2] < 0.0)


class FastRenderer:
    """A `mujoco.Renderer` with shadows, reflections and multisampling off, returning upright RGB frames.

    Args:
        model: the MuJoCo model to render. Its `vis.quality.offsamples` is set to 0 (this is per model, so
            give each environment its own model, as Meta-World does).
        height: image height in pixels.
        width: image width in pixels.

    Call `close()` when done: it frees the GL context.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int) -> None:
        import mujoco

        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        # The offscreen buffer must be at least as large as the image.
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.quality.offsamples = 0  # no MSAA: must be set before the GL context is created
        _load_triton_before_mesa()
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except mujoco.FatalError as err:
            raise RuntimeError(
                f"MuJoCo could not create an offscreen GL context ({err}). Set MUJOCO_GL=egl or MUJOCO_GL=osmesa "
                "before mujoco is first imported (vlaforge.sim.render.configure_gl() does this when it runs first)."
            ) from err
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._model = model
        self._upside_down: dict[str, bool] = {}

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        """Renders `camera` for the current state in `data`.

        Returns:
            `[H, W, 3]` uint8, upright (world up is image up), a fresh array.
        """
        if self._renderer is None:
            raise RuntimeError("render() called after close()")
        if camera not in self._upside_down:  # decided once, from the first pose (tracking cameras move)
            self._upside_down[camera] = camera_is_upside_down(self._model, data, camera)
        self._renderer.update_scene(data, camera=camera)
        frame = self._renderer.render()  # [H, W, 3] uint8, as the camera sees it
        if self._upside_down[camera]:
            frame = frame[::-1, ::-1]  # [H, W, 3] rotated by 180 degrees
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        """Frees the GL context; safe to call twice."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
