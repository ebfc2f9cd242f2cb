"""Admission control and bounded concurrency for synchronous analyses.

An analysis takes an admission slot (refused at once with 503 when `max_concurrency + max_queue`
analyses are already in), waits for one of `max_concurrency` run permits and runs in a worker
thread, off the event loop. Uploads are received before admission, so a slow upload never holds a
slot (they have their own bounds, see uploads.py). A request that times out answers 504 at once;
its analysis, if already started, finishes in the background still holding its slot and permit, so
neither bound is ever exceeded and `waiting` (admitted, not running) is never negative.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from deepshield.serving.errors import ApiError

T = TypeVar("T")


class AnalysisGate:
    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.admitted = 0  # analyses inside: waiting or running (abandoned ones included, until they end)
        self.running = 0
        self._permits: asyncio.Semaphore | None = None  # made on first use, inside the server's loop

    @property
    def capacity(self) -> int:
        return self.max_concurrency + self.max_queue

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def check_capacity(self) -> None:
        """Refuse (503) when no analysis could be admitted now: called before an upload is received."""
        if self.admitted >= self.capacity:
            raise ApiError(
                503,
                "busy",
                f"the server is busy (analyses running: {self.running}, waiting: {self.waiting}); retry in a few seconds",
                headers={"Retry-After": "2"},
            )

    def _semaphore(self) -> asyncio.Semaphore:
        if self._permits is None:
            self._permits = asyncio.Semaphore(self.max_concurrency)
        return self._permits

    async def _run(self, fn: Callable[[], T], started: asyncio.Event) -> T:
        async with self._semaphore():
            started.set()
            self.running += 1
            try:
                return await run_in_threadpool(fn)
            finally:
                self.running -= 1

    def _release(self, on_finish: Callable[[], None] | None) -> None:
        self.admitted -= 1
        if on_finish is not None:
            on_finish()

    async def run(self, fn: Callable[[], T], timeout_s: float, on_finish: Callable[[], None] | None = None) -> T:
        """Run fn in a thread under both bounds; `on_finish` runs when fn is over (even after a timeout) or refused."""
        try:
            self.check_capacity()
        except ApiError:
            if on_finish is not None:
                on_finish()
            raise
        self.admitted += 1
        started = asyncio.Event()
        task = asyncio.ensure_future(self._run(fn, started))
        task.add_done_callback(lambda _: self._release(on_finish))
        # Retrieve the outcome of an abandoned task so that asyncio does not log it as never retrieved.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            if not started.is_set():
                task.cancel()  # still queued: it will never run
            raise ApiError(
                504,
                "timeout",
                f"the analysis did not finish within {timeout_s:g} s (server busy or file too heavy); retry later",
            ) from None
        except asyncio.CancelledError:
            if not started.is_set():
                task.cancel()
            raise
