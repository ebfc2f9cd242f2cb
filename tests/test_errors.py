import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepshield.errors import EXIT_USAGE, DeepShieldError, exit_status
from deepshield.plural import numbered, plural

REPO = Path(__file__).resolve().parent.parent


def test_exit_status_turns_a_refusal_into_one_line_and_passes_statuses_through(capsys):
    def refuse() -> int:
        raise DeepShieldError("no such folder")

    assert exit_status(refuse, "bench_x") == EXIT_USAGE
    assert capsys.readouterr().err == "bench_x: error: no such folder\n"
    assert exit_status(lambda: 3, "bench_x") == 3
    assert exit_status(lambda: None, "bench_x") == 0


def test_a_bench_without_the_data_root_says_what_to_set_without_a_traceback(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "DEEPSHIELD_DATA_ROOT"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_tune.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_USAGE
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("bench_tune: error: the real-face folders real-faces not found")
    assert "DEEPSHIELD_DATA_ROOT" in done.stderr


def test_storage_that_fails_ends_the_command_in_one_line_naming_the_file(capsys):
    # A full disk while a checkpoint, a manifest or a bundle was written ended in a traceback.
    def write(error: int, filename: str | None) -> None:
        raise OSError(error, os.strerror(error), filename)

    assert exit_status(lambda: write(errno.ENOSPC, "run/checkpoints/last.pt"), "deepshield") == EXIT_USAGE
    assert capsys.readouterr().err == "deepshield: error: run/checkpoints/last.pt: No space left on device\n"
    assert exit_status(lambda: write(errno.EFBIG, None), "deepshield") == EXIT_USAGE  # a write names no file
    assert capsys.readouterr().err == "deepshield: error: File too large\n"
    with pytest.raises(FileNotFoundError):  # any other OSError is no storage failure: a fault, with its traceback
        exit_status(lambda: write(errno.ENOENT, "gone"), "deepshield")


# A newline, a carriage return, an ANSI clear-screen and an OSC 8 hyperlink, as a file's name may hold them.
HOSTILE_NAME = "evil\n\rdeepshield: all clear\x1b[2J\x1b]8;;http://x.test/\x07link\x1b]8;;\x07.jpg"


def test_a_name_in_a_line_on_stderr_is_written_on_that_line_with_its_control_characters_escaped(capsys):
    def refuse() -> int:
        raise DeepShieldError(f"{HOSTILE_NAME}: no such file or folder")

    assert exit_status(refuse, "deepshield") == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "\x1b" not in err and "\r" not in err and "\x07" not in err
    assert err == "deepshield: error: evil\\n\\rdeepshield: all clear\\x1b[2J" + (
        "\\x1b]8;;http://x.test/\\x07link\\x1b]8;;\\x07.jpg: no such file or folder\n"
    )


def test_a_warning_and_a_log_record_quoting_a_name_stay_one_line(capsys):
    import logging

    from deepshield.cli.main import main
    from deepshield.evaluation.scoring import _warn_stderr

    _warn_stderr(f"{HOSTILE_NAME} was skipped")
    assert main(["evaluate", str(Path(HOSTILE_NAME))]) == EXIT_USAGE  # a path not there: refused
    logging.getLogger("deepshield.test").warning("read %s", HOSTILE_NAME)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith("deepshield: warning: evil\\n\\rdeepshield: all clear\\x1b[2J")
    assert lines[1].startswith("deepshield: error: ") and "evil\\n\\r" in lines[1]
    assert lines[2].startswith("WARNING deepshield.test: read evil\\n\\r")
    assert "\x1b" not in err and "\r" not in err


def test_a_count_is_said_with_its_noun_in_the_singular_for_one_only():
    assert [numbered(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]
    assert [numbered(n, "person", "people") for n in (1, 3)] == ["1 person", "3 people"]
    assert [plural(n, "is", "are") for n in (1, 4)] == ["is", "are"]
    assert [f"{s:g} {plural(s, 'second')}" for s in (1.0, 0.5)] == ["1 second", "0.5 seconds"]
