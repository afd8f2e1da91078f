"""Inference: decoding loops and (later) quantized models."""
