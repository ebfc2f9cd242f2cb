"""The command line in scripts: standard output that cannot be written (closed with `>&-`, a full disk
as `> /dev/full`) ends a command with one line naming it and status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepshield.cli.main import EXIT_USAGE


def _photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (120, 90, 60)).save(path)
    return path


def _run_with_stdout(words: list[str], stdout: str) -> subprocess.CompletedProcess[str]:
    program = [sys.executable, "-m", "deepshield.cli.main", *words]
    if stdout == "closed":
        return subprocess.run(
            program,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.close(1),  # the child's own stdout, before exec
        )
    with open(stdout, "w") as target:
        return subprocess.run(program, stdout=target, stderr=subprocess.PIPE, text=True, timeout=120)


@pytest.mark.parametrize("stdout", ["closed", "/dev/full"])
@pytest.mark.parametrize("command", [["--version"], ["--help"], ["inspect", "PHOTO", "--json"]])
def test_standard_output_that_cannot_be_written_is_one_line_and_status_2(tmp_path, stdout, command):
    # `deepshield inspect a.jpg --json > /dev/full` ended in an OSError traceback with status 1, `>&-` in
    # an AttributeError's, and `--version > /dev/full` said nothing and exited 0, its text lost.
    if stdout != "closed" and not os.path.exists(stdout):
        pytest.skip("no /dev/full here")
    words = [str(_photo(tmp_path)) if word == "PHOTO" else word for word in command]
    ran = _run_with_stdout(words, stdout)
    why = "it is closed" if stdout == "closed" else "No space left on device"
    assert ran.returncode == EXIT_USAGE, ran.stderr
    assert ran.stderr == f"deepshield: error: cannot write standard output: {why}\n"


def test_a_list_of_files_from_a_closed_standard_input_is_refused_in_one_line():
    # `deepshield scan --files-from - <&-` ended in an AttributeError traceback with status 1.
    ran = subprocess.run(
        [sys.executable, "-m", "deepshield.cli.main", "scan", "--files-from", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(0),  # the child's own stdin, before exec
    )
    assert ran.returncode == EXIT_USAGE, ran.stderr
    assert ran.stderr == "deepshield: error: cannot read the list of files from standard input: it is closed\n"
