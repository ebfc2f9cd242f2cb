"""Execution engines: where the per-file work of `scan`, `prepare`, `evaluate` and `calibrate` and the
study workers of `tune` run. One interface, two engines:

- ``local`` (:mod:`deepshield.engines.local`): this machine; in this process, or a pool of spawned
  worker processes;
- ``ray`` (:mod:`deepshield.engines.ray`): a Ray cluster, local or remote. ``ray`` is an optional
  extra (``pip install 'deepfake-shield[ray]'``) and is imported only when this engine is chosen.

The unit of work is a :class:`FileJob`: ``setup`` once per worker process (load the model),
``run`` once per file, ``fail`` to turn an exception (or a dead worker) into that file's error
result. ``Engine.map`` runs a job over a list of items with a bounded number in flight and yields
one result per item, in input order (or, with ``ordered=False``, as they finish); a failure of one
item never stops the others. ``Engine.run_workers`` runs a few long-lived workers instead (the study
workers of `tune`), each a callable ``fn(index, emit)`` that reports lines through ``emit``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from deepshield.errors import DeepShieldError, storage_failed

ENGINES = ("local", "ray")

S = TypeVar("S")  # per-worker state (a Detector, a FaceDetector)
T = TypeVar("T")  # an item (a path, a SourceItem)
R = TypeVar("R")  # a result (a ScanRow, a FileOutcome)
WorkerFn = Callable[[int, Callable[[str], None]], Any]  # fn(worker index, emit(line))
INTERRUPTED_WORKERS = "interrupted: waiting for the workers to checkpoint their work ..."


class FileJob(ABC, Generic[S, T, R]):
    """Per-file work. Instances travel to worker processes (pickled), so they hold only settings
    (paths, numbers); the heavy state is built by `setup` inside each worker and cached there."""

    def worker_init(self) -> None:
        """Called once in a separate worker process (pool process, Ray worker) before `setup`;
        not when the job runs in the calling process. Default: quiet native logs, and the worker's warnings
        logged as the command's are (a spawned process has no logging set up: Python's last resort wrote a
        record's bare message, a file's name with its newline raw, with no level or logger)."""
        import logging

        from deepshield.errors import log_to_stderr
        from deepshield.native_logs import quiet_process

        quiet_process()
        if not logging.getLogger().handlers:  # a Ray worker's are Ray's own
            log_to_stderr(logging.WARNING)

    @abstractmethod
    def setup(self) -> S:
        """Per-worker state, built once per worker process (an exception here is fatal to the map)."""

    @abstractmethod
    def run(self, state: S, item: T) -> R:
        """The result for one item. Should not raise; if it does, `fail` makes the item's result."""

    @abstractmethod
    def fail(self, item: T, reason: str) -> R:
        """The error result of an item whose `run` raised or whose worker died."""


class Reorder:
    """Turns out-of-order completions into results in input order (or passes them through when
    `ordered` is False), and tells how far submission may run ahead of the oldest unfinished item."""

    def __init__(self, ordered: bool, window: int) -> None:
        self.ordered = ordered
        self.window = window
        self.finished: dict[int, Any] = {}
        self.emitted = 0

    def may_submit(self, submitted: int) -> bool:
        # In order, a slow first item must not let finished results pile up without bound.
        return not self.ordered or submitted - self.emitted < self.window

    def add(self, index: int, result: Any) -> Iterator:
        if not self.ordered:
            self.emitted += 1
            yield result
            return
        self.finished[index] = result
        while self.emitted in self.finished:
            yield self.finished.pop(self.emitted)
            self.emitted += 1


class WorkerSetupError(DeepShieldError):
    """A job's `setup` failed in a worker (e.g. the model bundle is missing on a node)."""


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def call_job(job: FileJob, state: Any, item: Any) -> Any:
    """`job.run`, with any exception turned into the item's error result, but a full disk's (storage_failed),
    which stops the map: every file after it failed alike, each one's work done for nothing, and was counted
    a file that could not be read; the files done are kept, and a rerun goes on from them."""
    try:
        return job.run(state, item)
    except Exception as exc:
        if storage_failed(exc):
            raise
        return job.fail(item, describe_error(exc))


class Engine(ABC):
    name: str = ""

    @abstractmethod
    def map(self, job: FileJob[Any, T, R], items: Sequence[T], *, ordered: bool = True) -> Iterator[R]:
        """One result per item: in input order, or as they finish when `ordered` is False."""

    @abstractmethod
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
        """Run fn(index, emit) for index 0..count-1, each in its own worker, started `stagger_s` apart
        (fewer collisions on a shared store's first rows), `cpus` CPUs (and native threads) each. On
        KeyboardInterrupt `on_interrupt()` is called first (a word to the workers that does not depend on
        the interrupt reaching them), then every worker gets a KeyboardInterrupt inside fn (as Ctrl-C
        would) and `grace_s` to stop, then it is raised again. Returns the indices of the workers that ended
        abnormally (each one echoed as a warning)."""

    @abstractmethod
    def worker_cpus(self, count: int) -> int:
        """CPUs for each of `count` long-lived workers: the engine's CPUs split between them, at most
        one machine's worth (a worker runs on one machine)."""

    def node_count(self) -> int:
        """Machines the workers may run on."""
        return 1

    def describe(self) -> str:
        """Where the work runs, for the command's first lines."""
        return "this machine"

    def close(self) -> None:  # noqa: B027 - a no-op unless the engine started something
        """Release what the engine started (worker processes, a Ray instance it launched)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def ray_address(explicit: str | None) -> str | None:
    """--ray-address, else $RAY_ADDRESS, else None (Ray then joins a cluster started on this machine
    with `ray start`, or starts a private local instance)."""
    return explicit or os.environ.get("RAY_ADDRESS") or None


def make_engine(name: str, *, workers: int | None = None, address: str | None = None) -> Engine:
    """`local`: `workers` processes (None or 1: this process). `ray`: at most `workers` items in
    flight on the cluster (None: twice the cluster's CPUs), connecting to `address`."""
    if name == "local":
        from deepshield.engines.local import LocalEngine

        return LocalEngine(workers or 1)
    if name == "ray":
        from deepshield.engines.ray import RayEngine

        return RayEngine(address=ray_address(address), workers=workers)
    raise DeepShieldError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
