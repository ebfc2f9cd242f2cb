"""What `--help` says of each command and its options is what the command does, and options it would ignore
are refused or said."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from deepshield.cli.main import build_parser, main
from deepshield.errors import EXIT_USAGE


def options(parser: argparse.ArgumentParser, name: str = "deepshield") -> Iterator[tuple[str, argparse.Action]]:
    """Every option and positional of every (sub)command, with the command's words."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, command in action.choices.items():
                yield from options(command, f"{name} {word}")
        elif action.help != argparse.SUPPRESS:
            yield name, action


def test_every_option_with_a_default_says_it():
    # tune pruned trials by default (--pruner median) and synth, soup, facebank pack, prepare --faces and
    # dataset balance --workers chose values that their help left unsaid.
    unsaid = [
        f"{name} {'/'.join(action.option_strings) or action.dest} (default {action.default!r})"
        for name, action in options(build_parser())
        if action.nargs != 0  # a flag's default is its absence
        and action.default not in (None, [])
        and "default" not in (action.help or "")
    ]
    assert not unsaid, unsaid


def test_train_options_read_from_the_configuration_say_so():
    # --tracking-uri said 'default: sqlite:///mlruns.db' whatever the --config's tracking.uri
    helps = {
        a.option_strings[0]: a.help or ""
        for name, a in options(build_parser())
        if name == "deepshield train" and a.option_strings
    }
    assert "the configuration's tracking.uri" in helps["--tracking-uri"]
    assert "the configuration's run_dir" in helps["--run-dir"]


@pytest.mark.parametrize("command", [["train"], ["tune", "--space", "space.yaml"]])
def test_a_tracking_uri_with_no_tracking_is_refused(command, capsys):
    # Both were taken: the URI recorded, nothing logged to it, and no word of it.
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([*command, "--tracking-uri", "sqlite:///x.db", "--no-tracking"])
    assert stopped.value.code == EXIT_USAGE
    assert "argument --no-tracking: not allowed with argument --tracking-uri" in capsys.readouterr().err


def test_train_does_not_call_its_default_configuration_the_shipped_models():
    # It said '(default: the shipped model's)': default.toml trained 1.0.0, which two more steps made the
    # shipped model (a fine-tune and a synthetic-face head); `deepshield train` alone does not make it.
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    description = commands.choices["train"].description or ""
    assert "the shipped model's)" not in description
    assert "training/default.toml, which trained 1.0.0" in description


@pytest.mark.parametrize("command", ["evaluate", "calibrate"])
def test_entries_left_out_are_said_by_the_command_without_a_report_it_may_not_write(tmp_path, capsys, command):
    # 'deepshield: warning: 1 entries could not be used and are left out (listed in the report)', from
    # calibrate too (which writes no report), and here before a stop that writes none either.
    (tmp_path / "real").mkdir()
    (tmp_path / "stray.jpg").write_bytes(b"not looked at")
    out = ["--out", str(tmp_path / "out")]
    assert main([command, str(tmp_path), *out, "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"deepshield {command}: warning: 1 entry could not be used and is left out: " in err, err
    assert "report" not in err, err


@pytest.mark.parametrize("command", ["prepare", "evaluate", "calibrate"])
def test_ffpp_compression_without_a_faceforensics_source_is_refused(tmp_path, capsys, command):
    # Taken and ignored: folders of real/ and fake/ were read whole, as if it had not been given.
    (tmp_path / "set" / "real").mkdir(parents=True)
    words = [command, str(tmp_path / "set"), "--ffpp-compression", "c23", "--out", str(tmp_path / "out")]
    assert main(words) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--ffpp-compression applies to FaceForensics++ sources; none is one: " in err, err
    assert f"{tmp_path / 'set'} (folders)" in err and not (tmp_path / "out").exists()


def test_an_option_shared_by_commands_is_described_alike():
    # evaluate and calibrate said 'FaceForensics++ level(s) to read, e.g. c23', prepare the same plus its
    # default ('all found'), from two copies of the option.
    helps: dict[str, set[str]] = {}
    for _, action in options(build_parser()):
        if action.option_strings == ["--ffpp-compression"]:
            helps.setdefault("--ffpp-compression", set()).add(action.help or "")
    assert helps == {
        "--ffpp-compression": {"FaceForensics++ level to read, e.g. c23 (repeatable; default: every level found)"}
    }


def test_every_argument_is_described():
    # synth's out_dir and dataset stats/balance's DATASET_DIR were listed bare under 'positional arguments'.
    bare = [f"{name} {action.dest}" for name, action in options(build_parser()) if not action.help]
    assert not bare, bare


def test_export_says_its_calibration_follows_the_run_settings():
    # It said '(calibrated on its validation split)', where export.threshold_fpr and export.calibrate_on fit
    # the threshold and the temperature on the benchmarks' real media (as the shipped model's were).
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    description = commands.choices["export"].description or ""
    assert "export.threshold_fpr" in description and "export.calibrate_on" in description


def test_scan_of_a_folder_of_folders_without_r_says_why_nothing_was_found(tmp_path, capsys):
    # 'no media files found' of a folder of real/ and fake/ folders full of photos, without a word of -r.
    (tmp_path / "set" / "real").mkdir(parents=True)
    (tmp_path / "set" / "real" / "a.jpg").write_bytes(b"not read")
    (tmp_path / "flat").mkdir()
    assert main(["scan", str(tmp_path / "set")]) == 0
    said = capsys.readouterr().err
    assert (
        said
        == "deepshield scan: no media files found, nothing to scan (sub-folders are looked in with -r / --recursive)\n"
    )
    assert main(["scan", str(tmp_path / "flat")]) == 0  # nothing left unlooked at: no hint
    assert capsys.readouterr().err == "deepshield scan: no media files found, nothing to scan\n"


def test_scan_files_from_is_refused_in_one_plain_line(tmp_path, capsys):
    # '--files-from ""' was opened as a file named '' (the other paths refuse an empty one), and a list that
    # could not be read said "[Errno 2] No such file or directory: '.../no-list.txt'" after its name.
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["scan", "--files-from", ""])
    assert stopped.value.code == EXIT_USAGE
    assert "argument --files-from: an empty path names no file or folder" in capsys.readouterr().err
    missing = tmp_path / "no-list.txt"
    assert main(["scan", "--files-from", str(missing)]) == EXIT_USAGE
    assert (
        capsys.readouterr().err
        == f"deepshield: error: cannot read the list of files {missing}: No such file or directory\n"
    )


@pytest.mark.parametrize(
    "command", [["evaluate", "SET"], ["compare", "MODEL", "--on", "SET"], ["dataset", "stats", "SET"]]
)
def test_an_empty_experiment_is_refused_before_the_work(command, capsys):
    # evaluate --tracking-uri ... --experiment '' ran the whole evaluation and wrote its report, then stopped
    # with exit 2 on MLflow's "Invalid experiment name: ''" (check_store looks an experiment up, not its name).
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([*command, "--tracking-uri", "sqlite:///x.db", "--experiment", ""])
    assert stopped.value.code == EXIT_USAGE
    assert "argument --experiment: an MLflow experiment needs a name" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["soup", "a", "b", "--out", "s"], ["export", "best.pt", "--out", "b"]])
def test_an_empty_bundle_name_is_refused(command, capsys):
    # soup --name '' wrote a card named '' ('bundle written to s:  0.0.0'); export --name '' took the run's name.
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([*command, "--name", " "])
    assert stopped.value.code == EXIT_USAGE
    assert "argument --name: a bundle needs a name" in capsys.readouterr().err


def test_prepare_counts_one_of_each_as_one(tmp_path):
    from deepshield.data.prepare import PrepareSummary

    one = PrepareSummary(tmp_path, files=1, skipped=0, crops=1, errors=1, split_counts={"train": {"real": 1}})
    assert one.describe().startswith("1 file (0 already done), 1 face crop (train 1), 1 error, of which ")
    two = PrepareSummary(tmp_path, files=2, skipped=0, crops=0, errors=2)
    assert two.describe().startswith("2 files (0 already done), 0 face crops (), 2 errors, of which ")


@pytest.mark.parametrize(
    ("words", "dest", "expected"),
    [
        (["compare", "new", "--on", "a", "--on", "b"], "sets", ["a", "b"]),
        (
            ["compare", "new", "--on", "a", "--caught-with-reals", "0", "--caught-with-reals", "2"],
            "caught_with_reals",
            [0, 2],
        ),
        (["evaluate", "set", "--video-rule", "max", "--video-rule", "mean"], "video_rule", ["max", "mean"]),
        (["soup", "a", "b", "--out", "s", "--weights", "1", "--weights", "3"], "weights", [1.0, 3.0]),
    ],
)
def test_a_list_option_given_twice_keeps_both(words, dest, expected):
    # `compare new --on a --on b` compared on b alone: an option taking several values kept its last
    # occurrence, as --perturb (repeatable) did not.
    value = getattr(build_parser().parse_args(words), dest)
    assert [str(v) if dest == "sets" else v for v in value] == expected
    assert build_parser().parse_args(["compare", "new", "--on", "a"]).caught_with_reals == []  # the default kept


def test_serve_refuses_an_empty_host_as_a_usage_error(capsys):
    # "$HOST" unset: refused once the server started, as 'cannot serve on :8000: Name or service not known'.
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["serve", "--host", ""])
    assert stopped.value.code == EXIT_USAGE
    assert "argument --host: an empty address names no interface" in capsys.readouterr().err
