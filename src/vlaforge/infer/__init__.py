"""Inference: the KV-cache decoding loop, chunk execution, and quantized models."""
