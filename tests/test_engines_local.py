"""The local engine's long-lived workers (`run_workers`, what `tune --n-jobs` runs): one spawned
process each with its share of threads, failures reported by index, Ctrl-C passed on to every
worker as a KeyboardInterrupt; a single worker runs in this process."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from deepshield.engines import FileJob, make_engine
from deepshield.engines.local import WorkerDied
from tests.conftest import python_ctrl_c


def record_worker(folder: Path, index: int, emit) -> None:
    """Writes what it saw; worker 1 fails."""
    (folder / f"worker_{index}.txt").write_text(
        f"{os.getpid()} {os.environ.get('OMP_NUM_THREADS')} {os.environ.get('MKL_NUM_THREADS')}"
    )
    emit(f"worker {index} done")
    if index == 1:
        raise RuntimeError("worker 1 breaks")


def sleeping_worker(folder: Path, index: int, emit) -> None:
    """Sleeps until interrupted, then records that it was (as a trial records its checkpoint)."""
    (folder / f"started_{index}").touch()
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        (folder / f"interrupted_{index}").touch()
        raise


def test_workers_run_in_spawned_processes_with_their_thread_share(tmp_path, capfd):
    lines: list[str] = []
    with make_engine("local") as engine:
        failed = engine.run_workers(functools.partial(record_worker, tmp_path), 3, lines.append, cpus=2, stagger_s=0.1)
    assert failed == [1]
    seen = {int(p.stem.split("_")[1]): p.read_text().split() for p in tmp_path.glob("worker_*.txt")}
    assert sorted(seen) == [0, 1, 2]
    pids = {pid for pid, _, _ in seen.values()}
    assert len(pids) == 3 and str(os.getpid()) not in pids  # one process each, none of them this one
    assert all(threads == ["2", "2"] for _, *threads in seen.values())  # OMP / MKL threads: the `cpus` share
    assert lines == ["warning: worker process 1 exited abnormally (exit code 1)"]
    printed = capfd.readouterr().out
    assert all(f"worker {i} done" in printed for i in range(3))  # the workers' lines: on the inherited stdout


def test_one_worker_runs_here_and_its_errors_propagate(tmp_path):
    lines: list[str] = []
    with make_engine("local") as engine:
        assert engine.run_workers(functools.partial(record_worker, tmp_path), 1, lines.append) == []
        assert (tmp_path / "worker_0.txt").read_text().split()[0] == str(os.getpid())
        assert lines == ["worker 0 done"]  # in this process the lines go to echo
        with pytest.raises(RuntimeError, match="worker 1 breaks"):
            engine.run_workers(lambda index, emit: record_worker(tmp_path, 1, emit), 1, lines.append)


def test_ctrl_c_interrupts_every_worker_then_is_raised(tmp_path):
    def ctrl_c_once_both_started() -> None:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"started_{i}").exists() for i in range(2)) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C: interrupts the main thread's wait

    threading.Thread(target=ctrl_c_once_both_started, daemon=True).start()
    lines: list[str] = []
    before = dict(os.environ)
    told: list[str] = []
    with python_ctrl_c(), make_engine("local") as engine, pytest.raises(KeyboardInterrupt):
        engine.run_workers(
            functools.partial(sleeping_worker, tmp_path),
            2,
            lines.append,
            stagger_s=0.1,
            grace_s=30,
            on_interrupt=lambda: told.append("stop"),
        )
    assert told == ["stop"]  # the word to the workers that does not depend on the interrupt reaching them
    assert sorted(p.name for p in tmp_path.glob("interrupted_*")) == [
        "interrupted_0",
        "interrupted_1",
    ]  # each got its KeyboardInterrupt
    assert lines == ["interrupted: waiting for the workers to checkpoint their work ..."]
    assert dict(os.environ) == before  # the thread variables set for the children are restored


DRIVER = """
import sys, time
from pathlib import Path
from deepshield.engines import make_engine
from tests import test_engines_local
job = getattr(test_engines_local, sys.argv[2] if len(sys.argv) > 2 else "PidJob")
with make_engine("local", workers=2) as engine:
    for _ in engine.map(job(Path(sys.argv[1])), range(2)):
        pass
"""


class PidJob(FileJob):
    """Writes its worker's pid, then takes a minute: its driver is killed meanwhile."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def setup(self) -> None:
        return None

    def run(self, state, item) -> int:
        (self.folder / f"worker_{os.getpid()}").touch()
        time.sleep(60)
        return item

    def fail(self, item, reason: str) -> int:
        return -1


def test_workers_end_when_their_driver_is_killed(tmp_path):
    import subprocess
    import sys

    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)], cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("worker_*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(p.name.split("_")[1]) for p in tmp_path.glob("worker_*")]
    assert len(pids) == 2
    driver.kill()  # kill -9: no chance to stop its pool
    driver.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)  # they were waiting on their pipe for ever


class SlowStartJob(PidJob):
    """A job whose workers take 2 s to read it, as a worker's imports take seconds: its driver is killed
    before they are ready."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        (self.folder / f"starting_{os.getpid()}").touch()
        time.sleep(2)


def test_workers_end_when_their_driver_is_killed_while_they_start(tmp_path):
    # A worker read its parent's pid itself, after its imports: a driver killed meanwhile was gone, and the
    # worker watched the process that adopted it, for ever (a search ran all its trials alone).
    import subprocess
    import sys

    command = [sys.executable, "-c", DRIVER, str(tmp_path), "SlowStartJob"]
    driver = subprocess.Popen(command, cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("starting_*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p.name.split("_")[1]) for p in tmp_path.glob("starting_*")]
    assert len(pids) == 2
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)
    assert list(tmp_path.glob("worker_*")) == []  # none took an item after its driver was gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended: only its parent has not read its status
        return stat.read().split(") ")[1][0] != "Z"


class FirstQuickJob(PidJob):
    """Item 0 at once; the others write their worker's pid and take a minute."""

    def run(self, state, item) -> int:
        return item if item == 0 else super().run(state, item)


def test_closing_the_engine_ends_a_map_left_unfinished_at_once(tmp_path):
    # An interrupt raised in a map's consumer (evaluate scoring faces here) left the map held by its traceback:
    # its pool was shut down only when the map was dropped, waiting for the files in flight (a minute here).
    started = time.monotonic()
    with make_engine("local", workers=2) as engine:
        results = engine.map(FirstQuickJob(tmp_path), range(4))
        assert next(results) == 0
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("worker_*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    pids = [int(p.name.split("_")[1]) for p in tmp_path.glob("worker_*")]
    assert pids and not any(_alive(pid) for pid in pids)
    results.close()
    assert time.monotonic() - started < 40


class DyingJob(PidJob):
    """Item 1 ends its worker process, as the out-of-memory killer or a decoder's crash would."""

    def run(self, state, item) -> int:
        if item == 1:
            os._exit(137)
        return item


def test_a_pool_worker_that_dies_stops_the_map_in_one_line(tmp_path):
    # It was concurrent.futures' BrokenProcessPool, a traceback ending "A process in the process pool was
    # terminated abruptly while the future was running or pending".
    with (
        make_engine("local", workers=2) as engine,
        pytest.raises(WorkerDied, match=r"^a worker process ended abruptly"),
    ):
        list(engine.map(DyingJob(tmp_path), range(3)))


class CtrlCJob(PidJob):
    """Records its worker's pid and whether the worker ignores Ctrl-C, then takes a minute."""

    def run(self, state, item) -> int:
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        (self.folder / f"worker_{os.getpid()}_{'ignores' if ignored else 'takes'}").touch()
        time.sleep(60)
        return item


def test_ctrl_c_stops_a_pools_workers_at_once_and_they_never_see_it(tmp_path):
    def ctrl_c_once_both_work() -> None:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("worker_*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=ctrl_c_once_both_work, daemon=True).start()
    started = time.monotonic()
    with python_ctrl_c():
        with make_engine("local", workers=2) as engine, pytest.raises(KeyboardInterrupt):
            list(engine.map(CtrlCJob(tmp_path), range(4)))
        assert (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )  # the pool's swap, while starting workers, undone
    # A terminal's Ctrl-C reaches the whole process group: workers started ignoring it (one still
    # importing died with a traceback), and the driver ended them rather than wait a minute for their files.
    assert sorted(p.name.split("_")[2] for p in tmp_path.glob("worker_*")) == ["ignores", "ignores"]
    assert time.monotonic() - started < 40
    pids = [int(p.name.split("_")[1]) for p in tmp_path.glob("worker_*")]
    assert not any(_alive(pid) for pid in pids)


class WarningJob(FileJob):
    """Logs a warning naming its item, as scoring does of a file a perturbation failed on."""

    def setup(self) -> None:
        return None

    def run(self, state, item: str) -> str:
        import logging

        logging.getLogger("deepshield.evaluation.scoring").warning("%s under noise:20: failed", item)
        return item

    def fail(self, item, reason: str) -> str:
        return reason


def test_a_worker_process_logs_a_warning_as_the_command_does_on_one_line(capfd):
    # A spawned worker had no logging set up: Python's last resort wrote the record's bare message, with no level
    # or logger, and a file's name in it raw (its newline, an escape that cleared the terminal).
    name = "evil\n\x1b[2Jdeepshield: all clear.jpg"
    with make_engine("local", workers=2) as engine:
        assert list(engine.map(WarningJob(), [name] * 4)) == [name] * 4
    err = capfd.readouterr().err
    assert (
        err.splitlines()
        == ["WARNING deepshield.evaluation.scoring: evil\\n\\x1b[2Jdeepshield: all clear.jpg under noise:20: failed"]
        * 4
    ), err


def logging_worker(index: int, emit) -> None:
    """Logs as a trial's trainer does: its epochs (INFO, shown with -v) and a warning naming a file."""
    import logging

    trainer = logging.getLogger("deepshield.training.trainer")
    trainer.info("epoch 1 of worker %d", index)
    trainer.warning("worker %d read %s", index, "evil\nname.jpg")


class InfoJob(WarningJob):
    """Logs an INFO record of its item, as -v asks to be shown."""

    def run(self, state, item: str) -> str:
        import logging

        logging.getLogger("deepshield.evaluation.scoring").info("%s scored", item)
        return item


def test_spawned_workers_log_as_the_command_does_at_its_level(capfd):
    # tune --n-jobs 2's study workers had no logging: their warnings were written bare (a name's newline raw),
    # and with -v the trainer's per-epoch INFO lines were lost; pool workers (scan, prepare, evaluate
    # --workers) logged at WARNING whatever -v, prepare's with no logging at all.
    import logging

    from deepshield.errors import log_to_stderr

    log_to_stderr(logging.INFO)  # deepshield -v
    try:
        with make_engine("local") as engine:
            assert engine.run_workers(logging_worker, 2, print, stagger_s=0.1) == []
        with make_engine("local", workers=2) as engine:
            assert list(engine.map(InfoJob(), ["a.jpg", "b.jpg"])) == ["a.jpg", "b.jpg"]
    finally:
        log_to_stderr(logging.WARNING)
    said = capfd.readouterr().err.splitlines()
    for index in (0, 1):
        assert f"INFO deepshield.training.trainer: epoch 1 of worker {index}" in said, said
        assert f"WARNING deepshield.training.trainer: worker {index} read evil\\nname.jpg" in said, said
    assert {
        "INFO deepshield.evaluation.scoring: a.jpg scored",
        "INFO deepshield.evaluation.scoring: b.jpg scored",
    } <= set(said), said


def test_prepare_workers_set_up_their_logging():
    # ExtractJob.worker_init replaced the base one (native logs quietened) without its logging: what a prepare
    # worker logged was written bare by Python's last resort, at WARNING whatever -v.
    import logging

    from deepshield.data.extract import ExtractJob

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # as in a spawned process
    try:
        ExtractJob.__new__(ExtractJob).worker_init()
        assert root.handlers
    finally:
        root.handlers[:] = saved
