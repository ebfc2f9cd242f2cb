"""`deepshield evaluate` end to end on a tiny folder dataset built from the astronaut photo."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from deepshield.cli.evaluate import add_perturb_argument
from deepshield.cli.main import EXIT_OK, EXIT_USAGE, main
from deepshield.errors import EXIT_INTERRUPTED, DeepShieldError
from deepshield.evaluation.metrics import FEW_FILES, few_files_caution, files_per_class
from deepshield.evaluation.scoring import CLEAN, score_datasets
from deepshield.evaluation.summary import EvaluationSettings, EvaluationSummary, summarize
from deepshield.inference.runtime import OnnxClassifier
from deepshield.inference.video_rule import VideoRule
from tests.conftest import write_video


def save_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory, astronaut) -> Path:
    """real/: the photo, its mirror image, a face-less grey image, a broken JPEG;
    fake/swap/: a blurred-face edit, a darkened copy, and a 6-frame video of the photo drifting."""
    root = tmp_path_factory.mktemp("eval") / "tinyset"
    save_image(root / "real" / "astronaut.jpg", astronaut)
    save_image(root / "real" / "mirror.png", np.ascontiguousarray(astronaut[:, ::-1]))
    save_image(root / "real" / "blank.png", np.full((120, 160, 3), 128, np.uint8))
    (root / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    edited = astronaut.copy()
    edited[120:260, 180:320] = cv2.GaussianBlur(edited[120:260, 180:320], (0, 0), 5)
    save_image(root / "fake" / "swap" / "edited.jpg", edited)
    save_image(root / "fake" / "swap" / "dark.png", (astronaut * 0.7).astype(np.uint8))
    write_video(root / "fake" / "swap" / "drift.mp4", [np.roll(astronaut, 3 * i, axis=1) for i in range(6)])
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory, folder_dataset, tiny_bundle):
    out = tmp_path_factory.mktemp("report") / "rep"
    code = main(
        [
            "evaluate",
            str(folder_dataset),
            "--model",
            str(tiny_bundle),
            "--out",
            str(out),
            "--frames",
            "4",
            "--bootstrap",
            "200",
            "--perturb",
            "jpeg:90,50",
            "resize:0.5",
            "blur:1.5",
            "noise:5",
            "--no-progress",
        ]
    )
    assert code == EXIT_OK
    return out


def _strict_json(path: Path) -> dict:
    def refuse(name):
        raise AssertionError(f"{name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_report_files_are_written(report):
    for name in (
        "report.html",
        "metrics.json",
        "scores.csv",
        "files.csv",
        "plots/roc.png",
        "plots/pr.png",
        "plots/reliability.png",
        "plots/hist_file.png",
        "plots/hist_face.png",
        "plots/perturbations.png",
    ):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name


def test_html_is_self_contained(report):
    page = (report / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"https?://|//cdn", page)
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for heading in (
        "Headline metrics",
        "Calibration",
        "By source dataset",
        "By manipulation method",
        "Video rules compared",
        "Robustness to perturbations",
        "Real files scored highest",
        "Fake files scored lowest",
        "Files without a face",
    ):
        assert heading in page
    assert "blank.png" in page and "broken.jpg" in page
    assert "It does not detect fully AI-generated faces, lip-sync without blending, or manipulated audio." in page


def test_the_gallery_shows_the_reals_scored_highest_and_fakes_lowest_flagged_or_not(report):
    metrics = json.loads((report / "metrics.json").read_text())
    threshold = metrics["settings"]["threshold"]
    files = list(csv.DictReader((report / "files.csv").open()))
    scored = [f for f in files if f["score"] not in ("", "nan")]
    reals = sorted((float(f["score"]) for f in scored if f["label"] == "real"), reverse=True)
    fakes = sorted(float(f["score"]) for f in scored if f["label"] == "fake")
    shown_reals = [e["score"] for e in metrics["worst"]["highest_real"]]
    shown_fakes = [e["score"] for e in metrics["worst"]["lowest_fake"]]
    # every real with a face (fewer than the gallery's 8), flagged or not, highest first; fakes lowest first
    assert shown_reals == pytest.approx(reals) and shown_fakes == pytest.approx(fakes)
    page = (report / "report.html").read_text()
    flagged, missed = sum(s >= threshold for s in reals), sum(s < threshold for s in fakes)
    assert page.count('<span class="bad">flagged</span>') == flagged
    assert page.count('<span class="bad">missed</span>') == missed
    assert page.count("right side of the threshold") == len(reals) + len(fakes) - flagged - missed


def test_metrics_json_is_the_typed_summary(report):
    """metrics.json reads back into an EvaluationSummary and writes out the same; unknown keys are refused."""
    m = _strict_json(report / "metrics.json")
    summary = EvaluationSummary.model_validate(m)
    assert summary.to_json() == m
    assert (
        summary.file.value("auc") == m["file"]["metrics"]["auc"]["value"]
        and summary.face.metrics["auc"].low == m["face"]["metrics"]["auc"]["low"]
    )
    assert (
        "metrics" not in m["video_rules"]["max"]["videos_only"]
        and summary.video_rules["max"].videos_only.metrics is None
    )  # one class: left out
    assert summary.headline("file")["file_auc_low"] == m["file"]["metrics"]["auc"]["low"]
    assert "synthetic" not in m and summary.synthetic is None  # a one-output bundle has no synthetic-face score
    assert m["settings"]["positive_class"] == "fake: a score ≥ the threshold is called fake"  # the page alone said it
    with pytest.raises(ValidationError, match="threshhold"):
        EvaluationSummary.model_validate({**m, "settings": {**m["settings"], "threshhold": 0.4}})


def test_metrics_json(report):
    m = _strict_json(report / "metrics.json")
    counts = m["counts"]
    assert (counts["files"], counts["real_files"], counts["fake_files"]) == (7, 4, 3)
    assert (counts["files_with_face"], counts["files_without_face"], counts["unreadable_files"]) == (5, 1, 1)
    assert counts["files_in_file_metrics"] == 5 and counts["faces"] == 4 + 4  # four images + four video frames
    assert [f["path"].endswith("blank.png") for f in m["no_face_files"]] == [True]
    assert m["unreadable_files"][0]["path"].endswith("broken.jpg")
    for level in ("file", "face"):
        for name, entry in m[level]["metrics"].items():
            assert entry["low"] <= entry["value"] + 1e-9 and entry["value"] <= entry["high"] + 1e-9, (level, name)
        c = m[level]["confusion"]
        assert c["tn"] + c["fp"] + c["fn"] + c["tp"] == m[level]["count"]
    assert [r["condition"] for r in m["perturbations"]] == [
        "clean",
        "jpeg:90",
        "jpeg:50",
        "resize:0.5",
        "blur:1.5",
        "noise:5",
    ]
    assert m["perturbations"][0]["file_auc"] == pytest.approx(m["file"]["metrics"]["auc"]["value"])
    assert set(m["video_rules"]) == {"topk-mean", "mean", "max"}
    assert "videos_only" in m["video_rules"]["max"]  # images and videos mixed: videos also on their own
    assert set(m["by_source"]) == {"tinyset"} and set(m["by_method"]) == {"swap"}
    assert m["settings"]["no_face"] == "exclude" and m["settings"]["threshold"] == 0.5


def test_intervals_over_few_files_carry_a_caution(report):
    """2 real and 3 fake files: every block with metrics says its intervals understate the uncertainty,
    in metrics.json, the page and the printed summary; faces count by their file, and ten files of each
    class need none."""
    from deepshield.cli.evaluate import print_summary

    m = _strict_json(report / "metrics.json")
    for level in ("file", "face"):
        assert m[level]["caution"].startswith("only 2 real and 3 fake files: a bootstrap over so few files")
    assert "† file level, face level: only 2 real and 3 fake files" in (report / "report.html").read_text()
    printed = io.StringIO()
    print_summary(EvaluationSummary.model_validate(m), out=printed)
    assert printed.getvalue().count("\n  caution: only 2 real and 3 fake files") == 2  # under each level
    assert printed.getvalue().endswith("\nsynthetic-face score: not in this model\n")  # a one-score model's
    faces_of = np.repeat(np.arange(2 * FEW_FILES), 5)  # five faces a file
    labels = (faces_of >= FEW_FILES).astype(np.int64)
    assert files_per_class(labels, faces_of) == (FEW_FILES, FEW_FILES)
    assert files_per_class(labels[5:], faces_of[5:]) == (FEW_FILES - 1, FEW_FILES)
    assert few_files_caution(FEW_FILES, FEW_FILES) is None
    assert few_files_caution(FEW_FILES - 1, FEW_FILES) == (
        f"only {FEW_FILES - 1} real and {FEW_FILES} fake files: a bootstrap over so few files understates the "
        "uncertainty (an interval can shrink to a point)"
    )


def test_scores_csv_has_every_face_of_every_condition(report):
    rows = list(csv.DictReader(io.StringIO((report / "scores.csv").read_text())))
    assert len(rows) == 6 * 8  # 6 conditions (clean + 5), 8 faces each: the perturbations are mild
    assert {r["condition"] for r in rows} == {"clean", "jpeg:90", "jpeg:50", "resize:0.5", "blur:1.5", "noise:5"}
    video = [r for r in rows if r["path"].endswith("drift.mp4") and r["condition"] == "clean"]
    assert len(video) == 4 and {r["track_id"] for r in video} == {"0"} and len({r["frame_index"] for r in video}) == 4
    files = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO((report / "files.csv").read_text()))}
    assert files["blank.png"]["status"] == "no_face" and files["blank.png"]["called"] == "no_face"
    assert files["broken.jpg"]["status"] == "error" and files["broken.jpg"]["reason"]
    assert files["drift.mp4"]["frames_sampled"] == "4" and files["drift.mp4"]["faces"] == "4"


def test_scores_match_the_detector(folder_dataset, detector):
    """Evaluation scores files exactly as the product's Detector does (same crops, same video rule)."""
    scored = score_datasets([folder_dataset], detector.classifier, frames=4, progress=False)
    scores = {Path(f.path).name: s for f, s in zip(scored.files, scored.file_scores(CLEAN, VideoRule()))}
    assert scores["astronaut.jpg"] == pytest.approx(
        detector.analyze_image(folder_dataset / "real" / "astronaut.jpg").verdict.probability, abs=1e-6
    )
    video = detector.analyze_video(folder_dataset / "fake" / "swap" / "drift.mp4", frames=4)
    assert scores["drift.mp4"] == pytest.approx(video.verdict.probability, abs=1e-6)
    assert np.isnan(scores["blank.png"]) and np.isnan(scores["broken.jpg"])


def test_no_face_files_can_be_scored_zero(folder_dataset, tiny_bundle):
    scored = score_datasets([folder_dataset], OnnxClassifier(tiny_bundle), frames=2, progress=False)
    excluded = summarize(scored, EvaluationSettings(bootstrap=0, no_face="exclude"))
    zero = summarize(scored, EvaluationSettings(bootstrap=0, no_face="zero"))
    assert excluded.file.count == 5 and zero.file.count == 6
    assert zero.file.confusion.tn == excluded.file.confusion.tn + 1  # the grey image, a real, called real
    assert excluded.face.count == zero.face.count  # no face, no face-level sample
    assert excluded.file.metrics["auc"].low is None  # --bootstrap 0: no intervals


def test_one_class_subset_gets_a_detection_rate(folder_dataset, tiny_bundle, tmp_path):
    fakes_only = tmp_path / "only" / "fake"
    fakes_only.mkdir(parents=True)
    for path in (folder_dataset / "fake" / "swap").iterdir():
        (fakes_only / path.name).write_bytes(path.read_bytes())
    scored = score_datasets([fakes_only.parent], OnnxClassifier(tiny_bundle), frames=2, progress=False)
    summary = summarize(scored, EvaluationSettings(bootstrap=50))
    assert "both classes: all 3 files are fake" in summary.file.error
    rate = summary.file.detection_rate
    assert rate.low <= rate.value <= rate.high and summary.file.metrics is None


def test_bad_perturbation_is_a_usage_error(capsys, folder_dataset, tiny_bundle, tmp_path):
    code = main(
        [
            "evaluate",
            str(folder_dataset),
            "--model",
            str(tiny_bundle),
            "--out",
            str(tmp_path / "r"),
            "--perturb",
            "jpeg:150",
        ]
    )
    assert code == EXIT_USAGE
    assert "jpeg quality must be an integer from 1 to 100" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unknown_dataset_layout_is_a_usage_error(capsys, tiny_bundle, tmp_path):
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "a.jpg").write_bytes(b"x")
    assert (
        main(["evaluate", str(tmp_path / "misc"), "--model", str(tiny_bundle), "--out", str(tmp_path / "r")])
        == EXIT_USAGE
    )
    assert "cannot tell the dataset layout" in capsys.readouterr().err


def test_prepared_dataset_scores_its_crops(capsys, folder_dataset, tiny_bundle, tmp_path):
    from deepshield.data.extract import ExtractSettings
    from deepshield.data.prepare import prepare_dataset
    from deepshield.faces.crop import CropPolicy

    classifier = OnnxClassifier(tiny_bundle)
    prepared = tmp_path / "prepared"
    prepare_dataset(
        [folder_dataset],
        prepared,
        settings=ExtractSettings(frames=4, policy=classifier.card.crop_policy),
        progress=False,
    )
    from_crops = score_datasets([prepared], classifier, progress=False)
    from_media = score_datasets([folder_dataset], classifier, frames=4, progress=False)
    assert from_crops.mode == "crops" and from_crops.face_count == from_media.face_count
    media_scores = {Path(f.path).name: s for f, s in zip(from_media.files, from_media.file_scores())}
    for f, s in zip(from_crops.files, from_crops.file_scores()):
        name = Path(f.path).name
        if np.isnan(media_scores[name]):
            assert np.isnan(s), name
        else:
            assert s == pytest.approx(media_scores[name], abs=1e-5), name  # lossless crops: same pixels, same scores
    summary = summarize(from_crops, EvaluationSettings(bootstrap=0))
    assert summary.counts.files_without_face == 1 and summary.counts.unreadable_files == 1
    # A split with no crop: an empty report and exit 0, where calibrate refused.
    held = tmp_path / "all-train"
    prepare_dataset(
        [folder_dataset],
        held,
        settings=ExtractSettings(frames=2, policy=classifier.card.crop_policy),
        ratios=(1.0, 0.0, 0.0),
        progress=False,
    )
    with pytest.raises(DeepShieldError, match="has no crops in its test split \\(its splits: train\\)"):
        score_datasets([held], classifier, split="test", progress=False)

    other = tmp_path / "other-policy"
    prepare_dataset(
        [folder_dataset],
        other,
        settings=ExtractSettings(frames=2, policy=CropPolicy(size=64, scale=1.3)),
        progress=False,
    )
    out = tmp_path / "rep"
    assert (
        main(
            [
                "evaluate",
                str(other),
                "--model",
                str(tiny_bundle),
                "--out",
                str(out),
                "--bootstrap",
                "0",
                "--no-progress",
            ]
        )
        == EXIT_OK
    )
    err = capsys.readouterr().err
    assert "crop policy" in err and "crop policy" in (out / "report.html").read_text()
    # It said the scores would not match, and not what to do about it.
    assert re.search(
        r"; prepare its sources into another folder with --crop-size \d+ --crop-scale [\d.]+, or give", err
    )
    assert (
        main(["evaluate", str(other), "--model", str(tiny_bundle), "--out", str(out), "--perturb", "jpeg:50"])
        == EXIT_USAGE
    )
    assert "perturbations of the full frame cannot be applied" in capsys.readouterr().err
    # Its faces were found as it was prepared: the options that find them are refused, not ignored (and
    # recorded as if applied), and the settings recorded are the dataset's.
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["settings"]["frames"], metrics["settings"]["min_face_size"]) == (2, 20)
    again = ["evaluate", str(other), "--model", str(tiny_bundle), "--out", str(tmp_path / "again")]
    assert main([*again, "--min-face-size", "400"]) == EXIT_USAGE
    assert "--frames and --min-face-size apply to raw media" in capsys.readouterr().err
    assert main([*again, "--format", "dfdc", "--workers", "2"]) == EXIT_USAGE  # taken silently before
    assert "--format, --workers apply to raw media" in capsys.readouterr().err
    assert main([*again, "--workers", "2"]) == EXIT_USAGE  # one said as one: it was "--workers apply"
    assert "--workers applies to raw media" in capsys.readouterr().err


def test_a_file_reached_through_two_sets_is_scored_once(capsys, folder_dataset, tiny_bundle, tmp_path):
    # evaluate ds ds scored every file twice, and the bootstrap took the copies for independent files.
    classifier = OnnxClassifier(tiny_bundle)
    once = score_datasets([folder_dataset], classifier, frames=2, progress=False)
    twice = score_datasets([folder_dataset, folder_dataset / "fake"], classifier, frames=2, progress=False)
    assert len(twice.files) == len(once.files) and twice.face_count == once.face_count


def test_a_negative_seed_is_refused(capsys, folder_dataset, tiny_bundle, tmp_path):
    # default_rng refused it inside every noisy file, each then counted as a face lost to the noise.
    args = ["evaluate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--perturb", "noise:5", "--seed", "-1"])
    assert refused.value.code == EXIT_USAGE and "--seed: must be 0 or a positive integer" in capsys.readouterr().err
    # One resample's AUC is no interval: it printed 0.250 [0.167, 0.167].
    with pytest.raises(SystemExit) as refused:
        main([*args, "--bootstrap", "1"])
    assert (
        refused.value.code == EXIT_USAGE
        and "--bootstrap: must be 0 (no intervals) or at least 20" in capsys.readouterr().err
    )


def test_report_is_logged_to_mlflow(capsys, folder_dataset, tiny_bundle, tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{mlflow_store(tmp_path / 'mlruns.db')}"
    out = tmp_path / "rep"
    code = main(
        [
            "evaluate",
            str(folder_dataset),
            "--model",
            str(tiny_bundle),
            "--out",
            str(out),
            "--frames",
            "2",
            "--bootstrap",
            "20",
            "--tracking-uri",
            uri,
            "--no-progress",
        ]
    )
    assert code == EXIT_OK
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("deepshield-evaluate")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    # The last line says how to open the experiment in the MLflow UI.
    last = capsys.readouterr().out.splitlines()[-1]
    page = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
    assert (
        last
        == f"MLflow: run `mlflow ui --backend-store-uri {uri}`, then open {page} (this run: {page}/runs/{run.info.run_id})"
    )
    assert {"file_auc", "file_auc_low", "face_auc", "rule_max_file_auc"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/report.html" in artifacts and "evaluation/metrics.json" in artifacts


def test_gallery_videos_carry_each_face_track(folder_dataset, tiny_bundle, tmp_path):
    from deepshield.evaluation.report import _beside, _face_list, _track_list

    scored = score_datasets([folder_dataset], OnnxClassifier(tiny_bundle), frames=4, examples=8, progress=False)
    by_name = {Path(scored.files[e.file_id].path).name: e for e in scored.examples.values()}
    (track,) = by_name["drift.mp4"].tracks  # the drifting photo: one face, seen in every sampled frame
    assert (track.frames_seen, track.first_frame, track.last_frame) == (4, 0, 5)
    assert (
        track.first_s == pytest.approx(0.0) and track.last_s == pytest.approx(0.5) and track.not_counted_reason is None
    )
    assert track.crop.shape == (64, 64, 3) and track.heatmap.shape == (64, 64)
    assert track.score == pytest.approx(by_name["drift.mp4"].score)  # one track: the file's score
    assert len(by_name["astronaut.jpg"].tracks) == 1 and by_name["astronaut.jpg"].tracks[0].first_s == 0.0
    png = str(tmp_path / "x.png")
    cv2.imwrite(png, np.zeros((8, 8, 3), np.uint8))
    entry = {
        "track_id": 0,
        "score": 0.7,
        "frames_seen": 4,
        "first_frame": 0,
        "last_frame": 5,
        "first_s": 0.0,
        "last_s": 0.5,
        "peak_frame": 3,
        "crop": Path(png),
        "heatmap": Path(png),
    }
    short = {**entry, "track_id": 1, "frames_seen": 1, "not_counted_reason": "seen in 1 of 4 sampled frames"}
    html = _track_list([{**entry, "not_counted_reason": None}, short], threshold=0.5)
    assert "track 0: <b>0.700</b> · 4 frames, 0.0–0.5 s · peak frame 3 · counts" in html
    assert "does not count: seen in 1 of 4 sampled frames" in html and html.count("<img") == 4
    faces = _face_list([entry, {**entry, "track_id": 1, "score": 0.55559}], threshold=0.5558)  # an image's two faces
    assert "face 0: <b>0.700</b>" in faces and "face 1: <b>0.5556</b>" in faces  # not 0.556: above the threshold
    assert "frames" not in faces and _face_list([entry], threshold=0.5) == ""  # one face: the entry itself
    assert _beside(0.43, 0.5558) == "0.430" and _beside(0.55581, 0.5558) == "0.556"


def test_a_broken_link_or_a_fifo_is_said_as_what_it_is_not_as_missing(folder_dataset, tiny_bundle, tmp_path):
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")  # ended the run at its training-data check, no report
    listing = tmp_path / "set.csv"
    listing.write_text(
        f"path,label\n{folder_dataset / 'real' / 'astronaut.jpg'},real\n{tmp_path / 'dangling.jpg'},fake\n{tmp_path / 'pipe.jpg'},fake\n{tmp_path / 'loop.jpg'},fake\n"
    )
    out = tmp_path / "rep"
    args = ["evaluate", str(listing), "--model", str(tiny_bundle), "--out", str(out), "--bootstrap", "0"]
    assert main([*args, "--no-progress"]) == EXIT_OK
    files = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(io.StringIO((out / "files.csv").read_text()))}
    assert files["dangling.jpg"] == "broken symbolic link"  # both read "file not found"
    assert files["pipe.jpg"] == "not a regular file: a FIFO (named pipe)" and files["loop.jpg"] == "symbolic link loop"
    assert json.loads((out / "metrics.json").read_text())["counts"]["unreadable_files"] == 3


def test_missing_files_are_listed_apart_from_unreadable_ones(capsys, folder_dataset, tiny_bundle, tmp_path):
    listing = tmp_path / "set.csv"
    listing.write_text(
        f"path,label\n{folder_dataset / 'real' / 'astronaut.jpg'},real\n{tmp_path / 'gone.jpg'},fake\n{folder_dataset / 'real' / 'broken.jpg'},real\n"
    )
    out = tmp_path / "rep"
    assert (
        main(
            [
                "evaluate",
                str(listing),
                "--model",
                str(tiny_bundle),
                "--out",
                str(out),
                "--bootstrap",
                "0",
                "--no-progress",
            ]
        )
        == EXIT_OK
    )
    printed = capsys.readouterr()
    err = printed.err
    assert "3 files: 1 with faces, 0 without a face, 1 missing (listed but not on disk), 1 not readable" in err
    assert "1 with a face, 0 without, 1 missing, 1 unreadable; " in printed.out  # the summary says them alike
    assert f"1 file named by the dataset's listing but missing: {tmp_path / 'gone.jpg'}\n" in err
    assert re.search(r"1 file unreadable: \S*broken.jpg \(", err)
    page = (out / "report.html").read_text()
    assert "<h2>Missing files (1)</h2>" in page and "<h2>Unreadable files (1)</h2>" in page
    # The page's header and metrics.json counted the missing file as unreadable ("1 / 0 / 2"), and its
    # "3 files (...; 1 images, 0 videos)" did not add up.
    assert "3 (2 real, 1 fake; 1 images, 0 videos, 1 missing, 1 unreadable)" in page
    assert "files with a face / without / missing / unreadable</th><td class=l>1 / 0 / 1 / 1<" in page
    m = json.loads((out / "metrics.json").read_text())
    assert (m["counts"]["missing_files"], m["counts"]["unreadable_files"]) == (1, 1)
    assert [Path(f["path"]).name for f in m["missing_files"] + m["unreadable_files"]] == ["gone.jpg", "broken.jpg"]
    files = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO((out / "files.csv").read_text()))}
    assert files["gone.jpg"]["reason"] == "file not found" and files["gone.jpg"]["called"] == "error"
    ok = files["astronaut.jpg"]
    threshold = m["settings"]["threshold"]
    score = float(ok["score"])
    expected = (
        "likely_manipulated"
        if score >= threshold + 0.1
        else "no_signs_found"
        if score < threshold - 0.1
        else "inconclusive"
    )
    assert ok["called"] == expected and ok["called_at_threshold"] == ("fake" if score >= threshold else "real")


def test_multi_face_and_short_track_videos_score_as_the_detector_does(tmp_path, astronaut, detector):
    """Two people all through the video and a third in two frames only (a track too short to count):
    evaluation and the Detector agree on the file score and on which tracks count."""
    from tests.conftest import write_video

    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(8):
        row = [np.roll(small, 2 * i, axis=1), np.roll(small, -2 * i, axis=1)]
        row.append(small if i in (3, 4) else np.full_like(small, 90))  # the third face: two frames only
        frames.append(np.hstack(row))
    root = tmp_path / "set"
    (root / "fake" / "swap").mkdir(parents=True)
    write_video(root / "fake" / "swap" / "crowd.mp4", frames)
    (root / "real").mkdir(parents=True)
    cv2.imwrite(str(root / "real" / "astronaut.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))

    scored = score_datasets([root], detector.classifier, frames=8, progress=False)
    scores = {Path(f.path).name: s for f, s in zip(scored.files, scored.file_scores(CLEAN, VideoRule()))}
    video = detector.analyze_video(root / "fake" / "swap" / "crowd.mp4", frames=8)
    counted = [t for t in video.tracks if t.counted]
    # the two-frame track is shown but not counted
    assert [(t.frames_seen, t.counted) for t in video.tracks] == [(8, True), (8, True), (2, False)]
    assert scores["crowd.mp4"] == pytest.approx(video.verdict.probability, abs=1e-6)
    assert scores["crowd.mp4"] == pytest.approx(max(t.score for t in counted), abs=1e-6)


@dataclass
class CroppingStops:
    """What stop_cropping patched in: the files cropped, in order; while `interrupt` holds, the crop after
    the `after`-th raises KeyboardInterrupt (as Ctrl-C or a killed process leaves a run: that many done)."""

    after: int
    interrupt: bool = True
    cropped: list[str] = field(default_factory=list)


def stop_cropping(monkeypatch, after: int = 3) -> CroppingStops:
    """CropJob.run (what evaluate and calibrate crop each file with), counted and stopped as CroppingStops says."""
    from deepshield.evaluation.scoring import CropJob

    stops = CroppingStops(after)
    run = CropJob.run

    def counted(job, cropper, item):
        if len(stops.cropped) == stops.after and stops.interrupt:
            raise KeyboardInterrupt
        stops.cropped.append(Path(item[1]).name)
        return run(job, cropper, item)

    monkeypatch.setattr(CropJob, "run", counted)
    return stops


def test_an_interrupted_resumable_evaluation_finds_only_the_rest_and_reports_as_an_uninterrupted_one(
    folder_dataset, tiny_bundle, tmp_path, monkeypatch, capsys
):
    def evaluate(out: Path, *extra: str) -> int:
        args = ["evaluate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--frames", "3"]
        return main([*args, "--perturb", "noise:5", "--bootstrap", "0", "--no-progress", *extra])

    assert evaluate(tmp_path / "plain") == EXIT_OK
    assert not (tmp_path / "plain" / ".faces-in-progress").exists()  # only --resume keeps faces
    stops = stop_cropping(monkeypatch)  # three files done, then Ctrl-C
    cropped = stops.cropped
    out = tmp_path / "resumed"
    assert evaluate(out, "--resume") == EXIT_INTERRUPTED
    assert len(list((out / ".faces-in-progress").glob("[0-9]*.npz"))) == 3
    stops.interrupt, first_three = False, list(cropped)
    assert evaluate(out, "--resume") == EXIT_OK
    assert len(cropped) == 7 and not set(cropped[3:]) & set(first_three)  # the other four files only
    for name in ("scores.csv", "files.csv"):  # the noise is seeded per file: the same pixels either way
        assert (out / name).read_text() == (tmp_path / "plain" / name).read_text()
    assert not (out / ".faces-in-progress").exists()
    # Faces kept for other settings are not used: a run with other frames finds every file again.
    stops.interrupt, cropped[:] = True, []
    assert evaluate(out, "--resume") == EXIT_INTERRUPTED
    stops.interrupt, cropped[:] = False, []
    assert evaluate(out, "--resume", "--frames", "2") == EXIT_OK and len(cropped) == 7
    # Nor faces of a file replaced since (its time moved here): they were kept, the new content never looked at.
    stops.interrupt, cropped[:] = True, []
    assert evaluate(out, "--resume") == EXIT_INTERRUPTED
    replaced = sorted(p for p in folder_dataset.rglob("*") if p.is_file())[0]
    os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    stops.interrupt, cropped[:] = False, []
    assert evaluate(out, "--resume") == EXIT_OK and len(cropped) == 7
    # A kept file that cannot be read stops the run, naming what to delete (it is never silently redone).
    stops.interrupt, cropped[:] = True, []
    assert evaluate(out, "--resume") == EXIT_INTERRUPTED
    (out / ".faces-in-progress" / "0.npz").write_bytes(b"not an npz")
    capsys.readouterr()
    stops.interrupt = False
    assert evaluate(out, "--resume") == EXIT_USAGE
    assert f"delete {out / '.faces-in-progress'} to start again" in capsys.readouterr().err


def test_a_prepared_dataset_counts_a_file_its_listing_named_twice_once(folder_dataset, tiny_bundle, tmp_path):
    # errors.csv names the second listing ("listed twice"): read back as a file, it was counted again.
    from deepshield.data.extract import ExtractSettings
    from deepshield.data.prepare import prepare_dataset

    photo = folder_dataset / "real" / "astronaut.jpg"
    listing = tmp_path / "list.csv"
    listing.write_text(
        f"path,label\n{photo},real\n{folder_dataset / 'fake' / 'swap' / 'dark.png'},fake\n{photo},real\n"
    )
    classifier = OnnxClassifier(tiny_bundle)
    prepared = tmp_path / "prepared"
    prepare_dataset([listing], prepared, settings=ExtractSettings(policy=classifier.card.crop_policy), progress=False)
    raw = score_datasets([listing], classifier, progress=False)
    from_crops = score_datasets([prepared], classifier, progress=False)
    assert len(from_crops.files) == len(raw.files) == 2


def test_a_copy_left_out_under_another_name_is_no_unreadable_file(folder_dataset, tiny_bundle, tmp_path):
    # errors.csv names a copy prepare or `dataset balance --add-real` left out, under its own name: read back
    # as a file, it was counted as one, and as unreadable ("already in the dataset (not added again)").
    import shutil

    from deepshield.data import balance
    from deepshield.data.extract import ExtractSettings
    from deepshield.data.manifest import ALREADY_HELD, read_errors
    from deepshield.data.prepare import prepare_dataset
    from deepshield.evaluation.scoring import describe_counts

    photo = folder_dataset / "real" / "astronaut.jpg"
    listing = tmp_path / "list.csv"
    link = tmp_path / "link.jpg"  # the photo under a second name: "listed twice"
    link.symlink_to(photo)
    listing.write_text(f"path,label\n{photo},real\n{folder_dataset / 'fake' / 'swap' / 'dark.png'},fake\n{link},real\n")
    classifier = OnnxClassifier(tiny_bundle)
    prepared = tmp_path / "prepared"
    prepare_dataset([listing], prepared, settings=ExtractSettings(policy=classifier.card.crop_policy), progress=False)
    (tmp_path / "morereal").mkdir()
    shutil.copy(photo, tmp_path / "morereal" / "dup.jpg")
    assert balance.add_real(prepared, tmp_path / "morereal", progress=False).already_held == 1
    reasons = [e.reason for e in read_errors(prepared)]
    assert len(reasons) == 2 and reasons[0].startswith("listed twice") and reasons[1] == ALREADY_HELD
    scored = score_datasets([prepared], classifier, progress=False)
    assert [Path(f.path).name for f in scored.files] == ["astronaut.jpg", "dark.png"]
    assert describe_counts(scored).endswith("0 not readable")
    assert "2 copies left out: errors.csv lists them as copies of files the dataset holds" in scored.notes


def test_a_prepared_video_is_judged_as_its_raw_media_is(tiny_bundle, astronaut, tmp_path):
    # Its faces were linked into tracks over the frames with faces alone, so a face gone for four samples
    # stayed one person (two on the raw media), and a short video counted the dataset's frame count.
    from deepshield.data.extract import ExtractSettings
    from deepshield.data.prepare import prepare_dataset

    blank = np.full_like(astronaut, 90)
    frames = [astronaut if i < 3 or i > 6 else blank for i in range(10)]
    (tmp_path / "set" / "fake").mkdir(parents=True)
    write_video(tmp_path / "set" / "fake" / "gap.mp4", frames, fps=5)
    write_video(tmp_path / "set" / "fake" / "short.mp4", frames[:2], fps=5)
    save_image(tmp_path / "set" / "real" / "photo.png", astronaut)
    classifier = OnnxClassifier(tiny_bundle)
    prepared = tmp_path / "prepared"
    settings = ExtractSettings(frames=10, policy=classifier.card.crop_policy)
    prepare_dataset([tmp_path / "set"], prepared, settings=settings, progress=False)
    raw = score_datasets([tmp_path / "set"], classifier, frames=10, progress=False)
    from_crops = score_datasets([prepared], classifier, progress=False)

    def tracks_and_frames(scored) -> dict[str, tuple[list[int], int]]:
        return {
            Path(f.path).name: (scored.faces["track_id"][scored.faces["file_id"] == f.file_id].tolist(), f.frames)
            for f in scored.files
        }

    assert tracks_and_frames(from_crops) == tracks_and_frames(raw)
    assert tracks_and_frames(raw)["gap.mp4"] == ([0, 0, 0, 1, 1, 1], 10) and tracks_and_frames(raw)["short.mp4"][1] == 2


def test_a_figure_near_an_edge_is_never_shown_as_the_edge():
    from deepshield.evaluation.shown import fraction_text

    # an AUC of 0.9996 beside a false positive read "1.000", as if perfect
    assert [fraction_text(v) for v in (0.9996, 1.0, 0.0004, 0.0, 0.5, 0.99949)] == [
        ">0.999", "1.000", "<0.001", "0.000", "0.500", "0.999",
    ]  # fmt: skip
    assert fraction_text(0.99951, 4) == "0.9995"
    from deepshield.evaluation.shown import auc_text

    # 0.9981 [0.9956, 0.9997] read "1.00 [1.00, 1.00]": a perfect score without an interval
    assert auc_text(0.9981, 0.9956, 0.9997) == "0.998 [0.996, >0.999]"
    assert auc_text(1.0, 1.0, 1.0) == "1.00 [1.00, 1.00]" and auc_text(0.604, 0.426, 0.742) == "0.60 [0.43, 0.74]"


def test_learning_curves_count_epochs_as_training_logs_them(tmp_path, monkeypatch):
    from deepshield.evaluation import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.append(figure) or path)
    history = [{"epoch": 0, "train_loss": 0.9}, {"epoch": 1, "train_loss": 0.7}]
    plots.curves_plot(history, ["train_loss"], tmp_path / "loss.png", "loss")
    (line,) = drawn[0].axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2]  # the log's "epoch 1/2" and "epoch 2/2" (0 and 1 were drawn)


def test_a_perturbations_pixels_do_not_depend_on_what_stands_beside_it(folder_dataset, tiny_bundle):
    # noise:20 was seeded by the perturbation's place in --perturb and the file's in the listing: its figures
    # moved by up to 0.06 a file with jpeg:90 beside it.
    from deepshield.evaluation.perturb import parse_perturbations

    classifier = OnnxClassifier(tiny_bundle)

    def noisy(specs: list[str]) -> dict[str, float]:
        scored = score_datasets(
            [folder_dataset], classifier, frames=2, progress=False, perturbations=parse_perturbations(specs)
        )
        return {Path(f.path).name: s for f, s in zip(scored.files, scored.file_scores("noise:20")) if not np.isnan(s)}

    alone, beside = noisy(["noise:20"]), noisy(["jpeg:90", "noise:20"])
    assert alone and alone == pytest.approx(beside)


def one_face_per_file(labels: list[int], logits: dict[str, dict[int, float]]):
    """A ScoredSet of images with one face each: `logits` is condition -> file index -> its face's logit
    (a file missing under a condition has no face there), clean first."""
    from deepshield.evaluation.scoring import FACE_COLUMNS, FileRecord, ScoredSet

    files = [
        FileRecord(i, f"f{i}.jpg", label, "toy", "none" if label == 0 else "swap", f"g{i}", "image", 1)
        for i, label in enumerate(labels)
    ]
    rows = [(i, c, logit) for c, by_file in enumerate(logits.values()) for i, logit in by_file.items()]
    columns = {name: np.zeros(len(rows), np.int64) for name in FACE_COLUMNS}
    columns.update(
        file_id=np.array([r[0] for r in rows]),
        condition=np.array([r[1] for r in rows]),
        logit=np.array([r[2] for r in rows], np.float32),
    )
    return ScoredSet(files=files, conditions=list(logits), faces=columns, temperature=1.0, mode="media")


def test_a_perturbation_that_hides_faces_is_counted_and_compared_on_the_same_files():
    # A fake whose face a perturbation hid left that row's set: "Δ vs clean" compared other files, and the
    # hidden fake (a miss for the product) was counted nowhere by label.
    clean = {0: -2.0, 1: -1.0, 2: 1.5, 3: 0.5, 4: 2.0, 5: 3.0}  # one real above one fake: clean AUC 8/9
    noisy = {i: logit for i, logit in clean.items() if i != 3}  # file 3 (the weakest fake) loses its face
    scored = one_face_per_file([0, 0, 0, 1, 1, 1], {"clean": clean, "noise:60": noisy})
    summary = summarize(scored, EvaluationSettings(bootstrap=0))
    row = next(row for row in summary.perturbations if row.condition == "noise:60")
    assert (row.fakes_lost, row.reals_lost) == (1, 0)
    # Losing the fake that scored below a real made the row's AUC 1.0 (+0.111 read as a gain); on the five
    # files with a face under both there is no change.
    assert row.file_auc == pytest.approx(1.0) and row.file_auc_change == pytest.approx(0.0)
    # Files, not faces, beside the row's faces: its column read "faces lost (fake / real)".
    from deepshield.evaluation.report import render_html

    page = render_html(summary, {}, {}, "lost")
    assert "<th scope=col>files that lost their face (fake / real)</th><th scope=col>faces</th>" in page
    assert "<td>1 / 0</td><td>5</td></tr>" in page
    # --bootstrap 0: no intervals, and none named (the column and the plot said "95% CI")
    assert "<th scope=col>file AUC</th>" in page and "CI" not in page and "with its interval" not in page
    with_intervals = render_html(summarize(scored, EvaluationSettings(bootstrap=50, confidence=0.9)), {}, {}, "ci")
    assert "<th scope=col>file AUC [90% CI]</th>" in with_intervals


def test_the_face_auc_change_is_paired_on_the_files_with_a_face_under_both():
    """The face-level "Δ vs clean" compared all faces of each condition: a fake that lost its face and a real
    that gained one under the perturbation moved it, though no face kept changed its score."""
    clean = {0: -2.0, 1: -1.0, 2: 1.5, 3: 0.5, 4: 2.0, 5: 3.0}  # face AUC 8/9
    resized = {i: logit for i, logit in clean.items() if i != 3} | {6: 4.0}  # fake 3 loses its face, real 6 gains one
    scored = one_face_per_file([0, 0, 0, 1, 1, 1, 0], {"clean": clean, "resize:0.25": resized})
    row = next(
        row for row in summarize(scored, EvaluationSettings(bootstrap=0)).perturbations if row.condition != "clean"
    )
    assert row.face_auc == pytest.approx(0.75)  # all of the row's faces: real 6 above every fake
    assert row.face_auc_change == pytest.approx(0.0)  # was 0.75 - 8/9 = -0.139
    assert row.file_auc_change == pytest.approx(0.0)  # the file level was paired already


def test_a_file_name_that_is_not_utf8_is_reported(folder_dataset, tiny_bundle, tmp_path):
    """A name from a Latin-1 system: writing scores.csv raised UnicodeEncodeError after the whole scoring run
    and left it cut off, with no files.csv and no page. The CSVs keep the name's bytes, the page shows \\xe9."""
    import os
    import shutil

    root = tmp_path / "set"
    shutil.copytree(folder_dataset / "real", root / "real")
    shutil.copytree(folder_dataset / "fake", root / "fake")
    odd = os.fsdecode(b"caf\xe9.jpg")
    # bytes of its own past the picture's end: a copy of astronaut.jpg is read once
    (root / "real" / odd).write_bytes((folder_dataset / "real" / "astronaut.jpg").read_bytes() + b"\0")
    shutil.copy(folder_dataset / "real" / "astronaut.jpg", root / os.fsdecode(b"\xe9t\xe9.jpg"))  # no label: page
    out = tmp_path / "rep"
    args = ["evaluate", str(root), "--model", str(tiny_bundle), "--out", str(out), "--frames", "2", "--no-progress"]
    assert main([*args, "--bootstrap", "0"]) == EXIT_OK
    assert b"caf\xe9.jpg" in (out / "scores.csv").read_bytes() and b"caf\xe9.jpg" in (out / "files.csv").read_bytes()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "caf\\xe9.jpg" in page and "\\xe9t\\xe9.jpg" in page


def test_a_file_name_holding_a_carriage_return_is_one_row_of_each_csv(folder_dataset, tiny_bundle, tmp_path):
    """scores.csv and files.csv end their rows with "\\n", and csv quoted only fields holding that: a name's
    bare "\\r" went out unquoted, and every reader split its row in two there."""
    import shutil

    root = tmp_path / "set"
    shutil.copytree(folder_dataset / "real", root / "real")
    shutil.copytree(folder_dataset / "fake", root / "fake")
    # bytes of its own past the picture's end: a copy of astronaut.jpg is read once
    (root / "real" / "cr\rname.jpg").write_bytes((folder_dataset / "real" / "astronaut.jpg").read_bytes() + b"\0")
    out = tmp_path / "rep"
    args = ["evaluate", str(root), "--model", str(tiny_bundle), "--out", str(out), "--frames", "2", "--no-progress"]
    assert main([*args, "--bootstrap", "0"]) == EXIT_OK
    listed = {str(path) for path in root.rglob("*") if path.is_file()}
    for name in ("scores.csv", "files.csv"):
        with open(out / name, newline="", encoding="utf-8") as handle:
            paths = [row["path"] for row in csv.DictReader(handle)]
        assert set(paths) <= listed and str(root / "real" / "cr\rname.jpg") in paths, name
    assert len(paths) == len(listed)  # files.csv: one row a file
    other = f"\n{root / 'real' / 'astronaut.jpg'},real,"  # the other rows as they were: unquoted
    assert other in (out / "files.csv").read_bytes().decode("utf-8")


def test_a_report_written_over_an_earlier_one_keeps_none_of_its_images(folder_dataset, tiny_bundle, tmp_path):
    """The images of an earlier report in the --out folder stood beside the new one's (and --tracking-uri
    logged them as its artifacts): a second run whose set had no face kept all 16."""
    out = tmp_path / "rep"
    for folder in ("plots", "examples"):
        (out / folder).mkdir(parents=True)
        (out / folder / "stale.png").write_bytes(b"an earlier report's")
        (out / folder / "notes.ipynb").write_text("a user's own file")
    args = ["evaluate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--frames", "2"]
    assert main([*args, "--bootstrap", "0", "--no-progress"]) == EXIT_OK
    assert (out / "plots" / "stale.png").exists()  # no report was here before: nothing of the folder's is removed
    assert main([*args, "--bootstrap", "0", "--no-progress"]) == EXIT_OK
    assert not (out / "plots" / "stale.png").exists() and not (out / "examples" / "stale.png").exists()
    assert (out / "plots" / "notes.ipynb").exists() and (out / "examples" / "notes.ipynb").exists()  # only images
    assert list((out / "plots").glob("*.png"))  # this report's own


def test_entries_left_out_are_said_with_their_reasons(folder_dataset, tiny_bundle, tmp_path):
    """A listing that cannot be read at all (UTF-16, not guessed at) was "1 entries have no usable label", its
    reason only in the log."""
    from deepshield.evaluation.scoring import open_labelled_set
    from deepshield.faces.crop import CropPolicy

    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label\ncafé.jpg,real\n".encode("utf-16"))
    said: list[str] = []
    open_labelled_set([folder_dataset, latin], CropPolicy(size=64), frames=1, progress=False, warn=said.append)
    (warning,) = said
    assert warning.startswith("1 entry could not be used and is left out: ") and "latin.csv: unreadable CSV" in warning
    assert "report" not in warning  # open_labelled_set writes none, nor do calibrate and compare


def test_faceforensics_videos_read_at_several_compression_levels_are_said(tmp_path):
    """FaceForensics++ is read at every compression level by default: the c23 and c40 copies of one video
    counted as two independent files, the counts inflated and the intervals narrowed without a word."""
    from deepshield.evaluation.scoring import open_labelled_set
    from deepshield.faces.crop import CropPolicy

    root = tmp_path / "ffpp"
    for folder, names in (
        ("original_sequences/youtube", ("000", "001")),
        ("manipulated_sequences/Deepfakes", ("000_001",)),
    ):
        for level in ("c23", "c40"):
            (root / folder / level / "videos").mkdir(parents=True)
            for name in names:
                (root / folder / level / "videos" / f"{name}.mp4").write_bytes(
                    f"{level}/{name}, never decoded".encode()
                )
    (root / "original_sequences/youtube/c40/videos/002.mp4").write_bytes(b"at one level only")

    def notes(compressions):
        said: list[str] = []
        labelled = open_labelled_set(
            [root], CropPolicy(size=64), frames=1, progress=False, warn=said.append, ffpp_compressions=compressions
        )
        assert labelled.notes == said  # on stderr and in the report alike
        return said

    (warning,) = notes(None)
    assert warning.startswith("3 FaceForensics++ videos were read at several compression levels (c23, c40)")
    assert "--ffpp-compression c23" in warning
    assert notes(["c23"]) == []
    # One said as one: it was "1 FaceForensics++ videos were read".
    for level in ("c23", "c40"):
        for name in ("001.mp4", "002.mp4"):
            (root / "original_sequences/youtube" / level / "videos" / name).unlink(missing_ok=True)
        (root / "manipulated_sequences/Deepfakes" / level / "videos" / "000_001.mp4").unlink()
    (root / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4").write_bytes(b"at one level only")
    (warning,) = notes(None)
    assert warning.startswith("1 FaceForensics++ video was read at several compression levels (c23, c40)")


def test_a_file_listed_with_two_labels_is_an_error_naming_both(capsys, tiny_bundle, tmp_path):
    """A file listed twice under two labels kept its first label, said as "listed twice" like any copy: the
    figures were measured on one of two contradicting labels. A copy under the same label is still left out."""
    (tmp_path / "sub").mkdir()
    for name in ("sub/r1.png", "f1.png"):
        (tmp_path / name).write_bytes(f"{name}, never decoded: the listing is refused first".encode())
    listing = tmp_path / "set.csv"
    listing.write_text("path,label\nsub/r1.png,real\nf1.png,fake\n./sub/r1.png,fake\n")
    args = ["evaluate", str(listing), "--model", str(tiny_bundle), "--out", str(tmp_path / "rep"), "--no-progress"]
    assert main(args) == EXIT_USAGE
    error = capsys.readouterr().err
    assert f"{tmp_path / 'sub' / 'r1.png'} is labelled real (set/sub/r1.png, set.csv line 2) and fake " in error
    assert "(set/sub/r1.png, set.csv line 4): its labels contradict each other" in error
    assert not (tmp_path / "rep").exists()

    from deepshield.evaluation.scoring import list_items

    listing.write_text("path,label\nsub/r1.png,real\nf1.png,fake\n./sub/r1.png,real\n")
    items, (problem,) = list_items([listing])
    assert [item.label for item in items] == ["real", "fake"]
    assert problem.reason == "listed twice at set.csv line 4 (also as set/sub/r1.png, set.csv line 2)"


def test_a_real_only_perturbation_table_and_the_calibration_are_printed_as_figures():
    """On a real-only set the terminal's perturbation rows were "- / -" though the share of real files
    flagged is in metrics.json and on the page; the page printed the temperature as 4.396733992401202."""
    from deepshield.cli.evaluate import print_summary
    from deepshield.evaluation.report import render_html
    from deepshield.evaluation.summary import ModelInfo

    clean = {0: -2.0, 1: -1.0, 2: 0.5, 3: 1.0}  # at threshold 0.5 and temperature 1: two of four flagged
    scored = one_face_per_file([0, 0, 0, 0], {"clean": clean, "jpeg:50": {0: -2.0, 1: -1.0, 2: -0.5, 3: 1.0}})
    model = ModelInfo(temperature=4.396733992401202, offset=-0.123456)
    summary = summarize(scored, EvaluationSettings(bootstrap=0), model)
    printed = io.StringIO()
    print_summary(summary, printed)
    assert "  clean        real files flagged 0.500   files without a face: 0" in printed.getvalue()
    assert "  jpeg:50      real files flagged 0.250   files without a face: 0" in printed.getvalue()
    page = render_html(summary, {}, {}, "real media")
    assert "temperature</th><td class=l>4.397</td>" in page and "/ temperature))</th><td class=l>-0.1235</td>" in page


def test_the_terminal_says_how_files_without_a_face_enter_the_file_level():
    """The page says files without a face are left out of the file level (or scored 0); the terminal gave
    "file level (5 samples" beside "6 files", how the sixth was counted unsaid."""
    from deepshield.cli.evaluate import print_summary

    clean = {0: -2.0, 2: 1.5, 3: 0.5, 4: 2.0, 5: 3.0}  # file 1, a real, has no face
    scored = one_face_per_file([0, 0, 0, 1, 1, 1], {"clean": clean})
    for policy, line in (
        ("exclude", "file level (5 samples, threshold 0.500, score ≥ is called fake; 1 file without a face left out):"),
        ("zero", "file level (6 samples, threshold 0.500, score ≥ is called fake; 1 file without a face scored 0):"),
    ):
        printed = io.StringIO()
        print_summary(summarize(scored, EvaluationSettings(bootstrap=0, no_face=policy)), printed)
        assert line in printed.getvalue() and "face level (5 samples, threshold 0.500):" in printed.getvalue()
        # Which class is positive: said once, as the page says it (recall, precision read either way without it).
        assert printed.getvalue().count("score ≥ is called fake") == 1


def test_a_fake_only_perturbation_table_gives_the_fakes_caught():
    """Where a real-only set's rows give the real files flagged, a fake-only set's gave nothing: "- / -" on the
    terminal, every cell "–" on the page and null in metrics.json. Its rows give the fakes caught (recall)."""
    from deepshield.cli.evaluate import print_summary
    from deepshield.evaluation.report import render_html

    clean = {0: -2.0, 1: -1.0, 2: 0.5, 3: 1.0}  # at threshold 0.5 and temperature 1: two of four caught
    scored = one_face_per_file([1, 1, 1, 1], {"clean": clean, "jpeg:50": {0: -2.0, 1: -1.0, 2: -0.5, 3: 1.0}})
    summary = summarize(scored, EvaluationSettings(bootstrap=0))
    assert [row.file_recall for row in summary.perturbations] == [0.5, 0.25]
    printed = io.StringIO()
    print_summary(summary, printed)
    assert "  clean        fake files caught 0.500   files without a face: 0" in printed.getvalue()
    assert "  jpeg:50      fake files caught 0.250   files without a face: 0" in printed.getvalue()
    assert "<td>0.250</td><td>–</td><td>0</td>" in render_html(summary, {}, {}, "fakes")  # recall, FPR, no face
    # Its synthetic-face section said "Real faces flagged synthetic (at its threshold): " and nothing more.
    generated = summary.model_copy(update={"synthetic": summary})
    printed = io.StringIO()
    print_summary(generated, printed)
    # Its synthetic line said the share caught twice ("generated faces caught 50.0% (2 of 4); ... detected").
    (line,) = [text for text in printed.getvalue().splitlines() if text.startswith("  all ")]
    assert "generated faces detected" in line and "generated faces caught" not in line, line
    page = render_html(generated, {}, {}, "generated faces")
    assert "Real faces flagged synthetic (at its threshold): none to flag: the set has no real faces</p>" in page


def test_a_one_class_rate_over_few_files_carries_the_caution_an_interval_over_few_files_does():
    """Three real files called right read "true-negative rate 1.000 [1.000, 1.000]" with no word of the few
    files behind it, where a block with metrics over as few is cautioned; ten files need none."""
    from deepshield.cli.evaluate import print_summary
    from deepshield.evaluation.report import render_html

    few = summarize(one_face_per_file([0] * 3, {"clean": {0: -2.0, 1: -1.0, 2: -3.0}}), EvaluationSettings())
    assert (few.file.true_negative_rate.low, few.file.true_negative_rate.high) == (1.0, 1.0)
    assert few.file.caution == few.face.caution == few_files_caution(3, 0)
    printed = io.StringIO()
    print_summary(few, printed)
    assert printed.getvalue().count("\n  caution: only 3 real and 0 fake files") == 2  # under each level
    assert "† file level, face level: only 3 real and 0 fake files" in render_html(few, {}, {}, "few")
    enough = one_face_per_file([0] * FEW_FILES, {"clean": dict.fromkeys(range(FEW_FILES), -2.0)})
    assert summarize(enough, EvaluationSettings(bootstrap=50)).file.caution is None


def test_a_one_class_set_prints_the_share_it_calls_right_as_the_page_does():
    """A set of real files alone printed only "file level: metrics need both classes", while the page and
    metrics.json gave its true-negative rate with an interval; a fake-only set, its detection rate."""
    from deepshield.cli.evaluate import print_summary

    logits = {0: -2.0, 1: -1.0, 2: 0.5, 3: 1.0}  # at threshold 0.5 and temperature 1: two of four above
    for label, what in ((0, "true-negative rate 0.500"), (1, "detection rate 0.500")):
        summary = summarize(one_face_per_file([label] * 4, {"clean": logits}), EvaluationSettings(bootstrap=50))
        block = summary.file.true_negative_rate or summary.file.detection_rate
        assert block is not None
        printed = io.StringIO()
        print_summary(summary, printed)
        interval = f"[{block.low:.3f}, {block.high:.3f}]"
        called = "threshold 0.500, score ≥ is called fake"
        assert f"file level (4 samples, {called}): {what} {interval}; metrics need both classes" in (printed.getvalue())
        assert f"face level (4 samples, threshold 0.500): {what} {interval}" in printed.getvalue()


def test_a_tracking_store_that_cannot_be_used_is_refused_before_the_scoring(
    capsys, folder_dataset, tiny_bundle, tmp_path
):
    # The whole evaluation ran and its report was written, then exit 2 with advice of a --no-tracking
    # that evaluate does not have.
    out = tmp_path / "rep"
    code = main(["evaluate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--bootstrap", "0",
                 "--tracking-uri", "garbage://x", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and err.count("\n") == 1, err
    assert err.startswith("deepshield: error: the MLflow store garbage://x cannot be used (")
    assert err.rstrip().endswith("give another --tracking-uri, or leave it out (nothing is logged to MLflow then)")
    assert "--no-tracking" not in err and not out.exists()


class _Images(HTMLParser):
    """Each picture of a page: its alt text, and the caption of the figure it is in."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self._figure: list[dict[str, str]] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "figure":
            self._figure = []
        elif tag == "figcaption" and self._figure is not None:
            self._caption = []
        elif tag == "img":
            image = {"alt": dict(attrs).get("alt") or "", "caption": ""}
            self.images.append(image)
            if self._figure is not None:
                self._figure.append(image)

    def handle_data(self, data):
        if self._caption is not None:
            self._caption.append(data)

    def handle_endtag(self, tag):
        if tag == "figcaption" and self._caption is not None and self._figure is not None:
            for image in self._figure:
                image["caption"] = image["caption"] or "".join(self._caption)
            self._caption = None
        elif tag == "figure":
            self._figure = None


def test_each_picture_of_the_report_says_what_it_shows(report):
    # A screen reader read the gallery as "crop, heatmap" twenty times over, and each plot by its caption alone
    # ("ROC curves"), with no figure of what it shows.
    metrics = json.loads((report / "metrics.json").read_text())
    parser = _Images()
    parser.feed((report / "report.html").read_text(encoding="utf-8"))
    alts = [image["alt"] for image in parser.images]
    assert alts and not {"crop", "heatmap"} & set(alts)
    from deepshield.evaluation.report import _beside, _num

    threshold = metrics["settings"]["threshold"]
    worst = metrics["worst"]["highest_real"][0]
    name = Path(worst["path"]).name
    face, score = _beside(worst["face_probability"], threshold), _beside(worst["score"], threshold)
    assert f"{name}: most suspicious face, score {face} (file score {score})" in alts
    assert f"{name}: heatmap of that face (red: looks manipulated)" in alts
    plots = {image["caption"]: image["alt"] for image in parser.images if image["caption"]}
    auc = [_num(metrics[level]["metrics"]["auc"]["value"]) for level in ("file", "face")]
    assert f"AUC file level {auc[0]}, face level {auc[1]}" in plots["ROC curves"]
    assert "AP file level" in plots["precision-recall curves"] and "calibration error" in plots["reliability diagram"]
    assert f"the threshold {threshold:.4f} dashed" in plots["file score histogram per class"]
    assert "under each perturbation" in plots["AUC under perturbations"]


class _Tables(HTMLParser):
    """Each table of a page: its caption and its rows, a row a list of (tag, scope, text) per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._into: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "caption":
            self._into = []
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td"):
            self.tables[-1]["rows"][-1].append([tag, dict(attrs).get("scope"), ""])
            self._into = []

    def handle_data(self, data):
        if self._into is not None:
            self._into.append(data)

    def handle_endtag(self, tag):
        if tag == "caption" and self._into is not None:
            self.tables[-1]["caption"] = "".join(self._into)
        elif tag in ("th", "td") and self._into is not None:
            self.tables[-1]["rows"][-1][-1][2] = "".join(self._into)
        if tag in ("caption", "th", "td"):
            self._into = None


def test_each_table_of_the_report_is_named_and_its_rows_and_columns_headed(report):
    # The metrics tables' rows were named by plain cells: a screen reader going down the AUC column read
    # "0.605" with no word of "face level"; and no table had a name, seven alike in a screen reader's list.
    parser = _Tables()
    parser.feed((report / "report.html").read_text(encoding="utf-8"))
    tables = {table["caption"]: table["rows"] for table in parser.tables}
    assert len(tables) == len(parser.tables) >= 10 and "" not in tables
    for caption, rows in tables.items():
        body = [row for row in rows if row[0][:2] == ["th", "row"]]  # the rest: a row of column headers on top
        assert body and rows[len(rows) - len(body) :] == body and len(rows) - len(body) <= 1, caption
        assert all(scope == "col" for row in rows[: len(rows) - len(body)] for tag, scope, _ in row if tag == "th")
    headline = tables["headline metrics"]
    assert [cell[2] for cell in headline[0][:5]] == ["", "files", "samples", "fakes", "AUC"]
    assert [row[0][2].rstrip("†") for row in headline[1:]] == ["file level", "face level"]
    assert [row[0][2] for row in tables["files by label and call at the threshold"][1:]] == ["real", "fake"]
    assert [row[0][2] for row in tables["metrics under each perturbation"][1:]][:2] == ["clean", "jpeg:90"]
    assert "blank.png" in tables["files without a face"][1][0][2]


def test_a_videos_gallery_picture_gives_its_face_its_own_score(tmp_path):
    # A video's score is its rule over its tracks, not its most suspicious face's: the crop's text gave the face
    # the file's 0.412, where the face scored 0.931 (as the caption under it says).
    from deepshield.evaluation.report import _gallery, _png

    crop = _png(np.zeros((8, 8, 3), np.uint8), tmp_path / "crop.png")
    entry = {
        "path": "real/clip.mp4",
        "video": True,
        "score": 0.412,
        "face_probability": 0.931,
        "frame_index": 7,
        "face_index": 0,
        "source": "s",
        "method": "m",
        "crop": crop,
        "heatmap": crop,
        "tracks": [],
    }
    parser = _Images()
    parser.feed(_gallery([entry], "real files", 0.5, "flagged"))
    assert parser.images[0]["alt"] == "clip.mp4: most suspicious face, score 0.931 (file score 0.412)"
    assert "score 0.412 (face 0.931)" in parser.images[0]["caption"]


@pytest.fixture(scope="module")
def browser():
    from tests.test_serving_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

    with _require_browser()() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.mark.browser
def test_the_report_reads_on_a_phone_its_wide_tables_scrolling_alone(browser, report):
    # At 320 px (a phone, or 200% zoom of a 640 px window) the metrics' thirteen columns pushed the whole page
    # sideways, the text beside them too; on a phone, with no viewport set, the page was laid out 980 px wide.
    context = browser.new_context(viewport={"width": 320, "height": 640}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto((report / "report.html").as_uri())
        laid_out = page.evaluate(
            """() => ({
                width: window.innerWidth,
                page: document.documentElement.scrollWidth,
                tables: [...document.querySelectorAll('table')].map(t => {
                    const box = t.parentElement, style = getComputedStyle(box);
                    return {inside: box.getBoundingClientRect().right <= innerWidth + 0.5, scrolls: style.overflowX,
                            wider: box.scrollWidth > box.clientWidth};
                }),
            })"""
        )
    finally:
        context.close()
    assert laid_out["width"] == 320 and laid_out["page"] <= 320
    tables = laid_out["tables"]
    assert tables and all(t["inside"] for t in tables)
    assert any(t["wider"] for t in tables) and all(t["scrolls"] == "auto" for t in tables if t["wider"])


@pytest.mark.browser
def test_printed_the_reports_pictures_keep_their_captions_and_headings_their_sections(browser, report):
    # Printed, a gallery entry was cut across two pages (its crops on one, the file it shows on the next), a
    # track's crops parted from their score, and a heading could end a page, its section on the next.
    page = browser.new_page()
    try:
        page.goto((report / "report.html").as_uri())
        page.emulate_media(media="print")
        breaks = page.evaluate(
            """() => Object.fromEntries(['.gallery figure', '.gallery .track', '.plots figure', 'tr', 'h2'].map(
                what => [what, [...document.querySelectorAll(what)].map(e => {
                    const style = getComputedStyle(e);
                    return style.breakInside + ' ' + style.breakAfter;
                })]))"""
        )
    finally:
        page.close()
    assert breaks[".gallery figure"] and breaks[".gallery .track"] and breaks[".plots figure"]
    for what in (".gallery figure", ".gallery .track", ".plots figure", "tr"):
        assert {b.split()[0] for b in breaks[what]} == {"avoid"}, what
    assert {b.split()[1] for b in breaks["h2"]} == {"avoid"}


def test_a_report_whose_write_fails_keeps_the_earlier_one_whole(
    capsys, folder_dataset, tiny_bundle, tmp_path, monkeypatch
):
    """A full disk while `evaluate` wrote its report left scores.csv cut short where it failed (its header
    only, here): each file is now written whole or not at all, the earlier report's kept."""
    import errno

    from deepshield.csv_rows import CsvRows

    out = tmp_path / "rep"
    args = ["evaluate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--frames", "2"]
    assert main([*args, "--bootstrap", "0", "--no-progress"]) == EXIT_OK
    before = {name: (out / name).read_bytes() for name in ("scores.csv", "files.csv", "report.html")}
    writerow = CsvRows.writerow
    rows = iter(range(10**6))

    def full_disk(self, row):
        if next(rows) == 1:  # after the header
            raise OSError(errno.ENOSPC, "No space left on device")
        return writerow(self, row)

    monkeypatch.setattr(CsvRows, "writerow", full_disk)
    capsys.readouterr()
    assert main([*args, "--bootstrap", "0", "--no-progress"]) == EXIT_USAGE
    assert capsys.readouterr().err.endswith(f"\ndeepshield: error: {out / 'scores.csv'}: No space left on device\n")
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob("*.part"))


def test_a_report_written_removes_the_temporary_files_killed_writers_left(folder_dataset, tiny_bundle, tmp_path):
    """An evaluate killed while it wrote its report left <file>.<its pid>.part beside it for good: atomic_file's
    sweep of such files ran for checkpoints, caches and the scan page only."""
    from tests.conftest import left_by_a_killed_writer

    out = tmp_path / "rep"
    left = left_by_a_killed_writer(
        out / "metrics.json", out / "files.csv", out / "report.html", out / "plots" / "roc.png"
    )
    args = ["evaluate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--frames", "2"]
    assert main([*args, "--bootstrap", "0", "--no-progress"]) == EXIT_OK
    assert [path for path in left if path.exists()] == []


def test_a_report_whose_logging_is_stopped_leaves_its_mlflow_run_killed(tmp_path, mlflow_store):
    # Ctrl-C while the report was stored (a slow artifact server) left the run RUNNING for good.
    import argparse

    from mlflow.tracking import MlflowClient

    from deepshield.cli.args import log_to_mlflow

    uri = f"sqlite:///{mlflow_store(tmp_path / 'm.db')}"
    args = argparse.Namespace(tracking_uri=uri, experiment="e", command="evaluate")

    def stopped(tracker):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        log_to_mlflow(args, "report", stopped)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.info.status == "KILLED"


def test_the_perturbation_plot_draws_no_interval_where_none_was_measured(monkeypatch, tmp_path):
    # With --bootstrap 0, and on rows whose interval could not be had, each file AUC bar wore the caps of a
    # zero-length interval, read as an AUC measured to the point.
    from deepshield.evaluation import plots
    from deepshield.evaluation.summary import PerturbationRow

    def row(condition, auc, low=None, high=None):
        return PerturbationRow(
            condition=condition, faces=4, files_with_face=4, files_without_face=0, file_auc=auc, file_auc_low=low,
            file_auc_high=high, file_auc_change=None, face_auc=auc, face_auc_change=None,
            file_balanced_accuracy=None, file_recall=None, file_false_positive_rate=None, by_source_file_auc={},
        )  # fmt: skip

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.append(figure) or path)
    plots.perturbation_plot([row("clean", 0.9, 0.8, 0.95), row("jpeg:50", 0.7)], tmp_path / "p.png", 0.95)
    caps = next(c for c in drawn[0].axes[0].containers if hasattr(c, "has_yerr")).lines[1]
    tops = caps[1].get_ydata()
    assert tops[0] == pytest.approx(0.95)
    assert np.isnan(tops[1])


def test_bench_evaluate_takes_perturb_as_evaluate_does_and_tables_the_lost_faces(monkeypatch, capsys):
    """bench_evaluate parsed --perturb its own way (given twice, the first dropped; checked only after loading
    the model) and its table left out the files each perturbation lost their face, by label."""
    import types

    from deepshield.errors import EXIT_USAGE, exit_status
    from deepshield.evaluation.summary import PerturbationRow
    from tests.script_support import BENCH, load_script

    bench = load_script("bench_evaluate", BENCH)
    monkeypatch.setattr("sys.argv", ["bench_evaluate.py", "/nowhere", "--perturb", "jpeg:90", "--perturb", "blur:-1"])
    assert exit_status(bench.main, "bench_evaluate") == EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines() == [
        "bench_evaluate: error: blur sigma must be above 0 and at most 50 pixels, got -1"
    ]
    lost = PerturbationRow(
        condition="resize:0.25", faces=4, files_with_face=4, files_without_face=3, file_auc=0.8, file_auc_low=None,
        file_auc_high=None, file_auc_change=-0.1, fakes_lost=2, reals_lost=1, face_auc=0.8, face_auc_change=None,
        file_balanced_accuracy=None, file_recall=None, file_false_positive_rate=None, by_source_file_auc={},
    )  # fmt: skip
    summary = types.SimpleNamespace(by_source={}, perturbations=[lost])
    assert bench.perturbation_rows(summary)[-1].endswith("| 3 (lost here: 2 fake, 1 real) |")


@pytest.mark.parametrize(
    ("given", "measured"),
    [([], None), (["--perturb"], []), (["--perturb", "jpeg:90"], ["jpeg:90"])],
)
def test_bench_evaluate_perturb_with_no_spec_measures_the_clean_set_only(monkeypatch, given, measured):
    """`--perturb` alone (the clean set only) became an argparse error when bench_evaluate took evaluate's --perturb."""
    from deepshield.errors import exit_status
    from tests.script_support import BENCH, load_script

    bench = load_script("bench_evaluate", BENCH)
    seen = []
    monkeypatch.setattr(bench, "parse_perturbations", lambda specs: seen.append(specs) or [])
    monkeypatch.setattr("sys.argv", ["bench_evaluate.py", "/nowhere", *given])
    assert exit_status(bench.main, "bench_evaluate") == 2  # no bundle at /nowhere: stops after parsing
    assert seen == [bench.DEFAULT_PERTURB if measured is None else measured]


def test_evaluate_perturb_with_no_spec_measures_the_clean_set_only():
    parser = argparse.ArgumentParser()
    add_perturb_argument(parser)
    assert parser.parse_args(["--perturb"]).perturb == []
    assert parser.parse_args(["--perturb", "jpeg:90", "--perturb", "blur:1"]).perturb == ["jpeg:90", "blur:1"]
