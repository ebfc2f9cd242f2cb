"""Keep freed memory in the training process instead of handing it back to the kernel.

A training step allocates and frees activations of tens of megabytes. glibc serves blocks that large
with fresh mmap()s and unmaps them when freed, so every step the kernel zeroes the same gigabytes
again: on this project's 2-core CPU that cost a third to more than half of a step (EfficientNet-Lite0,
batch 32: 6.6 -> 9.8 images/s at 224 px, 2.9 -> 6.8 at 288 px with the heap kept; bench/bench_train_throughput.py).
The process then holds its peak memory until it exits, which a training run reaches anyway. The
trainer takes the setting once its data is loaded: taken before, the face bank's loading copies (a few
gigabytes at 288 px) stayed in the never-trimmed heap, and a 288 px fine-tune was killed for memory
(23.6 GB resident on a 24 GB machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest value mallopt's int takes: bytes free at the heap's top before it shrinks


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never shrink it (glibc only; elsewhere a no-op).
    Returns whether the allocator took the settings."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators keep their own policy
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    taken = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    log.debug("allocator keeps freed memory: %s", taken)
    return taken
