"""The synthetic-face score: a second output of the same graph, calibrated on its own, combined with
the manipulation score by the documented verdict rule (inference.verdict), in images and videos."""

from __future__ import annotations

import csv
import html
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from deepshield.errors import BundleError, DeepShieldError
from deepshield.evaluation.report import log_report
from deepshield.evaluation.shown import fraction_text
from deepshield.evaluation.summary import EvaluationSummary
from deepshield.faces.crop import CropPolicy
from deepshield.inference.analysis import Detector
from deepshield.inference.results import SCOPE_WITH_SYNTHETIC
from deepshield.inference.runtime import FaceScores, OnnxClassifier, read_card
from deepshield.inference.verdict import ScoreRule, combine, shown_probability, suspicion
from deepshield.inference.video_rule import VideoRule
from deepshield.models.card import (
    CARD_FILE,
    SYNTHETIC_OUTPUT,
    Calibration,
    InconclusiveBand,
    ModelCard,
    SyntheticScoreInfo,
    card_outputs,
)
from deepshield.models.export import export_bundle
from deepshield.models.network import DeepfakeNet, central_window, normalize_batch
from deepshield.training.config import load_config
from tests.test_analysis import FrameScriptDetector, box, scripted_video
from tests.test_bundle import face_like_crops

SYNTHETIC_CALIBRATION = Calibration(
    temperature=2.0,
    offset=0.5,  # Platt scaling: every path (detector, evaluate, calibrate) applies it alike
    threshold=0.7,
    fitted_on="test",
    inconclusive=InconclusiveBand(low=0.6, high=0.8, fitted_on="test"),
)
MANIPULATION_CALIBRATION = Calibration(
    temperature=1.0,
    threshold=0.5,
    fitted_on="test",
    inconclusive=InconclusiveBand(low=0.4, high=0.6, fitted_on="test"),
)


def two_output_card(size: int = 64) -> ModelCard:
    return ModelCard(
        name="two-output",
        version="1",
        architecture="tiny",
        input_size=size,
        crop_policy=CropPolicy(size=size),
        outputs=card_outputs(True),
        calibration=MANIPULATION_CALIBRATION,
        synthetic=SyntheticScoreInfo(calibration=SYNTHETIC_CALIBRATION, pooling="central 6x6 of 8x8 (test)"),
    )


def export_two_output_bundle(folder) -> tuple[DeepfakeNet, object]:
    """A tiny random two-output network exported as a real bundle (64 px; heads giving logits of a few units)."""
    torch.manual_seed(3)
    net = DeepfakeNet("tiny", 64, pretrained=False, synthetic_center=1 / 1.5).eval()
    torch.nn.init.normal_(net.head.weight, std=0.5)
    torch.nn.init.normal_(net.synthetic_head.weight, std=0.5)
    return net, export_bundle(net, two_output_card(), folder)


@pytest.fixture(scope="module")
def two_output_bundle(tmp_path_factory):
    return export_two_output_bundle(tmp_path_factory.mktemp("bundle") / "two")


@pytest.mark.parametrize("output", [0, 2])  # the face-swap logit, the synthetic one
def test_a_synthetic_score_that_is_not_a_number_is_the_models_fault(two_output_bundle, astronaut, monkeypatch, output):
    _net, bundle = two_output_bundle
    classifier = OnnxClassifier(bundle)
    real_run = classifier._run

    def with_a_nan(batch):
        outputs = real_run(batch)
        outputs[output] = np.where(np.arange(len(outputs[output])) == 1, np.nan, outputs[output]).astype(np.float32)
        return outputs

    monkeypatch.setattr(classifier, "_run", with_a_nan)
    with pytest.raises(RuntimeError, match="gave a score that is not a number"):
        classifier.score(face_like_crops(astronaut, 64, 3))


def test_runtime_reads_both_outputs_of_one_pass(two_output_bundle, astronaut):
    net, bundle = two_output_bundle
    classifier = OnnxClassifier(bundle)
    assert classifier.outputs == ["logit", "cam", SYNTHETIC_OUTPUT] and classifier.has_synthetic
    crops = face_like_crops(astronaut, 64, 20)
    scores = classifier.score(crops)
    with torch.no_grad():
        expected = net.forward_all(normalize_batch(torch.from_numpy(crops), classifier.card.normalization))
    assert np.ptp(expected.synthetic_logit.numpy()) > 0.05  # the crops really give different synthetic answers
    np.testing.assert_allclose(scores.logits, expected.logit.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(scores.synthetic_logits, expected.synthetic_logit.numpy(), rtol=1e-3, atol=1e-4)
    # Each score through its own calibration: the synthetic one's temperature 2 and offset 0.5.
    np.testing.assert_allclose(
        scores.synthetic_probabilities,
        1 / (1 + np.exp(-(scores.synthetic_logits.astype(np.float64) - 0.5) / 2.0)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        scores.probabilities, 1 / (1 + np.exp(-scores.logits.astype(np.float64) / 1.0)), rtol=1e-6
    )
    assert classifier.score(crops[:0]).synthetic_logits.shape == (0,)


def test_the_card_carries_both_calibrations_and_the_pooled_region(two_output_bundle):
    _, bundle = two_output_bundle
    card = json.loads((bundle / CARD_FILE).read_text())
    assert list(card["outputs"]) == ["logit", "cam", "synthetic_logit"]
    assert card["calibration"]["threshold"] == 0.5 and card["calibration"]["temperature"] == 1.0
    assert (
        card["synthetic"]["calibration"]["threshold"] == 0.7
        and card["synthetic"]["calibration"]["inconclusive"]["low"] == 0.6
    )
    assert "central" in card["synthetic"]["pooling"]
    assert card["synthetic"]["verdict_rule"].startswith("each score is called by its own threshold")


def test_the_synthetic_head_pools_the_face_box_not_the_context():
    # 1/1.5 of the side, centred: 5x5 at 160 px -> the central 3x3, 7x7 at 224 px -> 5x5.
    assert (
        central_window(5, 1 / 1.5) == (1, 4)
        and central_window(7, 1 / 1.5) == (1, 6)
        and central_window(8, 1 / 1.5) == (1, 7)
    )
    net = DeepfakeNet("tiny", 64, pretrained=False, synthetic_center=1 / 1.5).eval()
    image = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        before = net.forward_all(image)
        image[:, :, :1, :] = 5.0  # the top row: context, outside the central cells' receptive field (rows 1-15 on)
        after = net.forward_all(image)
    assert before.logit.item() != after.logit.item()  # the manipulation head sees the whole crop
    assert before.synthetic_logit.item() == after.synthetic_logit.item()
    assert "central 6x6 of the 8x8" in net.synthetic_pooling()


def test_one_output_bundles_still_load_without_a_synthetic_score(tiny_bundle, detector, astronaut):
    classifier = OnnxClassifier(tiny_bundle)
    assert classifier.card.synthetic is None and classifier.outputs == ["logit", "cam"]
    scores = classifier.score(face_like_crops(astronaut, 64, 3))
    assert scores.synthetic_logits is None and scores.synthetic_probabilities is None
    result = detector.analyze_image(astronaut)
    assert result.synthetic_threshold is None and result.verdict.synthetic_probability is None
    assert result.faces[0].synthetic_label is None and result.verdict.verdict_driver == "manipulation"
    assert "does not detect fully AI-generated faces" in result.scope


def test_a_card_and_graph_that_disagree_on_outputs_are_refused(two_output_bundle, tiny_bundle, tmp_path):
    with pytest.raises(ValueError, match="synthetic block disagree"):
        ModelCard(
            name="x",
            version="1",
            architecture="tiny",
            input_size=64,
            crop_policy=CropPolicy(size=64),
            outputs=card_outputs(True),
        )
    # A one-output graph whose card claims a synthetic score.
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    card = ModelCard.model_validate_json((broken / CARD_FILE).read_text())
    claimed = card.model_copy(update={"outputs": card_outputs(True), "synthetic": SyntheticScoreInfo(pooling="x")})
    (broken / CARD_FILE).write_text(claimed.model_dump_json())
    with pytest.raises(BundleError, match=r"outputs \['logit', 'cam'\], but its model card says"):
        OnnxClassifier(broken)
    net = DeepfakeNet("tiny", 64, pretrained=False)
    with pytest.raises(ValueError, match="must agree"):
        export_bundle(net, two_output_card(), tmp_path / "mismatch")


# --- the verdict rule ------------------------------------------------------------------------

MANIPULATION_RULE = ScoreRule(0.5, MANIPULATION_CALIBRATION.inconclusive)
SYNTHETIC_RULE = ScoreRule(0.7, SYNTHETIC_CALIBRATION.inconclusive)


@pytest.mark.parametrize(
    ("manipulation", "synthetic", "label", "driver"),
    [
        (
            0.2,
            0.3,
            "no_signs_found",
            "manipulation",
        ),  # both below: manipulation 0.3 below, synthetic 0.4 below its threshold
        (0.9, 0.3, "likely_manipulated", "manipulation"),  # manipulation above
        (0.2, 0.9, "likely_manipulated", "synthetic"),  # synthetic above
        (0.9, 0.95, "likely_manipulated", "manipulation"),  # both above: manipulation 0.40 over vs synthetic 0.25 over
        (0.65, 0.99, "likely_manipulated", "synthetic"),  # both above: synthetic 0.29 over vs 0.15
        (0.2, 0.65, "inconclusive", "synthetic"),  # inconclusive beats no signs found, whatever the margins
        (0.45, 0.1, "inconclusive", "manipulation"),
    ],
)
def test_the_more_severe_call_drives_the_verdict(manipulation, synthetic, label, driver):
    verdict = combine(manipulation, MANIPULATION_RULE, synthetic, SYNTHETIC_RULE)
    assert (verdict.label, verdict.driver) == (label, driver)
    assert verdict.manipulation_label == MANIPULATION_RULE.classify(manipulation)
    assert verdict.synthetic_label == SYNTHETIC_RULE.classify(synthetic)


def test_the_most_suspicious_is_the_more_severe_call_then_the_larger_margin_over_its_own_threshold():
    def place(label, driver, probability, synthetic, counted=True):
        return suspicion(label, driver, probability, synthetic, 0.556, 0.6, counted)

    generated = place("likely_manipulated", "synthetic", 0.2, 0.9)  # 0.30 over the synthetic threshold
    swapped = place("likely_manipulated", "manipulation", 0.7, 0.1)  # 0.144 over the face-swap threshold
    band = place("inconclusive", "manipulation", 0.52, 0.95)  # a milder call, whatever its other score
    short = place("likely_manipulated", "manipulation", 0.99, None, counted=False)
    assert sorted([short, band, swapped, generated], reverse=True) == [generated, swapped, band, short]
    # Without a synthetic score (or its threshold), the face-swap score's margin decides.
    assert suspicion("inconclusive", "manipulation", 0.54, None, 0.5, None)[2] == pytest.approx(0.04)


def test_without_a_synthetic_score_the_manipulation_score_decides():
    verdict = combine(0.9, MANIPULATION_RULE, None, None)
    assert (verdict.label, verdict.driver, verdict.synthetic_label) == ("likely_manipulated", "manipulation", None)


class TwoScoreClassifier:
    """Stands in for a two-output OnnxClassifier: scripted (manipulation, synthetic) logits in crop order."""

    def __init__(self, logits: list[tuple[float, float]]) -> None:
        self.card = two_output_card(32)
        self.logits = list(logits)

    def score(self, crops: np.ndarray, synthetic_crops: np.ndarray | None = None) -> FaceScores:
        taken, self.logits = self.logits[: len(crops)], self.logits[len(crops) :]
        manipulation, synthetic = (np.array(column, np.float32) for column in zip(*taken))
        cams = np.repeat(manipulation[:, None, None], 4, axis=1).repeat(4, axis=2)
        return FaceScores(
            manipulation,
            1 / (1 + np.exp(-manipulation.astype(np.float64))),
            cams,
            synthetic,
            1 / (1 + np.exp(-synthetic.astype(np.float64) / 2.0)),
        )


def logit_for(probability: float, temperature: float = 1.0) -> float:
    return float(np.log(probability / (1 - probability)) * temperature)


def test_the_uncertain_detection_clause_is_about_the_face_behind_the_verdict(astronaut, detector):
    # Two faces: a sure one with the higher face-swap score (no signs found) and an unsure one whose
    # synthetic-face score calls the file. The clause was judged on the highest face-swap score's face:
    # silent here, and said of the sure face when the roles were swapped.
    from tests.test_analysis import UnsureDetector

    two_faces = np.concatenate([astronaut] * 2, axis=1)
    unsure = UnsureDetector(detector.faces, [0.95, 0.58])
    behind = [(logit_for(0.35), logit_for(0.1, 2.0)), (logit_for(0.2), logit_for(0.97, 2.0))]
    result = Detector(TwoScoreClassifier(behind), unsure).analyze_image(two_faces)
    assert (result.verdict.label, result.verdict.verdict_driver) == ("likely_manipulated", "synthetic")
    assert result.verdict.reason.endswith(
        "is an uncertain detection (detector confidence 58%): check that it is a face"
    )
    # Each score's highest, which are two faces' here: the face-swap score was called the most suspicious
    # face's, and the face behind the verdict is the other one.
    assert "; highest face-swap score of a face: 35.0%;" in result.verdict.reason
    assert "most suspicious face:" not in result.verdict.reason
    swapped = [(logit_for(0.2), logit_for(0.97, 2.0)), (logit_for(0.35), logit_for(0.1, 2.0))]
    result = Detector(TwoScoreClassifier(swapped), unsure).analyze_image(two_faces)
    assert result.verdict.verdict_driver == "synthetic" and "uncertain detection" not in result.verdict.reason


@pytest.mark.parametrize(
    ("manipulation", "synthetic", "label", "driver", "headline"),
    [
        (
            0.2,
            0.3,
            "no_signs_found",
            "manipulation",
            "No signs of face swapping or AI generation found — this does not prove the file is authentic: "
            "the model misses many face edits and many newer face swaps",
        ),
        (0.9, 0.3, "likely_manipulated", "manipulation", "Likely manipulated"),
        # A swap tool that regenerates the face (e4s) raises this score too: not "a fully generated face".
        (
            0.2,
            0.9,
            "likely_manipulated",
            "synthetic",
            "Likely AI-generated face: signs of an AI-generated face found, either wholly generated or a real "
            "face a swap tool regenerated",
        ),
        (0.9, 0.95, "likely_manipulated", "manipulation", "Likely manipulated"),
    ],
)
def test_images_show_both_scores_and_the_driver(astronaut, detector, manipulation, synthetic, label, driver, headline):
    classifier = TwoScoreClassifier([(logit_for(manipulation), logit_for(synthetic, 2.0))])
    result = Detector(classifier, detector.faces).analyze_image(astronaut)
    (face,) = result.faces
    assert face.probability == pytest.approx(manipulation) and face.synthetic_probability == pytest.approx(synthetic)
    assert (face.label, face.verdict_driver) == (label, driver)
    assert (result.verdict.label, result.verdict.verdict_driver) == (label, driver)
    assert result.verdict.headline.startswith(headline)
    assert "authentic" not in result.verdict.headline.replace(
        "does not prove the file is authentic", ""
    )  # never claimed
    assert result.verdict.synthetic_probability == pytest.approx(synthetic)
    # the reason leads with the score that made the call
    shown = shown_probability(synthetic if driver == "synthetic" else manipulation)
    lead = (
        f"highest synthetic-face score {shown}, "
        if driver == "synthetic"
        else f"highest face-swap score of a face: {shown}; "
    )
    assert result.verdict.reason.startswith(lead) and result.verdict.reason.count("drives the verdict") == 1
    # The score named as the page and scan name it ("the manipulation score drives the verdict" beside them).
    assert ("the face-swap score drives the verdict" in result.verdict.reason) == (driver == "manipulation")
    assert result.synthetic_threshold == 0.7 and result.synthetic_inconclusive.high == 0.8
    data = json.loads(result.model_dump_json())
    assert (
        data["faces"][0]["synthetic_probability"] == pytest.approx(synthetic)
        and data["verdict"]["verdict_driver"] == driver
    )
    assert "fully AI-generated" in data["scope"]


def test_a_video_aggregates_the_synthetic_score_per_track_by_the_video_rule(monkeypatch):
    scripted_video(monkeypatch, 4)
    script = {i: [box(100, 100)] for i in range(4)}
    synthetic = [0.3, 0.95, 0.9, 0.5]
    manipulation = [0.2, 0.1, 0.15, 0.3]
    logits = [(logit_for(m), logit_for(p, 2.0)) for m, p in zip(manipulation, synthetic)]
    result = Detector(TwoScoreClassifier(logits), FrameScriptDetector(script)).analyze_video("unused.mp4", frames=4)
    (track,) = result.tracks
    assert track.synthetic_score == pytest.approx(VideoRule().track_score(synthetic)) == pytest.approx(0.925)
    assert track.score == pytest.approx(0.25) and [p.synthetic_probability for p in track.points] == pytest.approx(
        synthetic
    )
    # the frame shown (thumbnail, heatmap, Look closer) is where the synthetic score behind the call peaks
    assert track.peak_frame_index == track.points[1].frame_index
    assert (track.label, track.verdict_driver, track.manipulation_label) == (
        "likely_manipulated",
        "synthetic",
        "no_signs_found",
    )
    assert result.verdict.verdict_driver == "synthetic" and result.verdict.synthetic_probability == pytest.approx(0.925)
    assert [p.max_synthetic_probability for p in result.timeline] == pytest.approx(synthetic)


def test_a_synthetic_threshold_for_a_model_without_the_score_is_refused(detector):
    with pytest.raises(ValueError, match="no synthetic-face score"):
        Detector(detector.classifier, detector.faces, synthetic_threshold=0.5)


# --- REST API ----------------------------------------------------------------------------------


def test_the_api_carries_both_scores_and_the_driver(two_output_bundle, astronaut, tiny_bundle):
    from fastapi.testclient import TestClient

    from deepshield.serving.app import create_app
    from deepshield.serving.settings import ServerSettings
    from tests.test_serving_api import encode, upload

    _, bundle = two_output_bundle
    detector = Detector.from_bundle(bundle)
    expected = detector.analyze_image(astronaut)
    with TestClient(create_app(detector, ServerSettings())) as client:
        body = client.post("/v1/analyze", files=upload(encode(astronaut))).json()
        card = client.get("/v1/model").json()
    (face,) = body["faces"]
    assert face["synthetic_probability"] == pytest.approx(
        expected.faces[0].synthetic_probability, abs=1e-3
    )  # JPEG upload
    # Face-swap 0.51 inside its band (0.4 to 0.6), synthetic 0.43 below its own (0.5 to 0.8): the more severe
    # call, inconclusive, is the face-swap score's.
    assert (face["manipulation_label"], face["synthetic_label"]) == ("inconclusive", "no_signs_found")
    assert (face["label"], face["verdict_driver"]) == ("inconclusive", "manipulation")
    assert body["verdict"]["verdict_driver"] == face["verdict_driver"] and body["synthetic_threshold"] == 0.7
    assert (
        body["synthetic_inconclusive"]["low"] == 0.5  # 0.6 fitted, reaching down to even odds
        and "each score is called by its own threshold" in body["verdict_rule"]
    )
    assert card["synthetic"]["calibration"]["threshold"] == 0.7
    with TestClient(create_app(Detector.from_bundle(tiny_bundle), ServerSettings())) as client:
        plain = client.post("/v1/analyze", files=upload(encode(astronaut))).json()
    assert plain["faces"][0]["synthetic_probability"] is None and plain["synthetic_threshold"] is None
    assert plain["verdict"]["verdict_driver"] == "manipulation"


# --- scan --------------------------------------------------------------------------------------


def test_scan_shows_both_scores_and_the_driver(two_output_bundle, astronaut, tmp_path, capsys):
    import cv2

    from deepshield.cli.main import EXIT_OK, main

    _, bundle = two_output_bundle
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    expected = Detector.from_bundle(bundle).analyze_image(photo).verdict
    assert main(["scan", str(photo), "--model", str(bundle), "--format", "json"]) == EXIT_OK
    (row,) = json.loads(capsys.readouterr().out)
    assert row["synthetic_probability"] == pytest.approx(expected.synthetic_probability)
    assert row["verdict_driver"] == expected.verdict_driver and row["verdict"] == expected.label
    assert main(["scan", str(photo), "--model", str(bundle)]) == EXIT_OK
    header, line, *rest = capsys.readouterr().out.splitlines()

    def cell(column: str) -> str:  # read by the header's position: a CAUTION may be two words
        return line[header.index(column) :].split()[0]

    assert cell("P(SYNTH)") == shown_probability(expected.synthetic_probability)
    assert cell("DRIVER") == expected.verdict_driver
    assert any("fully AI-generated" in text for text in rest)


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluate_reports_the_synthetic_score_per_source_and_its_real_face_rate(two_output_bundle, tmp_path, capsys):
    from deepshield.cli.main import EXIT_OK, main
    from deepshield.evaluation.metrics import detection_metrics
    from deepshield.faces.detector import FaceDetector
    from tests.face_data import write_generated_faces, write_real_faces

    _, bundle = two_output_bundle
    root = tmp_path / "generated-set"
    write_real_faces(root / "real", 4)
    write_generated_faces(root / "fake", 4)
    out = tmp_path / "report"
    command = ["evaluate", str(root), "--model", str(bundle), "--out", str(out), "--bootstrap", "50"]
    assert main([*command, "--no-progress", "--perturb", "blur:3"]) == EXIT_OK
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    synthetic = metrics["synthetic"]
    # The file AUC is that of the highest synthetic probability the detector gives each file's faces.
    detector = Detector(OnnxClassifier(bundle), FaceDetector())
    labels, scores = [], []
    for label, folder in ((0, "real"), (1, "fake")):
        for path in sorted((root / folder).iterdir()):
            labels.append(label)
            scores.append(max(f.synthetic_probability for f in detector.analyze_image(path).faces))
    expected = detection_metrics(np.array(labels), np.array(scores), 0.7)
    # Each file's synthetic-face score and its own call beside the face-swap score's (`called` is that one's
    # alone: a generated face scan calls likely AI-generated read "no_signs_found" there); each face's too.
    by_path = dict(zip([str(p) for folder in ("real", "fake") for p in sorted((root / folder).iterdir())], scores))
    with (out / "files.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    band = ScoreRule.from_calibration(SYNTHETIC_CALIBRATION).band
    assert [float(row["synthetic_score"]) for row in rows] == pytest.approx(
        [by_path[r["path"]] for r in rows], abs=1e-6
    )
    assert [row["synthetic_called"] for row in rows] == [band.classify(by_path[r["path"]]) for r in rows]
    with (out / "scores.csv").open(newline="") as handle:
        faces = [row for row in csv.DictReader(handle) if row["condition"] == "clean"]
    per_file = {p: max(float(r["synthetic_probability"]) for r in faces if r["path"] == p) for p in by_path}
    assert per_file == pytest.approx(by_path, abs=1e-6)  # an image's score: its most suspicious face's
    assert synthetic["file"]["metrics"]["auc"]["value"] == pytest.approx(expected.auc)
    assert synthetic["settings"]["threshold"] == 0.7 and synthetic["model"]["temperature"] == 2.0
    assert synthetic["model"]["offset"] == 0.5 and metrics["model"]["offset"] == 0.0
    (source,) = synthetic["by_source"]
    confusion = synthetic["by_source"][source]["file"]["confusion"]
    assert confusion["fp"] == sum(s >= 0.7 for s, y in zip(scores, labels) if y == 0)
    assert (
        metrics["file"]["metrics"]["auc"]["value"] != synthetic["file"]["metrics"]["auc"]["value"]
    )  # two scores, not one twice
    assert "synthetic-face score (threshold 0.700)" in printed and "real faces flagged synthetic" in printed
    # 4 files a class: said under its lines as under the headline's, and as on the page (it went unsaid here)
    caution = "only 4 real and 4 fake files: a bootstrap over so few files understates"
    assert f"  caution (all, {source}): {caution}" in printed
    # Its figures recounted from the CSVs, as the face-swap score's can be (they had no synthetic column)
    faces = [r for r in csv.DictReader((out / "scores.csv").open()) if r["condition"] == "clean"]
    face_labels = [int(r["label"] == "fake") for r in faces]
    face_auc = detection_metrics(face_labels, [float(r["synthetic_probability"]) for r in faces]).auc
    assert synthetic["face"]["metrics"]["auc"]["value"] == pytest.approx(face_auc, abs=1e-5)
    files = [r for r in csv.DictReader((out / "files.csv").open()) if r["status"] == "ok"]
    file_labels = [int(r["label"] == "fake") for r in files]
    file_auc = detection_metrics(file_labels, [float(r["synthetic_score"]) for r in files]).auc
    assert synthetic["file"]["metrics"]["auc"]["value"] == pytest.approx(file_auc, abs=1e-5)
    generated = [
        f.synthetic_probability for p in sorted((root / "fake").iterdir()) for f in detector.analyze_image(p).faces
    ]
    caught = sum(s >= 0.7 for s in generated)
    assert f"generated faces caught {caught / len(generated):.1%} ({caught} of {len(generated)})" in printed
    # The headline blocks say whose figures they are: not the verdict's, nor the synthetic-face score's.
    assert "face-swap score, file level (" in printed and "face-swap score, face level (" in printed
    page = (out / "report.html").read_text()
    assert "Synthetic-face score" in page and "The face-swap score's figures. File level" in page
    # Under each perturbation, each score's own figures: the synthetic-face score's were in metrics.json alone.
    (_, blurred) = synthetic["perturbations"]
    assert blurred["file_auc"] != metrics["perturbations"][1]["file_auc"]
    assert "face-swap score under perturbations" in printed
    said = printed.split("synthetic-face score under perturbations (file AUC / face AUC):\n")[1]
    assert said.startswith("  clean ") and f"  blur:3       {fraction_text(blurred['file_auc']):>6} / " in said
    assert page.count('class="sr">metrics under each perturbation') == 2
    logged = {}
    tracker = SimpleNamespace(log_params=dict, log_metrics=logged.update, log_artifact=lambda *_: None)
    log_report(tracker, EvaluationSummary.model_validate(metrics), out)  # as --tracking-uri logs it to MLflow
    assert logged["file_auc"] == metrics["file"]["metrics"]["auc"]["value"]
    assert logged["synthetic_file_auc"] == synthetic["file"]["metrics"]["auc"]["value"]
    assert logged["synthetic_face_recall_low"] == synthetic["face"]["metrics"]["recall"]["low"]
    assert (
        html.escape(SCOPE_WITH_SYNTHETIC) in page and "It does not detect fully AI-generated" not in page
    )  # its scope


# --- configuration ---------------------------------------------------------------------------


def test_the_model_command_says_what_each_score_was_trained_on(two_output_bundle, tiny_bundle):
    # It said "trained on: <the face-swap network's real faces>" alone, as if the synthetic-face score learnt from them.
    from deepshield.cli.model import describe

    card = read_card(tiny_bundle)
    card = card.model_copy(update={"training": card.training.model_copy(update={"data": ["real-faces/ffhq"]})})
    assert "face-swap score trained on: real-faces/ffhq" in describe(card)
    assert "synthetic-face score trained on" not in describe(card)
    synthetic = card.model_copy(
        update={
            "outputs": card_outputs(True),
            "synthetic": SyntheticScoreInfo(
                pooling="test", data=["generated: synthetic-faces/generated-photos", "real: real-faces/ffhq"]
            ),
        }
    )
    lines = describe(synthetic).splitlines()
    assert "face-swap score trained on: real-faces/ffhq" in lines
    assert (
        "synthetic-face score trained on: generated: synthetic-faces/generated-photos, real: real-faces/ffhq" in lines
    )


def test_the_synthetic_section_is_strict():
    with pytest.raises(
        DeepShieldError, match=r"unknown key synthetic\.holdout; did you mean synthetic\.holdout_fraction\?"
    ):
        load_config(None, ["synthetic.holdout=0.3", "synthetic.mode=joint"])
    with pytest.raises(DeepShieldError, match=r"needs synthetic\.init"):
        load_config(None, ["synthetic.mode=frozen", "export.select=max.synthetic_val_auc"])
    with pytest.raises(DeepShieldError, match="select on the synthetic score"):
        load_config(None, ["synthetic.init=best.pt"])
    with pytest.raises(DeepShieldError, match=r"needs the synthetic-face score"):
        load_config(None, ["export.select=max.synthetic_holdout_auc"])
    config = load_config(None, ["synthetic.mode=joint"])
    assert (
        config.synthetic.fake_dirs[0].as_posix() == "synthetic-faces/generated-photos" and not config.frozen_synthetic
    )
    assert load_config(None).synthetic is None  # the packaged recipe trains no synthetic head


def test_the_synthetic_threshold_keeps_its_rate_on_matched_resolution_real_photos_alone():
    """Pooled validation reals are mostly low-resolution faces the score rarely flags; the FFHQ-like
    photos must each stay under the target rate too, not only the pool."""
    from deepshield.training.export import fit_synthetic_calibration
    from deepshield.training.synthetic import ScoredChecks

    rng = np.random.default_rng(0)
    low_res_reals, photos, generated = rng.normal(-4, 1, 400), rng.normal(1, 1, 40), rng.normal(4, 1, 200)
    labels = np.r_[np.zeros(440), np.ones(200)]
    scored = ScoredChecks(
        {"val": labels, "confound": np.r_[np.zeros(40), np.ones(200)]},
        {"val": np.r_[low_res_reals, photos, generated], "confound": np.r_[photos, generated]},
    )
    fitted = fit_synthetic_calibration(scored, target_fpr=0.05)
    flagged = np.mean(1 / (1 + np.exp(-photos / fitted.temperature)) >= fitted.threshold)
    assert flagged <= 0.05
    pooled_only = np.quantile(1 / (1 + np.exp(-np.r_[low_res_reals, photos] / fitted.temperature)), 0.95)
    assert fitted.threshold > pooled_only  # the pooled rate alone would have allowed a lower threshold
    assert "matched-resolution real photos 40" in fitted.fitted_on


def test_the_synthetic_threshold_keeps_its_rate_on_each_benchmarks_real_files_and_reports_what_it_catches():
    """The verdict takes the more severe score, so real media the synthetic score flags are false alarms
    of the product: a benchmark's real files bound its threshold like the validation reals do."""
    from deepshield.training.export import fit_synthetic_calibration, synthetic_flagged
    from deepshield.training.synthetic import ScoredChecks

    rng = np.random.default_rng(1)
    reals, generated = rng.normal(-2, 1.5, 400), rng.normal(2, 1.5, 200)
    labels = np.r_[np.zeros(400), np.ones(200)]
    logits = np.r_[reals, generated]
    scored = ScoredChecks(
        {"val": labels, "confound": labels, "holdout": labels, "holdout_downscaled": labels, "holdout_jpeg": labels},
        {"val": logits, "confound": logits, "holdout": logits, "holdout_downscaled": logits, "holdout_jpeg": logits},
    )
    # 20 real photos a benchmark holds, 5 of them scored like generated faces: at 5%, at most one may be flagged
    photo_logits = np.r_[rng.normal(-2, 1, 15), rng.normal(2.5, 0.3, 5)]
    photos = {"portraits": [(np.zeros(1, np.int64), np.array([x]), 1) for x in photo_logits]}
    without = fit_synthetic_calibration(scored, 0.05)
    fitted = fit_synthetic_calibration(scored, 0.05, photos)
    assert fitted.threshold > without.threshold
    figures = synthetic_flagged(scored, fitted, photos)
    assert figures["synthetic_bench_portraits_fpr"] <= 0.05
    called = 1 / (1 + np.exp(-photo_logits / fitted.temperature)) >= fitted.threshold
    assert figures["synthetic_bench_portraits_fpr"] == called.mean()
    caught = np.mean(1 / (1 + np.exp(-generated / fitted.temperature)) >= fitted.threshold)
    assert figures["synthetic_holdout_tpr"] == caught
    assert 0 < caught < synthetic_flagged(scored, without, {})["synthetic_holdout_tpr"]  # the higher threshold's price
    assert "portraits 20" in fitted.fitted_on


def test_the_synthetic_scale_refitted_on_real_photos_keeps_its_verdicts_and_lowers_them():
    """synthetic.calibrate_on = 'benchmarks': real photos of another kind than the training ones all score
    high; an offset fitted on them against the validation's generated faces lowers what they read while
    every face stays on its side of the threshold (the same logits) and the temperature stays."""
    from deepshield.training.export import fit_synthetic_calibration, synthetic_flagged
    from deepshield.training.synthetic import ScoredChecks

    rng = np.random.default_rng(2)
    reals, generated = rng.normal(-3, 1.5, 300), rng.normal(3, 1.5, 150)
    labels = np.r_[np.zeros(300), np.ones(150)]
    logits = np.r_[reals, generated]
    sets = ("val", "confound", "holdout", "holdout_downscaled", "holdout_jpeg")
    scored = ScoredChecks(dict.fromkeys(sets, labels), dict.fromkeys(sets, logits))
    photo_logits = rng.normal(1.5, 1, 60)  # high-quality real photos: far above the training reals
    photos = {"portraits": [(np.zeros(1, np.int64), np.array([x]), 1) for x in photo_logits]}
    validation = fit_synthetic_calibration(scored, 0.05, photos)
    fitted = fit_synthetic_calibration(scored, 0.05, photos, on_benchmarks=True)
    assert validation.offset == 0 and fitted.temperature == validation.temperature
    assert fitted.offset > 1  # the real photos' logits pull the half-way point up
    assert fitted.scale.logit(fitted.threshold) == pytest.approx(validation.scale.logit(validation.threshold))
    for side in ("low", "high"):
        assert fitted.scale.logit(getattr(fitted.band, side)) == pytest.approx(
            validation.scale.logit(getattr(validation.band, side))
        )
    assert (
        np.median(fitted.scale.probability(photo_logits)) < np.median(validation.scale.probability(photo_logits)) - 0.2
    )
    # The figures are read at the new scale: the same faces called as before.
    assert synthetic_flagged(scored, fitted, photos) == pytest.approx(synthetic_flagged(scored, validation, photos))
    assert "150 generated validation faces and 60 faces of the benchmarks' real files" in fitted.fitted_on
    assert "offset" in fitted.fitted_on and "temperature kept" in fitted.fitted_on


def test_a_band_reaches_down_to_even_odds_when_verdicts_are_called():
    high = Calibration(
        threshold=0.8, fitted_on="test", inconclusive=InconclusiveBand(low=0.7, high=0.9, fitted_on="fit")
    )
    rule = ScoreRule.from_calibration(high)
    assert (rule.band.low, rule.band.high) == (0.5, 0.9) and "even odds" in rule.band.fitted_on
    assert [rule.classify(p) for p in (0.49, 0.5, 0.69, 0.9)] == [
        "no_signs_found",
        "inconclusive",
        "inconclusive",
        "likely_manipulated",
    ]
    assert (
        ScoreRule.from_calibration(MANIPULATION_CALIBRATION).band == MANIPULATION_CALIBRATION.inconclusive
    )  # 0.4 <= 0.5
    moved = ScoreRule.from_calibration(MANIPULATION_CALIBRATION, threshold=0.75)  # 0.65 to 0.85, then down to 0.5
    assert (moved.threshold, moved.band.low, moved.band.high) == (0.75, 0.5, pytest.approx(0.85))


def test_a_padded_faces_synthetic_score_reads_it_cut_within_its_picture(two_output_bundle, astronaut):
    """The synthetic-face score took a crop's black padding for a real photo's: of generated photos cut close
    (35% padding) it caught 21%, and 81% from the face cut within the picture. Only the padded face is read
    again, and only by that score: the face-swap score, its heatmap and unpadded faces are as before."""
    from deepshield.faces.crop import SyntheticCrops, crop_face, crop_inside
    from deepshield.faces.detector import Box
    from deepshield.inference.analysis import Detector
    from deepshield.inference.frame_faces import find_faces

    _, bundle = two_output_bundle
    policy = CropPolicy(size=64)
    # A face at the picture's edge: its 1.5 x box crop runs past the top and the left.
    box = Box(10.0, 5.0, 110.0, 125.0)
    padded, inside = crop_face(astronaut, box, None, policy), crop_inside(astronaut, box, None, policy)
    # (Its pixel centres sample the picture: the crop's outer half pixel may lie past an edge, repeated.)
    assert padded.padding > 0.2 and inside.padding < 0.02
    # A picture smaller than the crop: the square shrinks to the picture's shorter side, still centred on the face.
    small = astronaut[:150, :150]
    assert crop_inside(small, box, None, policy).padding < 0.02
    cut_tight = crop_inside(small, Box(0.0, 0.0, 150.0, 150.0), None, policy)  # the box is the picture
    whole = crop_face(small, Box(0.0, 0.0, 150.0, 150.0), None, CropPolicy(size=64, scale=1.0))
    assert np.abs(cut_tight.pixels.astype(int) - whole.pixels).mean() < 20  # the picture, at about the same scale
    # No black left, whatever the turn or alignment (a turned face's half-pixel shift darkened a strip; an
    # aligned crop's turned square ran out of the picture).
    white = np.full((400, 512, 3), 255, np.uint8)
    keypoints = np.array([[40, 80], [90, 40], [65, 70], [70, 100], [20, 80], [110, 30]], np.float64)  # eyes 39 deg off
    for corner_box in (Box(2.0, 30.0, 122.0, 150.0), Box(0.0, 0.0, 30.0, 30.0), Box(480.0, 368.0, 512.0, 400.0)):
        for turns in range(4):
            assert crop_inside(white, corner_box, None, policy, turns).pixels.min() == 255, (corner_box, turns)
        aligned = crop_inside(white, corner_box, keypoints, CropPolicy(size=64, align=True))
        assert aligned.padding < 0.02 and aligned.pixels.min() == 255

    # Inside already: the same crop as crop_face's.
    middle = Box(200.0, 150.0, 300.0, 270.0)
    np.testing.assert_array_equal(
        crop_inside(astronaut, middle, None, policy).pixels, crop_face(astronaut, middle, None, policy).pixels
    )

    classifier = OnnxClassifier(bundle)
    crops = np.stack([padded.pixels, crop_face(astronaut, middle, None, policy).pixels])
    plain = classifier.score(crops)
    read = classifier.score(crops, synthetic_crops=SyntheticCrops.of([(0, inside.pixels)]))
    np.testing.assert_array_equal(read.logits, plain.logits)
    np.testing.assert_array_equal(read.cams, plain.cams)
    assert read.synthetic_logits[1] == plain.synthetic_logits[1]
    assert read.synthetic_logits[0] == pytest.approx(
        float(classifier.score(inside.pixels[None]).synthetic_logits[0]), abs=1e-5
    )
    assert abs(read.synthetic_logits[0] - plain.synthetic_logits[0]) > 1e-3

    # The product: a face cut close in its photo is found, cropped padded for the face-swap score and within
    # the picture for the synthetic score.
    close = np.ascontiguousarray(astronaut[70:200, 170:290])
    with Detector.from_bundle(bundle) as detector:  # closed: its MediaPipe graphs' threads end with it
        found = find_faces([close], detector.faces, policy)
        (face,) = detector.analyze_image(close, heatmaps=False).faces
    assert found.crops[0].padding > 0 and found.inside[0] is not None and found.synthetic_crops is not None
    expected = classifier.score(found.pixels, synthetic_crops=found.synthetic_crops)
    assert face.synthetic_logit == pytest.approx(float(expected.synthetic_logits[0]), abs=1e-5)
    assert face.logit == pytest.approx(float(classifier.score(found.pixels).logits[0]), abs=1e-5)
    assert face.synthetic_logit != pytest.approx(float(classifier.score(found.pixels).synthetic_logits[0]), abs=1e-3)


def test_evaluate_and_the_training_benchmarks_read_a_padded_face_as_analysis_does(
    two_output_bundle, astronaut, tmp_path
):
    """One reading of a face everywhere: evaluate's and a training benchmark's synthetic logit of a face cut close
    is the Detector's (its crop within the picture), kept through the benchmark cache and the faces journal."""
    from deepshield.evaluation.scoring import score_datasets
    from deepshield.inference.analysis import Detector
    from deepshield.training.benchmarks import load_benchmark

    _, bundle = two_output_bundle
    close = np.ascontiguousarray(astronaut[70:200, 170:290])
    for label in ("real", "fake"):
        (tmp_path / "set" / label).mkdir(parents=True)
        Image.fromarray(close if label == "real" else close[:, ::-1]).save(tmp_path / "set" / label / "a.png")
    with Detector.from_bundle(bundle) as detector:
        expected = [
            detector.analyze_image(tmp_path / "set" / label / "a.png").faces[0].synthetic_logit
            for label in ("real", "fake")
        ]
    classifier = OnnxClassifier(bundle)
    for journal in (None, tmp_path / "journal", tmp_path / "journal"):  # the second run reads the journal back
        scored = score_datasets([tmp_path / "set"], classifier, progress=False, journal_dir=journal)
        by_label = {
            int(label): logit for label, logit in zip(scored.labels_of_faces(), scored.faces["synthetic_logit"])
        }
        assert [by_label[0], by_label[1]] == pytest.approx(expected, abs=1e-4)
    for _ in range(2):  # found, then read from the cache
        benchmark = load_benchmark(tmp_path / "set", classifier.card.crop_policy, tmp_path / "cache", [])
        assert benchmark.synthetic_crops is not None
        read = classifier.score(benchmark.crops, synthetic_crops=benchmark.synthetic_crops).synthetic_logits
        labels = [benchmark.files[row.file_id].label for row in benchmark.rows]
        assert [read[labels.index(0)], read[labels.index(1)]] == pytest.approx(expected, abs=1e-4)


def test_a_prepared_dataset_scored_by_the_synthetic_score_says_its_padded_faces_are_read_padded(
    two_output_bundle, astronaut, tmp_path
):
    from deepshield.cli.main import main
    from deepshield.evaluation.scoring import PREPARED_SYNTHETIC_CAUTION, score_datasets

    _, bundle = two_output_bundle
    close = np.ascontiguousarray(astronaut[70:200, 170:290])
    for label in ("real", "fake"):
        (tmp_path / "set" / label).mkdir(parents=True)
        Image.fromarray(close if label == "real" else close[:, ::-1]).save(tmp_path / "set" / label / "a.png")
    prepared = tmp_path / "prepared"
    assert main(["prepare", str(tmp_path / "set"), "--out", str(prepared), "--crop-size", "64"]) == 0
    said: list[str] = []
    scored = score_datasets([prepared], OnnxClassifier(bundle), progress=False, warn=said.append)
    assert PREPARED_SYNTHETIC_CAUTION in said and PREPARED_SYNTHETIC_CAUTION in scored.notes
    said.clear()
    score_datasets([tmp_path / "set"], OnnxClassifier(bundle), progress=False, warn=said.append)
    assert PREPARED_SYNTHETIC_CAUTION not in said  # raw media are read as the product reads them


def test_the_calibration_sets_script_finds_every_input_before_writing_any_set(tmp_path, monkeypatch):
    # With the generated faces there and no dev-eval/, generated-validation.csv was written, then the first
    # benchmark was not found.
    from tests.script_support import load_script

    script = load_script("synthetic_calibration_sets")
    root, out = tmp_path / "data", tmp_path / "sets"
    generated = root / "synthetic-faces" / "generated-photos"
    generated.mkdir(parents=True)
    for index in range(20):
        (generated / f"{index:02d}.png").write_bytes(b"")
    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(root))
    monkeypatch.setattr("sys.argv", ["synthetic_calibration_sets.py", "--out", str(out)])
    with pytest.raises(DeepShieldError, match="benchmark dev-eval/dfdc-sample not found"):
        script.main()
    assert not out.exists()
    for name in ("dfdc-sample", "modern-swaps", "face-edits"):
        for label in ("real", "fake"):
            (root / "dev-eval" / name / label).mkdir(parents=True)
            (root / "dev-eval" / name / label / f"{label}.png").write_bytes(b"")
    assert script.main() == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "dfdc-sample-real.csv", "face-edits-real.csv", "generated-validation.csv", "modern-swaps-real.csv"
    ]  # fmt: skip
    assert (out / "modern-swaps-real.csv").read_text().splitlines()[1].endswith("real.png,real,modern-swaps-real")
    # The shipped head's own validation split of the 20 generated faces (3), none of its training or holdout.
    from deepshield.inference.runtime import DEFAULT_BUNDLE, read_card
    from deepshield.training.synthetic import generated_split

    _, validation, _ = generated_split(read_card(DEFAULT_BUNDLE))
    rows = [line.split(",") for line in (out / "generated-validation.csv").read_text().splitlines()[1:]]
    assert len(validation) == 3 and rows == [[str(path), "fake", "generated-validation"] for path in validation]
    # A small budget, as the bench scripts' --limit: the first file of each set.
    monkeypatch.setattr("sys.argv", ["synthetic_calibration_sets.py", "--out", str(out), "--limit", "1"])
    assert script.main() == 0
    assert [len(path.read_text().splitlines()) for path in sorted(out.iterdir())] == [2, 2, 2, 2]
