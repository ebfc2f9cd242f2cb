"""How many CPU cores this process may run on."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The cores this process may run on: a container's CPU-set limit (or taskset) leaves fewer than the
    machine has, which os.cpu_count() reports, and threads or workers beyond them only contend."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    if affinity is not None:
        return max(1, len(affinity(0)))
    return os.cpu_count() or 1
