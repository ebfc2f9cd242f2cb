"""The local engine: a job in this process (1 worker), or in a pool of spawned worker processes;
long-lived workers (`run_workers`) in this process (1 worker) or one spawned process each.

spawn, not fork: MediaPipe, PyAV and torch start native threads that a forked child would inherit
half-dead. A bounded number of items is in flight (twice the workers) so that an interruption
loses little work. A worker process that dies takes the pool with it (WorkerDied is raised: on one
machine that is a machine problem, the kernel's out-of-memory killer say, not a file's).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from deepshield.cpus import usable_cpus
from deepshield.engines import INTERRUPTED_WORKERS, Engine, FileJob, Reorder, WorkerFn, call_job
from deepshield.errors import DeepShieldError, log_to_stderr, stop_as_on_ctrl_c
from deepshield.native_logs import quiet_process
from deepshield.plural import numbered

_WORKER: dict[str, Any] = {}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by torch / numpy when a worker process starts
_PARENT_CHECK_S = 1.0  # how often a worker looks whether its driver is still there


def exit_with_parent(parent: int) -> None:
    """In a worker process: end it once `parent`, the driver that started it, is gone. A driver killed with
    -9 cannot stop its workers, which would otherwise wait on their pipe for ever, holding their memory.
    The driver passes its own pid: a worker that read its parent itself, after its imports, read the
    process that adopted it when the driver had been killed meanwhile, and worked on for ever (a search
    ran all its trials; a dataset's crops were written after it had been stopped)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _pool_init(job: FileJob, parent: int, level: int) -> None:
    exit_with_parent(parent)
    job.worker_init()
    logging.getLogger().setLevel(level)  # the driver's (-v: INFO), which a spawned process does not inherit
    _WORKER["job"] = job
    _WORKER["state"] = job.setup()


def _pool_call(item: Any) -> Any:
    return call_job(_WORKER["job"], _WORKER["state"], item)


class WorkerDied(DeepShieldError):
    """A pool's worker process ended abruptly: killed (the kernel's out-of-memory killer) or crashed."""


def _print_line(line: str) -> None:
    print(line, flush=True)


def _worker_main(fn: WorkerFn, index: int, parent: int, level: int) -> None:
    """Entry point of a spawned long-lived worker: SIGTERM (sent on the driver's Ctrl-C) becomes a
    KeyboardInterrupt inside fn; its lines go to the inherited stdout, its log records to stderr as the
    driver's are, from the driver's level (with none set up, a trial's warnings were written bare by
    Python's last resort, a name's newline raw, and -v's per-epoch lines were lost)."""
    signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)
    exit_with_parent(parent)
    quiet_process()
    log_to_stderr(level)
    with contextlib.suppress(KeyboardInterrupt):
        fn(index, _print_line)


@contextlib.contextmanager
def _ctrl_c_left_to_this_process():
    """Processes started inside inherit Ctrl-C (SIGINT) ignored. A terminal sends it to the whole process
    group, and a worker still importing died with a traceback; this process alone answers it and stops
    its workers. Ignored here too for those few milliseconds (signals are only set on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_pool_workers(pool: ProcessPoolExecutor) -> None:
    """End a pool's workers now (they ignore Ctrl-C): the files in flight are dropped, not waited for.
    ProcessPoolExecutor has no public way to do it before Python 3.14."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class LocalEngine(Engine):
    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self._pools: dict[int, ProcessPoolExecutor] = {}  # each unfinished map's pool, by id: `close` ends them

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

    def _pool(self, job: FileJob, items: list, workers: int, ordered: bool) -> Iterator:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_pool_init,
            initargs=(job, os.getpid(), logging.getLogger().getEffectiveLevel()),
        )
        self._pools[id(pool)] = pool
        pending: dict[Future, int] = {}
        limit = 2 * workers
        order = Reorder(ordered, window=4 * limit)
        submitted = 0
        try:
            while order.emitted < len(items):
                while submitted < len(items) and len(pending) < limit and order.may_submit(submitted):
                    with _ctrl_c_left_to_this_process():  # a submit may start a worker
                        pending[pool.submit(_pool_call, items[submitted])] = submitted
                    submitted += 1
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    yield from order.add(index, future.result())
        except KeyboardInterrupt:
            _stop_pool_workers(pool)
            raise
        except BrokenProcessPool:  # was a traceback ending 'A process in the process pool was terminated abruptly'
            raise WorkerDied(
                "a worker process ended abruptly (killed, for want of memory say, or crashed) while on a file: "
                "fewer --workers take less memory"
            ) from None
        finally:
            self._pools.pop(id(pool), None)
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        # A map left unfinished (an interrupt raised in its consumer, evaluate scoring here, whose traceback holds
        # it) shut its pool down only when dropped, waiting for the files in flight: Ctrl-C waited on them.
        for pool in self._pools.values():
            _stop_pool_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()

    def worker_cpus(self, count: int) -> int:
        return max(1, usable_cpus() // max(1, count))

    def describe(self) -> str:
        return f"this machine, {numbered(usable_cpus(), 'CPU')}"

    def run_workers(
        self,
        fn: WorkerFn,
        count: int,
        echo: Callable[[str], None],
        *,
        cpus: int = 1,
        stagger_s: float = 1.0,
        grace_s: float = 120.0,
        on_interrupt: Callable[[], None] | None = None,
    ) -> list[int]:
        """One worker: fn(0, echo) in this process (a KeyboardInterrupt goes straight through). More:
        one spawned process each, `cpus` native threads each (OMP/MKL_NUM_THREADS); their lines are
        printed to the inherited stdout, not passed to `echo`."""
        if count <= 1:
            fn(0, echo)
            return []
        context = multiprocessing.get_context("spawn")
        processes: list = []
        try:
            with _environment({key: str(cpus) for key in THREAD_ENV}):  # a child reads its environment as it starts
                for index in range(count):
                    process = context.Process(
                        target=_worker_main,
                        args=(fn, index, os.getpid(), logging.getLogger().getEffectiveLevel()),
                        name=f"deepshield-worker-{index}",
                    )
                    with _ctrl_c_left_to_this_process():  # stopped by SIGTERM below, after this process's Ctrl-C
                        process.start()
                    processes.append(process)
                    if index < count - 1:
                        time.sleep(stagger_s)
            for process in processes:
                process.join()
        except KeyboardInterrupt:
            echo(INTERRUPTED_WORKERS)
            if on_interrupt is not None:
                on_interrupt()
            self._stop(processes, grace_s)
            raise
        failed = [index for index, process in enumerate(processes) if process.exitcode not in (0, None)]
        for index in failed:
            echo(f"warning: worker process {index} exited abnormally (exit code {processes[index].exitcode})")
        return failed

    @staticmethod
    def _stop(processes: list, grace_s: float) -> None:
        for process in processes:
            process.terminate()  # SIGTERM: a KeyboardInterrupt in the worker (see _worker_main)
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
