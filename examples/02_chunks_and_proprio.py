"""Beyond the original: a chunk of actions in one forward pass, with the robot state as an extra token.

    python examples/02_chunks_and_proprio.py

The model predicts K = 4 future 4-D actions with the L1 head, reading two cameras and the robot state; the
chunk is executed two actions at a time, as the evaluation harness does.
"""

import numpy as np

from vlaforge import OpenVLA, build_tokenizer, get_preset
from vlaforge.infer.chunking import ChunkExecution, ChunkExecutor

config = get_preset("tiny")
config.action_head, config.action_chunk, config.action_dim = "l1", 4, 4
config.proprio_dim, config.num_images = 4, 2
config.norm_stats = {"sim": {"action": {"q01": [-1.0] * 4, "q99": [1.0] * 4, "mask": [True, True, True, False]},
                             "proprio": {"q01": [-0.5, 0.3, 0.0, 0.0], "q99": [0.5, 0.9, 0.3, 1.0]}}}  # fmt: skip
config.validate()
model = OpenVLA.create(config, build_tokenizer(), seed=0)

rng = np.random.default_rng(0)
cameras = [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(2)]  # third-person + wrist
state = np.array([0.0, 0.6, 0.1, 1.0])  # hand xyz + gripper, in the robot's units
chunk = model.predict_action(cameras, "open the drawer", proprio=state)  # [K, A] in one pass
print("chunk:", chunk.shape)

executor = ChunkExecutor(ChunkExecution("open-loop", execute_steps=2), n_envs=1)
for step in range(4):
    if executor.needs_query():
        executor.push(0, model.predict_action(cameras, "open the drawer", proprio=state))
    print("step", step, "action", np.round(executor.pop(0), 3))
