"""Keep freed tensor memory in the process: glibc's malloc thresholds raised for tensor workloads.

By default glibc serves every allocation above 128 KiB with its own `mmap` and returns it with `munmap`
when freed (the threshold then adapts, but the heap top is still trimmed back to the OS past 2x that).
Inference allocates and frees tensors of the same few sizes thousands of times per second, so each new
tensor can start with a page fault per 4 KiB touched. On the VMs this project is measured on that cost
is large and erratic: the rotary embedding of a `[1, 8, 320, 64]` query took 100 us in some processes and
1.2 ms in others (always 100 us with the thresholds below), and batched decoding at the benchmark's `mid`
size ran 13 % faster with them (docs/results.md).

`tune_allocator` raises the mmap threshold to its maximum (32 MiB: larger blocks, such as weights, still
get their own mapping and go back to the OS when freed) and the trim threshold to 512 MiB, so freed
activations are reused instead of being unmapped. The price: up to 512 MiB of freed heap may stay
resident. The `vlaforge` command calls it at start; Python users call it once before inference. Set
`VLAFORGE_MALLOC=default` to keep glibc's behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 512 * 2**20  # freed heap kept before trimming


def tune_allocator() -> bool:
    """Raises glibc's mmap and trim thresholds for this process. Returns True when they were set.

    A no-op (False) off Linux, with another C library, or when `VLAFORGE_MALLOC=default`.
    """
    if os.environ.get("VLAFORGE_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):  # e.g. musl
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
