"""What a forked child does with native objects it inherited from its parent (a multiprocessing pool's
workers on Linux, a training data loader's): their libraries' threads were not copied, so using or
freeing them there waits for those threads for good. The child leaves them unfreed (their memory is the
parent's, copied)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any


def never_freed(value: object, incref: Any = ctypes.pythonapi.Py_IncRef, py_object: Any = ctypes.py_object) -> None:
    """Keep `value` alive for the rest of this process (a list would be freed as Python exits). The defaults
    are bound now: this also runs from __del__ and finalizers as Python exits, its modules torn down."""
    incref(py_object(value))


def kept_if_inherited(
    value: object, made_in: int, getpid: Callable[[], int] = os.getpid, keep: Callable[[object], None] = never_freed
) -> bool:
    """Whether `value`, made in process `made_in`, was inherited by this forked child, where it is then kept
    unfreed (never_freed) rather than closed or freed. The defaults are bound now, as never_freed's are."""
    if getpid() == made_in:
        return False
    keep(value)
    return True
