"""Ctrl-C during a training step waits for the step to finish, so that the checkpoint taken on the way
out holds a whole number of steps: weights, optimiser, scheduler, random state and step count agree,
and a resumed run goes on exactly as an uninterrupted one would. (Arriving mid-step, it could leave
weights updated by a step the count does not hold, or a random state advanced by half a step.)"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def whole_step() -> Iterator[None]:
    """Hold SIGINT until the block ends, then act on it as the handler in place would have."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt
