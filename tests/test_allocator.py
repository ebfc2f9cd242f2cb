"""The training process keeps freed memory: a large block freed and allocated again is not faulted in afresh."""

import subprocess
import sys

import pytest

REALLOCATE = """
import resource, sys
import numpy as np
from deepshield.training.allocator import keep_freed_memory
taken = keep_freed_memory() if sys.argv[1] == "keep" else None
block = np.ones(64 * 2**20, np.uint8)  # 64 MB: above glibc's largest mmap threshold
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(64 * 2**20, np.uint8)
print(taken, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", REALLOCATE, mode], capture_output=True, text=True, check=True)
    taken, faults = out.stdout.split()
    return taken, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_block_is_reused_without_page_faults():
    taken, kept = page_faults("keep")
    _, default = page_faults("default")
    assert taken == "True"
    # By default the block is mapped and zeroed again: at least one fault per 2 MiB (transparent huge
    # pages), up to one per 4 KiB page. Kept, the heap already holds it.
    assert default >= 32
    assert kept * 10 < default
