"""The Ray engine: per-file work as Ray tasks, and long-running workers (the `tune` study workers)
as Ray tasks, on a local or remote Ray cluster.

Files: one Ray task per file (1 CPU each). Each Ray worker process builds the job's state (the
Detector, the FaceDetector) on its first task and keeps it for the following ones (Ray reuses its
worker processes), so a model is loaded once per worker process, not once per file. At most
`workers` tasks are in flight (default: twice the cluster's CPUs); results come back as they finish
and are yielded in input order. A task that raises, or whose worker process dies (after one
retry), becomes that file's error result; the other files carry on.

Paths travel as they are: on a multi-node cluster, the inputs, the model bundle and the dataset
folder must be on storage that every node mounts at the same path (see docs/ray.md).

This module imports ray; nothing else in deepshield imports it, and this module is imported only
when the ray engine is chosen.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from deepshield.engines import (
    INTERRUPTED_WORKERS,
    Engine,
    FileJob,
    Reorder,
    WorkerFn,
    WorkerSetupError,
    call_job,
    describe_error,
)
from deepshield.errors import DeepShieldError, stop_as_on_ctrl_c, storage_failed
from deepshield.native_logs import quiet_process
from deepshield.plural import numbered

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ImportError as exc:  # pragma: no cover - exercised only where ray is missing
    raise DeepShieldError("the ray engine needs Ray: pip install 'deepfake-shield[ray]' (ray==2.60.0)") from exc

log = logging.getLogger(__name__)

# ---- inside Ray worker processes ---------------------------------------------------------------

_STATE: dict[str, Any] = {}  # job key -> the job's per-worker state (only the latest job is kept)


class _SetupFailed:
    """Returned (not raised) by a task whose worker could not build the job's state."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _worker_state(job: FileJob, key: str) -> Any:
    if key not in _STATE:
        _STATE.clear()  # a new job: drop the previous one's model
        job.worker_init()
        _STATE[key] = job.setup()
    return _STATE[key]


def _run_file(job: FileJob, key: str, item: Any) -> Any:
    try:
        state = _worker_state(job, key)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the map
        return _SetupFailed(f"on {socket.gethostname()}: {describe_error(exc)}")
    return call_job(job, state, item)


def _run_worker(fn: WorkerFn, index: int, queue, cwd: str) -> None:
    """A long-running worker: fn(index, emit), its lines sent to the driver through `queue`. Runs in
    the driver's working directory when this node has it (a shared file system), so that relative
    paths in configurations mean the same thing. `ray.cancel` raises KeyboardInterrupt in it, as
    SIGTERM does in a local worker process."""
    quiet_process()
    # ray.cancel interrupts the task with SIGINT: a driver started in the background (SIGINT ignored,
    # inherited by raylet and its workers) would otherwise never see its trials cancelled.
    with contextlib.suppress(ValueError):  # not the main thread: the handler stays as it is
        signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = os.getcwd()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            fn(index, queue.put)
    finally:
        os.chdir(previous)


_run_file_task = ray.remote(_run_file)
_run_worker_task = ray.remote(_run_worker)


# ---- the driver --------------------------------------------------------------------------------


def job_key(job: FileJob) -> str:
    """Identifies the job's per-worker state: the same settings give the same key."""
    return hashlib.sha256(pickle.dumps(job)).hexdigest()[:20]


# An HTTP/2 client's opening (its preface and an empty SETTINGS frame): a gRPC server, as Ray's GCS and Ray
# Client server are, answers with a SETTINGS frame of its own.
_HTTP2_OPENING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_FRAME = 4


def check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast on a HOST:PORT that nothing answers on, or that answers but not as gRPC (a web server, a
    proxy): Ray itself retries either for minutes, printing its native log lines."""
    if not address or address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # let Ray judge the format
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as connection:
            connection.sendall(_HTTP2_OPENING)
            answer = b""
            while len(answer) < 9 and (chunk := connection.recv(9 - len(answer))):
                answer += chunk
    except TimeoutError:
        answer = b""
    except OSError as exc:
        raise DeepShieldError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from exc
    if len(answer) < 9 or answer[3] != _SETTINGS_FRAME:
        raise DeepShieldError(
            f"{address} answers, but not as a Ray cluster (no gRPC there): check the port "
            "(the head's GCS port, 6379 by default, or 10001 with ray://)"
        )


_TOKEN_NEEDED = (
    " (a cluster with token authentication, Ray's default, takes a driver given its address only with "
    "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token: see docs/ray.md)"
)


def joined_cluster() -> str:
    """The address of the cluster this machine joined with `ray start` (`--ray-address auto`). Ray's own
    "auto" joins any instance it finds running here when there is none: another command's or another
    user's private instance, with their CPUs, working folder and environment."""
    from ray._private.utils import read_ray_address  # where `ray start` leaves the address (ray==2.60.0)

    address = read_ray_address()
    if not address:
        raise DeepShieldError(
            "--ray-address auto: this machine joined no cluster with `ray start` (Ray would join any instance it "
            "finds running here, another command's or user's): run `ray start` first, give the head's address, "
            "or leave --ray-address out for a private instance"
        )
    return address


def _cancel_and_wait(refs: list, timeout_s: float) -> None:
    """Cancel the tasks of `refs` (a KeyboardInterrupt inside each, as Ctrl-C would be) and wait up to
    `timeout_s` for them to stop."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    if refs:
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s)


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return describe_error(exc.cause)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class RayEngine(Engine):
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        *,
        cpus_per_task: float = 1,
        max_retries: int = 1,
        init_kwargs: dict | None = None,
    ) -> None:
        """Connect (on first use) to the cluster at `address` (None: Ray's own default: $RAY_ADDRESS,
        else a cluster started on this machine with `ray start`, else a new private local instance),
        unless this process is already connected: then that connection is used and left open."""
        self.address = address
        self.workers = workers
        self.cpus_per_task = cpus_per_task
        self.max_retries = max_retries  # a task whose worker died is run once more (a lost node)
        # After an interruption, how long files already sent to workers may take to finish before the
        # ones still running are cancelled (then as long again for those to stop).
        self.drain_wait_s = 60.0
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False
        # Each unfinished map's tasks in flight, by id: `close` settles them while Ray is still there.
        self._in_flight: dict[int, dict[Any, int]] = {}

    def connect(self) -> RayEngine:
        if ray.is_initialized():
            return self
        asked = self.address or os.environ.get("RAY_ADDRESS")
        address = self.address
        if asked == "auto":
            address = joined_cluster()
            # Ray turns its token authentication on (the token `ray start` left in ~/.ray) for a cluster it finds
            # itself, never for an address it is given: the joined cluster's address refused this driver.
            from ray._private.authentication.authentication_token_setup import (  # (ray==2.60.0)
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        check_reachable(address)
        kwargs = {"address": address, "log_to_driver": False, "logging_level": logging.WARNING, **self.init_kwargs}
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            # The reason (InvalidAuthToken) was only in the native lines above, 20 of them.
            token = "" if os.environ.get("RAY_AUTH_MODE") else _TOKEN_NEEDED
            raise DeepShieldError(
                f"cannot connect to the Ray cluster at {self.address or '(default)'}: {exc}"
                + (token if isinstance(exc, ConnectionError) else "")
            ) from exc
        self._started = True
        if threading.current_thread() is threading.main_thread():
            # Ray's core worker installs a native SIGTERM handler that prints a stack dump and aborts, leaving
            # the instance's agents orphaned and a trial marked running: SIGTERM ends the command as Ctrl-C
            # does, through its clean-up (tune's own handler, where it set one).
            signal.signal(signal.SIGTERM, on_sigterm if callable(on_sigterm) else stop_as_on_ctrl_c)
        return self

    def close(self) -> None:
        # A map left unfinished (an interrupt raised in its consumer, whose traceback holds it) settled its
        # tasks when it was dropped, after Ray's shutdown: its first Ray call started a new local instance.
        try:
            for pending in self._in_flight.values():
                if pending and ray.is_initialized():
                    self._drain(list(pending))
                pending.clear()
        finally:  # a second Ctrl-C while they finish still stops the Ray this engine started
            if self._started and ray.is_initialized():
                ray.shutdown()
            self._started = False

    def cluster_cpus(self) -> int:
        self.connect()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def largest_node_cpus(self) -> int:
        self.connect()
        sizes = [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
        return max([1, *sizes])

    def node_count(self) -> int:
        self.connect()
        return sum(1 for node in ray.nodes() if node.get("Alive"))

    def worker_cpus(self, count: int) -> int:
        return max(1, min(self.cluster_cpus() // max(1, count), self.largest_node_cpus()))

    def describe(self) -> str:
        return f"Ray cluster, {numbered(self.node_count(), 'node')}, {numbered(self.cluster_cpus(), 'CPU')}"

    def in_flight_limit(self) -> int:
        return self.workers if self.workers else 2 * self.cluster_cpus()

    def map(self, job: FileJob, items: Sequence, *, ordered: bool = True) -> Iterator:
        items = list(items)
        if not items:
            return
        self.connect()
        limit = max(1, self.in_flight_limit())
        job_ref = ray.put(job)
        key = job_key(job)
        task = _run_file_task.options(num_cpus=self.cpus_per_task, max_retries=self.max_retries, name="deepshield-file")
        pending: dict[Any, int] = {}
        self._in_flight[id(pending)] = pending
        order = Reorder(ordered, window=4 * limit)
        submitted = 0
        try:
            while order.emitted < len(items):
                while submitted < len(items) and len(pending) < limit and order.may_submit(submitted):
                    pending[task.remote(job_ref, key, items[submitted])] = submitted
                    submitted += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayError as exc:  # the task raised past call_job, or its worker died twice
                        if isinstance(exc, RayTaskError) and storage_failed(exc.cause):
                            # As call_job on one machine: a full disk stops the map, in its own one line.
                            raise exc.cause from None
                        result = job.fail(items[index], failure_reason(exc))
                    if isinstance(result, _SetupFailed):
                        raise WorkerSetupError(f"worker setup failed {result.reason}")
                    yield from order.add(index, result)
        finally:
            self._in_flight.pop(id(pending), None)
            if pending:  # interrupted or failed: nothing new starts, and what runs is left to finish
                self._drain(list(pending))

    def _drain(self, refs: list) -> None:
        """Return once no task of `refs` is still writing (a re-run must not redo a file that a task is
        half-way through), as the local pool does on shutdown. The files already sent finish and are
        kept; only a task still running after `drain_wait_s` is cancelled (a KeyboardInterrupt inside
        it, as Ctrl-C would be). Cancelling at once would race Ray's own bookkeeping: a task that
        completes while its cancellation is handled aborts the driver (Ray 2.60, "Tried to complete
        task that was not pending"), which took down a test run here."""
        with contextlib.suppress(Exception):
            _, running = ray.wait(refs, num_returns=len(refs), timeout=self.drain_wait_s)
            _cancel_and_wait(running, self.drain_wait_s)

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
        """Ray tasks of `cpus` CPUs each; every line a worker emits is echoed here as it comes. On
        KeyboardInterrupt the tasks are cancelled (a KeyboardInterrupt inside each)."""
        from ray.util.queue import Empty, Queue

        self.connect()
        queue = Queue(actor_options={"num_cpus": 0})
        task = _run_worker_task.options(num_cpus=cpus, max_retries=0, name="deepshield-worker")
        cwd = os.getcwd()

        def drain() -> None:
            while True:
                try:
                    lines = queue.get_nowait_batch(max(1, queue.qsize()))
                except Empty:
                    return
                if not lines:
                    return
                for line in lines:
                    echo(line)

        refs: list = []
        try:
            for index in range(count):
                refs.append(task.remote(fn, index, queue, cwd))
                if index < count - 1:
                    time.sleep(stagger_s)
            pending = list(refs)
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
                drain()
            drain()
        except KeyboardInterrupt:
            echo(INTERRUPTED_WORKERS)
            if on_interrupt is not None:
                on_interrupt()
            _cancel_and_wait(refs, grace_s)
            with contextlib.suppress(Exception):
                drain()
            raise
        finally:
            with contextlib.suppress(Exception):
                queue.shutdown()
        failed = []
        for index, ref in enumerate(refs):
            try:
                ray.get(ref)
            except RayError as exc:
                echo(f"warning: Ray worker {index} ended with an error: {failure_reason(exc)}")
                failed.append(index)
        return failed
