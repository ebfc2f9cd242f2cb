"""The local engine: a job in this process (1 worker), or in a pool of spawned worker processes.

spawn, not fork: MediaPipe and PyAV start native threads that a forked child would inherit
half-dead. A bounded number of items is in flight (twice the workers) so that an interruption
loses little work. A worker process that dies takes the pool with it (BrokenProcessPool is raised:
on one machine that is a machine problem, not a file's).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from deepshield.engines import Engine, FileJob, Reorder, call_job

_WORKER: dict[str, Any] = {}


def _pool_init(job: FileJob) -> None:
    job.worker_init()
    _WORKER["job"] = job
    _WORKER["state"] = job.setup()


def _pool_call(item: Any) -> Any:
    return call_job(_WORKER["job"], _WORKER["state"], item)


class LocalEngine(Engine):
    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))

    def map(self, job: FileJob, items: Sequence, *, ordered: bool = True) -> Iterator:
        items = list(items)
        if not items:
            return
        workers = min(self.workers, len(items))
        if workers <= 1:
            state = job.setup()
            for item in items:
                yield call_job(job, state, item)
            return
        yield from self._pool(job, items, workers, ordered)

    @staticmethod
    def _pool(job: FileJob, items: list, workers: int, ordered: bool) -> Iterator:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_init, initargs=(job,))
        pending: dict[Future, int] = {}
        limit = 2 * workers
        order = Reorder(ordered, window=4 * limit)
        submitted = 0
        try:
            while order.emitted < len(items):
                while submitted < len(items) and len(pending) < limit and order.may_submit(submitted):
                    pending[pool.submit(_pool_call, items[submitted])] = submitted
                    submitted += 1
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    yield from order.add(index, future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
