"""The recipe study's report (scripts/model_study.py): each factor is read against the baseline of its own
seed at the same budget."""

import pytest

from tests.script_support import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("model_study")


def _run(samples: int, bench_auc: float, **others: float) -> list[dict]:
    return [
        {"epoch": 0, "samples": samples // 2, "bench_auc": 0.5},
        {"epoch": 1, "samples": samples, "bench_auc": bench_auc, **others},
    ]


def test_each_factor_is_read_against_its_seeds_baseline_at_the_same_budget(study, tmp_path):
    histories = {
        "baseline": _run(21000, 0.60),
        "baseline-rerun": _run(21000, 0.55, bench_face_edits_file_auc=0.50),
        "baseline-seed1": _run(21000, 0.70),
        "crop-1.3": _run(21000, 0.66),  # trained beside the first baseline
        "seamless": _run(21000, 0.52, bench_face_edits_file_auc=0.53),  # beside the rerun
        "seamless-seed1": _run(21000, 0.75),
        "seamless-seed2": _run(21000, 0.80),  # no seed-2 baseline: left out
        "sbi-codec": _run(50000, 0.66),  # another budget: left out
    }
    effects = study.factor_effects(histories)
    assert set(effects) == {"crop-1.3", "seamless"}
    assert effects["crop-1.3"] == [(0, {"bench_auc": pytest.approx(0.06)})]
    (seed0, first), (seed1, second) = effects["seamless"]
    assert (seed0, seed1) == (0, 1)
    assert first == {"bench_auc": pytest.approx(-0.03), "bench_face_edits_file_auc": pytest.approx(0.03)}
    assert second == {"bench_auc": pytest.approx(0.05)}
    study.plot_factor_effects(histories, tmp_path / "effects.png")
    assert (tmp_path / "effects.png").stat().st_size > 10_000


def test_a_recipes_string_values_reach_train_as_the_strings_they_are(study, tmp_path):
    # Passed bare: a string setting's "null" was read as nothing, "2.0" as a number, "[1]" as a list.
    import argparse

    from deepshield.dotted import parse_assignment

    args = argparse.Namespace(out=tmp_path / "runs")
    recipe = {"export.name": "null", "export.version": "2.0", "data.group_pattern": "[1]", "optim.lr": 1e-3}
    sets = study.assignments("r", recipe, 1, args)
    assert dict(parse_assignment(item) for item in sets) == {
        "run_dir": str(tmp_path / "runs" / "r-seed1"),
        "tracking.run_name": "study-r-seed1",
        "seed": 1,
        **recipe,
    }


@pytest.mark.parametrize(
    "text, argv, said",
    [
        (None, [], r"--runs .*runs.yaml does not exist"),
        (b"a:\n  optim.lr: 0.1 \xe9\n", [], r"--runs .*runs.yaml is not UTF-8 text \(byte 0xe9 on line 2\)"),
        (
            "baseline: {}\nsam: {optim.optimizer: sam\n",
            [],
            r"--runs .*runs.yaml cannot be parsed: line \d+, column \d+: ",
        ),
        (
            "baseline: {}\nsam: {}\nsam: {seed: 1}\n",
            [],
            r"cannot be parsed: line 3, column 1: key 'sam' is given twice",
        ),
        ("baseline: {}\na: 5\n", [], r"--runs .*runs.yaml: recipe a: 5 is no mapping of training-config keys"),
        ("", ["--only", "x"], r"--runs .*runs.yaml holds no recipe x; it holds none"),
        ("- baseline\n", [], r"--runs .*runs.yaml must hold a mapping of keys, not list"),
        ("[]\n", [], r"--runs .*runs.yaml must hold a mapping of keys, not list"),  # read as no recipes
        ("false\n", [], r"--runs .*runs.yaml must hold a mapping of keys, not bool"),
    ],
)
def test_a_runs_file_or_entry_that_cannot_be_used_is_said_in_one_line(study, tmp_path, monkeypatch, text, argv, said):
    # Each was a traceback: FileNotFoundError, a YAML error spanning lines, TypeError, ...
    from deepshield.errors import DeepShieldError

    runs = tmp_path / "runs.yaml"
    if isinstance(text, bytes):
        runs.write_bytes(text)
    elif text is not None:
        runs.write_text(text)
    monkeypatch.setattr("sys.argv", ["model_study.py", "--runs", str(runs), "--out", str(tmp_path / "out"), *argv])
    with pytest.raises(DeepShieldError, match=said) as refused:
        study.main()
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()
