"""Data: prompts, tokenizers, image transforms and the processor (datasets come with the data issue)."""
