"""`deepshield compare` (deepshield.training.compare): bundles on the same labelled media, paired."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from deepshield.cli.main import main
from deepshield.evaluation.metrics import PairedDifference, detection_metrics
from deepshield.inference.analysis import Detector
from deepshield.training.compare import Comparison
from tests.face_data import write_benchmark


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    return write_benchmark(tmp_path_factory.mktemp("sets") / "Tiny Bench")


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory) -> Path:
    """Another randomly initialised tiny network: it ranks the set's faces otherwise (all four right, where
    the tiny bundle ranks all four wrong)."""
    import torch

    from deepshield.faces.crop import CropPolicy
    from deepshield.models.card import ModelCard
    from deepshield.models.export import export_bundle
    from deepshield.models.network import DeepfakeNet

    torch.manual_seed(6)
    net = DeepfakeNet("tiny", 64, pretrained=False).eval()
    card = ModelCard(
        name="tiny-other", version="0.0.2", architecture="tiny", input_size=64, crop_policy=CropPolicy(size=64)
    )
    return export_bundle(net, card, tmp_path_factory.mktemp("bundle") / "other")


def _file_auc(bundle: Path, labelled: Path) -> float:
    """The set's AUC as `deepshield scan` scores its files (one face each), for an independent check."""
    detector = Detector.from_bundle(bundle)
    files = sorted((labelled / "real").iterdir()) + sorted((labelled / "fake").iterdir())
    scores = [detector.analyze_image(path, heatmaps=False).verdict.probability for path in files]
    return detection_metrics([0] * 2 + [1] * 2, scores).auc


def test_a_candidate_is_compared_with_the_baseline_on_the_same_files(
    capsys, tiny_bundle, other_bundle, labelled, tmp_path
):
    out, plot = tmp_path / "comparison.json", tmp_path / "comparison.png"
    cache = tmp_path / "cache"
    pair = ["compare", str(other_bundle), "--against", str(tiny_bundle), "--on", str(labelled), "--fail-unless-ahead"]
    code = main(
        [
            *pair,
            "--cache-dir",
            str(cache),
            "--out",
            str(out),
            "--plot",
            str(plot),
            "--caught-with-reals",
            "0",
            "1",
            "2",
            "5",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text  # ahead: the gate passes
    (report,) = json.loads(out.read_text())
    base_auc, cand_auc = _file_auc(tiny_bundle, labelled), _file_auc(other_bundle, labelled)
    # the same faces as scan finds, scored by each bundle: its AUC as scan's probabilities give it
    assert report["baseline"]["bench_tiny_bench_file_auc"] == pytest.approx(base_auc)
    assert report["candidate"]["bench_tiny_bench_file_auc"] == pytest.approx(cand_auc)
    difference = report["candidate_minus_baseline"]["bench_tiny_bench_face_auc"]
    assert difference["difference"] == pytest.approx(cand_auc - base_auc)
    assert difference["low"] <= difference["difference"] <= difference["high"]
    assert (base_auc, cand_auc) == (0.0, 1.0)
    assert report["candidate_minus_baseline"]["bench_auc"]["low"] > 0
    assert report["standing"] == "ahead" and "AHEAD: the pooled difference's interval lies above zero" in text
    assert f"tiny-other 0.0.2 ({other_bundle}) against tiny-test 0.0.1 ({tiny_bundle})" in text
    # the thresholds the rates are at, said (they were in neither the output nor --out)
    assert "thresholds (a score at or above one is flagged): baseline 0.5000; candidate 0.5000" in text
    assert report["baseline"]["threshold"] == report["candidate"]["threshold"] == 0.5
    assert re.search(r"^tiny_bench +faces +0\.000 +1\.000 +\+1\.000 \[", text, re.MULTILINE)
    assert "tiny_bench with at most 1 of 2 real files flagged: fakes caught (of 2) baseline " in text
    # K at or above the set's reals: said, not left out without a word
    assert (
        "tiny_bench with at most 2 or 5 of 2 real files flagged: every real file may be, and every fake caught by "
        "both: nothing to compare"
    ) in text
    # "ahead" on two files a class: said, with how little that resampling can show
    assert "tiny_bench: only 2 real and 2 fake files: a bootstrap over so few files understates" in text
    assert plot.stat().st_size > 0 and list(cache.glob("benchmark-tiny_bench-*.npz"))  # faces found once, kept


def test_a_comparison_is_logged_to_mlflow(capsys, tiny_bundle, other_bundle, labelled, tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{mlflow_store(tmp_path / 'mlruns.db')}"
    pair = ["compare", str(other_bundle), "--against", str(tiny_bundle), "--on", str(labelled)]
    out = tmp_path / "comparison.json"
    assert main([*pair, "--cache-dir", str(tmp_path / "c"), "--out", str(out), "--tracking-uri", uri]) == 0
    assert "logged to MLflow run " in capsys.readouterr().out
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("deepshield-compare").experiment_id])
    (report,) = json.loads(out.read_text())
    assert run.data.metrics["minus.bench_auc"] == pytest.approx(
        report["candidate_minus_baseline"]["bench_auc"]["difference"]
    )
    assert (
        run.data.metrics["candidate.bench_tiny_bench_file_auc"] == 1.0 and run.data.metrics["baseline.bench_auc"] == 0.0
    )
    assert run.data.tags["deepshield.standing"] == "ahead" and run.data.tags["deepshield.command"] == "compare"
    assert run.data.params["candidate"] == str(other_bundle)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["comparison.json"]


def test_the_same_network_recalibrated_ties_and_fails_the_gate(capsys, tiny_bundle, labelled, tmp_path):
    recalibrated = Path(shutil.copytree(tiny_bundle, tmp_path / "recalibrated"))
    card = json.loads((recalibrated / "model_card.json").read_text())
    card["calibration"]["temperature"] = 3.0  # the same ranking, other probabilities
    (recalibrated / "model_card.json").write_text(json.dumps(card))
    pair = ["compare", str(recalibrated), "--against", str(tiny_bundle), "--on", str(labelled)]
    code = main([*pair, "--cache-dir", str(tmp_path / "cache"), "--fail-unless-ahead"])
    text = capsys.readouterr().out
    assert code == 1  # not ahead: the gate fails
    assert "all sets (bench_auc)  faces  " in text and "+0.000 [+0.000, +0.000]" in text
    assert "+0.000 [+0.000, +0.000]  0% of resamples, equal in 100%" in text  # was "0% of resamples": never ahead
    assert text.rstrip().endswith(
        "TIED: the pooled difference's interval includes zero, so these sets cannot tell them apart"
    )


def test_files_without_a_face_are_said_to_be_left_out_of_a_sets_figures(capsys, tiny_bundle, labelled, tmp_path):
    """A fake whose face is not found is missed in use, yet the rates ("of fakes caught") and the counts
    ("fakes caught (of 2)") are over the files with a face: the files left out were said nowhere."""
    import cv2
    import numpy as np

    with_blank = Path(shutil.copytree(labelled, tmp_path / "Tiny Bench"))
    cv2.imwrite(str(with_blank / "fake" / "blank.png"), np.full((200, 200, 3), 120, np.uint8))
    pair = ["compare", str(tiny_bundle), "--against", str(tiny_bundle), "--caught-with-reals", "0"]
    main([*pair, "--on", str(with_blank), "--cache-dir", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert "tiny_bench with at most 0 of 2 real files flagged: fakes caught (of 2)" in text
    assert (
        "tiny_bench: 5 files: 4 with faces, 1 without a face, 0 missing (listed but not on disk), 0 not readable; "
        "its figures are on the files with faces"
    ) in text
    main([*pair, "--on", str(labelled), "--cache-dir", str(tmp_path / "cache")])
    assert "its figures are on the files with faces" not in capsys.readouterr().out  # nothing left out: unsaid


def test_a_set_of_reals_alone_gets_no_caution_about_an_interval_it_does_not_have(
    capsys, tiny_bundle, labelled, tmp_path
):
    reals = tmp_path / "Reals"
    shutil.copytree(labelled / "real", reals / "real")
    pair = ["compare", str(tiny_bundle), "--against", str(tiny_bundle), "--cache-dir", str(tmp_path / "cache")]
    main([*pair, "--on", str(labelled), str(reals)])
    text = capsys.readouterr().out
    assert "tiny_bench: only 2 real and 2 fake files: a bootstrap over so few files understates" in text
    assert re.search(r"^reals +faces +- +- +- +-$", text, re.MULTILINE)  # no AUC, no interval...
    assert "reals: only" not in text  # ...and so no word of one (it read "only 2 real and 0 fake files: a bootstrap")


def test_two_sets_of_one_name_are_refused(capsys, tiny_bundle, labelled, tmp_path):
    twin = write_benchmark(tmp_path / "elsewhere" / "Tiny Bench")
    code = main(["compare", str(tiny_bundle), "--on", str(labelled), str(twin), "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    assert "two labelled sets are both named tiny_bench: give each its own folder name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("low", "high", "standing"),
    # an interval the bootstrap could not give (NaN) read "behind"
    [
        (0.01, 0.2, "ahead"),
        (-0.2, -0.01, "behind"),
        (-0.05, 0.1, "tied"),
        (0.0, 0.1, "tied"),
        (float("nan"), 0.1, "tied"),
    ],
)
def test_only_an_interval_clear_of_zero_puts_a_candidate_ahead_or_behind(low, high, standing):
    pooled = PairedDifference(
        difference=(low + high) / 2, low=low, high=high, share_b_ahead=0.5, resamples=9, confidence=0.95
    )
    comparison = Comparison(None, None, {"bench_auc": pooled}, [], [])  # type: ignore[arg-type]
    assert comparison.standing == standing
    assert Comparison(None, None, {}, [], []).standing == "tied"  # type: ignore[arg-type]


def test_a_bundle_trained_on_a_sets_files_is_said_to_be_so(
    capsys, tiny_bundle, other_bundle, labelled, tmp_path, monkeypatch
):
    # a candidate trained (or its epoch chosen) on a comparison set was compared as if the set were held out
    import shutil

    trained = Path(shutil.copytree(other_bundle, tmp_path / "trained"))
    card = json.loads((trained / "model_card.json").read_text())
    card["training"]["data"] = [labelled.name]
    (trained / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(labelled.parent))
    args = ["compare", str(trained), "--against", str(tiny_bundle), "--on", str(labelled), "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert (
        f"warning: tiny-other 0.0.2 was trained on files of tiny_bench ({labelled.name}): its figures there are not held out"
        in err
    )
    assert "tiny-test" not in err


def test_a_model_trained_on_a_prepared_dataset_is_said_to_be_so_wherever_its_files_are_scored(
    capsys, tiny_bundle, other_bundle, labelled, tmp_path
):
    # The card's "prepared dataset <folder>" matched no scored file (they name the media the crops were cut
    # from): evaluate and calibrate on its train split, compare on it, and the raw set it came from, said nothing.
    prepared = tmp_path / "prep"
    assert main(["prepare", str(labelled), "--out", str(prepared), "--split", "0.5,0,0.5", "--crop-size", "64"]) == 0
    trained = Path(shutil.copytree(other_bundle, tmp_path / "trained"))
    card = json.loads((trained / "model_card.json").read_text())
    card["training"]["data"] = [f"prepared dataset {prepared}"]
    (trained / "model_card.json").write_text(json.dumps(card))
    said = f"training data (prepared dataset {prepared})"
    runs = {
        "evaluate train": ["evaluate", str(prepared), "--split", "train", "--model", str(trained)],
        "evaluate raw": ["evaluate", str(labelled), "--model", str(trained)],
        "calibrate train": ["calibrate", str(prepared), "--split", "train", "--model", str(trained)],
    }
    for what, args in runs.items():
        capsys.readouterr()
        assert main([*args, "--out", str(tmp_path / what.replace(" ", "-")), "--no-progress"]) == 0, what
        assert f"warning: the set holds files of the model's own {said}" in capsys.readouterr().err, what
    compare = ["compare", str(trained), "--against", str(tiny_bundle), "--cache-dir", str(tmp_path / "c")]
    assert main([*compare, "--on", str(prepared), "--split", "train"]) == 0
    assert f"tiny-other 0.0.2 was trained on files of prep (prepared dataset {prepared})" in capsys.readouterr().err
    # Its test split was never trained on.
    assert (
        main(["evaluate", str(prepared), "--split", "test", "--model", str(trained), "--out", str(tmp_path / "t")]) == 0
    )
    assert "own training data" not in capsys.readouterr().err
    # Gone, it cannot be checked: said so, not passed over in silence.
    shutil.rmtree(prepared)
    assert main([*runs["evaluate raw"], "--out", str(tmp_path / "gone"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"could not be checked: prepared dataset {prepared} not found" in err and "own training data (" not in err


def test_a_prepared_set_is_compared_on_the_split_asked_for(capsys, tiny_bundle, other_bundle, labelled, tmp_path):
    """compare had no --split: a prepared dataset's train split was always in the figures; and --frames or
    --min-face-size, which its faces were found without, were taken silently."""
    prepared = tmp_path / "prep"
    assert main(["prepare", str(labelled), "--out", str(prepared), "--split", "0.5,0,0.5", "--crop-size", "64"]) == 0
    capsys.readouterr()
    test_files = {
        row.split(",")[6] for row in (prepared / "manifest.csv").read_text().splitlines()[1:] if ",test," in row
    }
    assert len(test_files) == 2  # one real, one fake
    base = ["compare", str(other_bundle), "--against", str(tiny_bundle), "--cache-dir", str(tmp_path / "c")]
    counts = {}
    for split in ("all", "test"):
        out = tmp_path / f"{split}.json"
        assert main([*base, "--on", str(prepared), "--split", split, "--out", str(out)]) == 0
        (figures,) = json.loads(out.read_text())  # one comparison: one candidate
        counts[split] = figures["baseline"]["bench_prep_real_files"] + figures["baseline"]["bench_prep_fake_files"]
    assert counts == {"all": 4, "test": 2}
    # beside a raw set, whose files are all compared (it has no split)
    assert main([*base, "--on", str(prepared), str(labelled), "--split", "test"]) == 0
    assert main([*base, "--on", str(prepared), "--frames", "8"]) == 2
    assert "--frames and --min-face-size apply to raw media" in capsys.readouterr().err
    assert main([*base, "--on", str(labelled), "--split", "test"]) == 2
    assert "--split applies to prepared datasets" in capsys.readouterr().err


def test_a_mistyped_candidate_is_refused_before_any_face_is_found(capsys, tiny_bundle, labelled, tmp_path):
    cache = tmp_path / "c"
    code = main(
        [
            "compare",
            str(tmp_path / "typo"),
            "--against",
            str(tiny_bundle),
            "--on",
            str(labelled),
            "--cache-dir",
            str(cache),
        ]
    )
    assert code == 2 and "typo" in capsys.readouterr().err
    assert not list(cache.glob("benchmark-*"))  # the baseline's faces were found and scored first


def test_a_real_file_either_score_flags_is_counted_flagged_as_scan_flags_it(capsys, tiny_bundle, labelled, tmp_path):
    """Counted by the face-swap score alone, a real file the synthetic-face score flagged read as not flagged,
    while scan flags it (and `deepshield model` shows that score's column)."""
    import torch

    from deepshield.faces.crop import CropPolicy
    from deepshield.models.card import Calibration, InconclusiveBand, ModelCard, SyntheticScoreInfo, card_outputs
    from deepshield.models.export import export_bundle
    from deepshield.models.network import DeepfakeNet

    torch.manual_seed(0)
    net = DeepfakeNet("tiny", 64, pretrained=False, synthetic_center=1 / 1.5).eval()
    never = Calibration(threshold=1.0, inconclusive=InconclusiveBand(low=0.9, high=1.0, fitted_on="test"))
    always = Calibration(threshold=0.0, inconclusive=InconclusiveBand(low=0.0, high=0.0, fitted_on="test"))
    card = ModelCard(
        name="two-scores", version="1", architecture="tiny", input_size=64, crop_policy=CropPolicy(size=64),
        outputs=card_outputs(True), calibration=never, synthetic=SyntheticScoreInfo(pooling="centre", calibration=always),
    )  # fmt: skip
    bundle = export_bundle(net, card, tmp_path / "two-scores")
    real = sorted((labelled / "real").iterdir())[0]
    assert Detector.from_bundle(bundle).analyze_image(real, heatmaps=False).verdict.label == "likely_manipulated"
    out = tmp_path / "comparison.json"
    args = ["compare", str(bundle), "--against", str(tiny_bundle), "--on", str(labelled), "--out", str(out)]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    (report,) = json.loads(out.read_text())
    candidate = report["candidate"]
    assert candidate["bench_tiny_bench_fpr_either"] == candidate["bench_fpr_either"] == 1.0
    assert candidate["synthetic_bench_tiny_bench_fpr"] == 1.0
    assert candidate["bench_tiny_bench_fpr"] == 0.0  # the face-swap score's own, as training and the card name it
    assert "candidate 100.0% of real files flagged by either score (100.0% by the synthetic-face score)" in text
    # And its fakes caught as the product catches them: by the face-swap score alone, those the synthetic-face
    # score caught read as missed, its false alarms counted and not its catches.
    assert candidate["bench_tiny_bench_tpr_either"] == 1.0 and candidate["bench_tiny_bench_tpr"] == 0.0
    assert "fakes caught by either score (0.0% by the face-swap score)" in text


def test_a_tracking_store_that_cannot_be_used_is_refused_before_the_scoring(
    capsys, tiny_bundle, other_bundle, labelled, tmp_path
):
    out = tmp_path / "comparison.json"
    pair = ["compare", str(other_bundle), "--against", str(tiny_bundle), "--on", str(labelled)]
    code = main([*pair, "--cache-dir", str(tmp_path / "c"), "--out", str(out), "--tracking-uri", "garbage://x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "the MLflow store garbage://x cannot be used" in err and "--no-tracking" not in err
    assert err.rstrip().endswith("give another --tracking-uri, or leave it out (nothing is logged to MLflow then)")
    assert not out.exists() and not (tmp_path / "c").exists()


def test_out_that_may_be_written_in_a_folder_that_may_not_gets_the_comparison(
    capsys, tiny_bundle, other_bundle, labelled, tmp_path, monkeypatch
):
    # Written whole through a temporary file beside it, a comparison.json the user may write in a folder they
    # may not was refused once the scoring was done (a traceback: PermissionError).
    import deepshield.data.layout as layout

    def refused(path: Path, *args, **kwargs) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(layout, "atomic_write_text", refused)  # as the folder refuses its temporary file
    out = tmp_path / "comparison.json"
    out.write_text("[]\n")
    pair = ["compare", str(other_bundle), "--against", str(tiny_bundle), "--on", str(labelled)]
    assert main([*pair, "--cache-dir", str(tmp_path / "c"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())[0]["standing"]


def test_the_shipped_model_is_a_candidate_named_default_as_everywhere(
    capsys, tiny_bundle, labelled, tmp_path, monkeypatch
):
    # `--against default` worked, a candidate `default` was refused: "model bundle default does not exist".
    import deepshield.inference.runtime as runtime

    monkeypatch.setattr(runtime, "DEFAULT_BUNDLE", tiny_bundle)
    code = main(
        ["compare", "default", "--against", str(tiny_bundle), "--on", str(labelled), "--cache-dir", str(tmp_path / "c")]
    )
    assert code == 0 and "+0.000 [+0.000, +0.000]" in capsys.readouterr().out


def test_a_plot_not_named_png_is_refused_before_the_scoring(capsys, tiny_bundle, labelled, tmp_path):
    # The figure is PNG: '--plot x.txt' wrote PNG bytes into a .txt file, after the scoring.
    plot = tmp_path / "x.txt"
    code = main(
        ["compare", str(tiny_bundle), "--against", str(tiny_bundle), "--on", str(labelled), "--plot", str(plot)]
    )
    assert code == 2 and f"--plot {plot}: the figure is a PNG file" in capsys.readouterr().err
    assert not plot.exists()
