"""Constants shared across vlaforge. Token ids are never hard-coded here: they come from the tokenizer.

Every number below is a fact of the original OpenVLA recipe (see docs/design.md for the sources).
"""

# Label value that cross-entropy ignores: everything except the action tokens and the stop token.
IGNORE_INDEX = -100

# The instruction prompt of openvla-7b (PurePromptBuilder). `{instruction}` is lower-cased first.
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"

# Number of uniform bins per action dimension, spread over the normalized range [-1, 1].
N_ACTION_BINS = 256
ACTION_MIN, ACTION_MAX = -1.0, 1.0

# BOUNDS_Q99 normalization adds this to (q99 - q01) to avoid a division by zero, as the original does.
NORM_EPS = 1e-8

# File names of a checkpoint directory in the released openvla-7b Hugging Face layout.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
STATS_NAME = "dataset_statistics.json"
