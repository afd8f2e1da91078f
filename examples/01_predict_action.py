"""Build the tiny OpenVLA, save it in the openvla-7b checkpoint format, load it back and predict actions.

    python examples/01_predict_action.py

The same calls work on the released openvla-7b directory (OpenVLA.from_pretrained("openvla-7b", ...)).
"""

import tempfile

import numpy as np

from vlaforge import OpenVLA, build_tokenizer, get_preset

config = get_preset("tiny")
config.norm_stats = {"my_robot": {"action": {"q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0],
                                             "mask": [True] * 6 + [False]}}}  # fmt: skip
model = OpenVLA.create(config, build_tokenizer(), seed=0)  # random weights: the action means nothing yet

with tempfile.TemporaryDirectory() as checkpoint:
    model.save_pretrained(checkpoint)  # config.json, model.safetensors, dataset_statistics.json, tokenizer
    model = OpenVLA.from_pretrained(checkpoint)

image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
action = model.predict_action(image, "put the eggplant in the bowl")  # one dataset: unnorm_key is optional
print("action:", np.round(action, 4))
batch = model.predict_action([image, image[::-1]], ["open the drawer", "close the drawer"])  # batched
print("batch of actions:", batch.shape)
