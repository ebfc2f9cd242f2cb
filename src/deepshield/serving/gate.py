"""Admission control and bounded concurrency for synchronous analyses.

A request first takes an admission slot (refused at once with 503 when `max_concurrency +
max_queue` requests are already in), then uploads, then waits for one of `max_concurrency` run
permits and runs the analysis in a worker thread, off the event loop. A request that times out
answers 504 at once; its analysis, if already started, finishes in the background still holding
its permit, so the number of analyses running never exceeds the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from deepshield.serving.errors import ApiError

T = TypeVar("T")


class AnalysisGate:
    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.admitted = 0  # requests inside: uploading, waiting or running
        self.running = 0
        self._permits: asyncio.Semaphore | None = None  # made on first use, inside the server's loop

    @property
    def capacity(self) -> int:
        return self.max_concurrency + self.max_queue

    def _semaphore(self) -> asyncio.Semaphore:
        if self._permits is None:
            self._permits = asyncio.Semaphore(self.max_concurrency)
        return self._permits

    @contextlib.contextmanager
    def admit(self):
        if self.admitted >= self.capacity:
            raise ApiError(
                503,
                "busy",
                f"the server is busy ({self.running} analyses running, {self.admitted - self.running} waiting); retry in a few seconds",
                headers={"Retry-After": "2"},
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def _run(self, fn: Callable[[], T], started: asyncio.Event) -> T:
        async with self._semaphore():
            started.set()
            self.running += 1
            try:
                return await run_in_threadpool(fn)
            finally:
                self.running -= 1

    async def run(self, fn: Callable[[], T], timeout_s: float, on_finish: Callable[[], None] | None = None) -> T:
        """Run fn in a thread under the concurrency bound; `on_finish` runs when fn is over (even after a timeout)."""
        started = asyncio.Event()
        task = asyncio.ensure_future(self._run(fn, started))
        if on_finish is not None:
            task.add_done_callback(lambda _: on_finish())
        # Retrieve the outcome of an abandoned task so that asyncio does not log it as never retrieved.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            if not started.is_set():
                task.cancel()  # still queued: it will never run
            raise ApiError(504, "timeout", f"the analysis did not finish within {timeout_s:.0f} s (server busy or file too heavy); retry later") from None
        except asyncio.CancelledError:
            if not started.is_set():
                task.cancel()
            raise
