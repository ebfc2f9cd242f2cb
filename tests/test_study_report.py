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
