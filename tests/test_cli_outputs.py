"""Every command that writes its results at the end refuses, before any work, an output it could not
write: the work is not lost to a traceback at its end."""

from __future__ import annotations

import pytest

from deepshield.cli.main import EXIT_USAGE, main


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (["evaluate", "SET", "--out", "OUT"], "--out"),
        (["prepare", "SET", "--out", "OUT"], "--out"),
        (["calibrate", "SET", "--out", "OUT/bundle"], "--out's folder"),
        (["compare", "MODEL", "--on", "SET", "--out", "OUT"], "--out"),
        (["export", "MODEL", "--out", "OUT"], "--out"),
        (["facebank", "pack", "--out", "OUT.npz"], "--out"),
        (["train", "--set", "run_dir=OUT", "--set", "tracking.enabled=false"], "run_dir"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, command, flag):
    blocker = tmp_path / "a-file"  # a folder cannot be made under a file (as root, the one sure refusal)
    blocker.write_text("not a folder")
    target = blocker / "out"
    words = [
        w.replace("OUT", str(target)).replace("SET", str(tmp_path)).replace("MODEL", str(tmp_path)) for w in command
    ]
    assert main(words) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{flag} " in err and f"cannot be written: {blocker} is a file, not a folder" in err, err
    assert "Traceback" not in err
    assert blocker.read_text() == "not a folder"
