"""`deepshield soup`: a bundle whose face-swap network is the weighted average of other bundles'."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from deepshield.cli.main import main as deepshield
from deepshield.errors import EXIT_INTERRUPTED, EXIT_USAGE, DeepShieldError
from deepshield.faces.crop import CropPolicy
from deepshield.inference.runtime import OnnxClassifier, read_card
from deepshield.models.card import ModelCard, TrainingInfo, card_outputs
from deepshield.models.export import export_bundle
from deepshield.models.network import DeepfakeNet
from deepshield.training.config import TrainConfig
from deepshield.training.parent import bundle_weights, load_parent
from deepshield.training.soup import make_soup, write_soup


def _bundle(path, seed: int, size: int = 64, command: str = "", flip: bool = False, license: str = ""):
    torch.manual_seed(seed)
    net = DeepfakeNet("tiny", size, pretrained=False).eval()
    with torch.no_grad():  # batch norms away from the identity, so that folding them matters
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 1.5)
        torch.nn.init.normal_(net.head.weight, std=0.5)
    card = ModelCard(
        name=f"b{seed}",
        version="1.0.0",
        architecture="tiny",
        input_size=size,
        crop_policy=CropPolicy(size=size, scale=1.3),
        training=TrainingInfo(command=command),
        test_time_flip=flip,
        license=license,
    )
    return export_bundle(net, card, path)


def test_a_soup_keeps_the_terms_of_every_network(tmp_path):
    # The first network's licence alone was kept: a later one's research-only terms were lost.
    open_terms, research = "Weights: CC-BY-4.0.", "Weights: research use only (trained on FFHQ)."
    first = _bundle(tmp_path / "a", seed=1, license=open_terms)
    second = _bundle(tmp_path / "b", seed=2, license=research)
    assert make_soup([first, second], None, "m", "1", "").card.license == (
        f"The terms of every averaged network apply: b1 1.0.0: {open_terms} | b2 1.0.0: {research}"
    )
    alike = _bundle(tmp_path / "c", seed=3, license=open_terms)
    assert make_soup([first, alike], None, "m", "1", "").card.license == open_terms


@pytest.fixture
def crops(astronaut):
    return np.stack([astronaut[y : y + 64, x : x + 64] for y, x in [(60, 150), (0, 0), (300, 300), (200, 220)]])


def test_the_soup_is_the_weighted_average_of_the_networks(tmp_path, crops):
    first = _bundle(tmp_path / "a", seed=1, command="deepshield train --run-dir /machine/runs/a --set seed=1")
    second = _bundle(tmp_path / "b", seed=2)
    soup = write_soup(make_soup([first, second], [3, 1], "mix", "2.0.0", "deepshield soup a b"), tmp_path / "soup")
    expected = {
        key: 0.75 * a + 0.25 * b if a.is_floating_point() else a
        for (key, a), b in zip(
            bundle_weights(first, read_card(first)).items(),
            bundle_weights(second, read_card(second)).values(),
            strict=True,
        )
    }
    for key, value in bundle_weights(tmp_path / "soup", soup).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
    scores = [OnnxClassifier(b).score(crops).logits for b in (first, second, tmp_path / "soup")]
    assert np.abs(scores[2] - scores[0]).max() > 1e-3 and np.abs(scores[2] - scores[1]).max() > 1e-3
    # the card says what it is: both ingredients and their shares, no machine folder, not calibrated
    assert [(i.name, i.weight) for i in soup.training.soup] == [("b1", 0.75), ("b2", 0.25)]
    assert soup.training.soup[0].training.command == "deepshield train --set seed=1"
    assert soup.training.soup[0].onnx_sha256 == read_card(first).onnx_sha256
    assert soup.synthetic is None and "synthetic_logit" not in soup.outputs
    assert soup.calibration.fitted_on.startswith("not fitted")


def test_a_soup_of_one_network_with_itself_computes_that_network(tmp_path, crops):
    only = _bundle(tmp_path / "a", seed=1)
    write_soup(make_soup([only, only], None, "same", "1.0.1", ""), tmp_path / "soup")
    np.testing.assert_allclose(
        OnnxClassifier(tmp_path / "soup").score(crops).logits, OnnxClassifier(only).score(crops).logits, atol=1e-4
    )


def test_a_soup_is_served_with_its_bundles_test_time_flip_and_never_mixes_two(tmp_path, crops):
    # the soup's card dropped the flip: a soup of a flip bundle with itself served another function
    flipped = _bundle(tmp_path / "a", seed=1, flip=True)
    soup = write_soup(make_soup([flipped, flipped], None, "same", "1.0.1", ""), tmp_path / "soup")
    assert soup.test_time_flip
    np.testing.assert_allclose(
        OnnxClassifier(tmp_path / "soup").score(crops).logits, OnnxClassifier(flipped).score(crops).logits, atol=1e-4
    )
    with pytest.raises(DeepShieldError, match=r"test-time flip differs \(True against False\)"):
        make_soup([flipped, _bundle(tmp_path / "b", seed=2)], None, "x", "1", "")


def _pooled_bundle(path, seed: int):
    """A bundle whose logit is the CAM's log-mean-exp at t = 0.5, served with the test-time flip."""
    torch.manual_seed(seed)
    net = DeepfakeNet("tiny", 64, pretrained=False, cam_pooling_temperature=0.5).eval()
    torch.nn.init.normal_(net.head.weight, std=0.5)
    config = {"model": {"cam_pooling_temperature": 0.5}, "export": {"test_time_flip": True}}
    card = ModelCard(
        name=f"p{seed}",
        version="1",
        architecture="tiny",
        input_size=64,
        crop_policy=CropPolicy(size=64),
        outputs=card_outputs(False, 0.5),
        test_time_flip=True,
        training=TrainingInfo(config=config),
    )
    return export_bundle(net, card, path)


def test_a_soup_of_soups_and_a_head_on_a_soup_pool_as_their_networks_do(tmp_path, crops):
    # A soup records no training configuration: a soup of soups of log-mean-exp networks, and a frozen head's
    # parent read from a soup, took the mean.
    first, second = _pooled_bundle(tmp_path / "a", 1), _pooled_bundle(tmp_path / "b", 2)
    soup = write_soup(make_soup([first, second], None, "s", "1", ""), tmp_path / "s")
    again = write_soup(make_soup([tmp_path / "s", tmp_path / "s"], None, "ss", "1", ""), tmp_path / "ss")
    assert again.outputs["cam"] == soup.outputs["cam"] == read_card(first).outputs["cam"]
    np.testing.assert_allclose(
        OnnxClassifier(tmp_path / "ss").score(crops).logits,
        OnnxClassifier(tmp_path / "s").score(crops).logits,
        atol=1e-5,
    )
    parent = load_parent(
        TrainConfig.model_validate(
            {"synthetic": {"init": str(tmp_path / "s")}, "export": {"select": "max.synthetic_val_auc"}}
        )
    )
    assert parent.config.model.cam_pooling_temperature == 0.5
    assert parent.record()["parent"]["export"]["test_time_flip"]  # the manipulation output is served as the soup's


def test_networks_that_see_different_crops_are_not_averaged(tmp_path):
    small, large = _bundle(tmp_path / "a", seed=1, size=64), _bundle(tmp_path / "b", seed=2, size=96)
    with pytest.raises(DeepShieldError, match="input size differs"):
        make_soup([small, large], None, "x", "1", "")
    with pytest.raises(DeepShieldError, match="at least two bundles"):
        make_soup([small], None, "x", "1", "")
    for weights in ([1.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0]):  # nan and inf: a pydantic traceback
        with pytest.raises(DeepShieldError, match="one positive, finite weight per bundle"):
            make_soup([small, small], weights, "x", "1", "")
    with pytest.raises(DeepShieldError, match="leaves its bundle out"):
        make_soup([small, small], [1.0, 1e-7], "x", "1", "")


def test_the_command_writes_the_soup_and_keeps_an_existing_folder(tmp_path, capsys):
    first, second = _bundle(tmp_path / "a", seed=1), _bundle(tmp_path / "b", seed=2)
    out = tmp_path / "soup"
    assert deepshield(["soup", str(first), str(second), "--out", str(out), "--name", "m", "--version", "3.0.0"]) == 0
    assert "m 3.0.0 = b1 1.0.0 x 0.5, b2 1.0.0 x 0.5" in capsys.readouterr().out
    assert read_card(out).training.command.startswith("deepshield soup")
    assert deepshield(["model", "--model", str(out)]) == 0  # its thresholds are the defaults, and said to be
    shown = capsys.readouterr().out
    assert "threshold 50.0%, inconclusive 40.0% to 60.0% (not calibrated" in shown
    assert "\nsoup of: b1 1.0.0 x 0.5, b2 1.0.0 x 0.5\n" in shown  # its networks were not said
    before = (out / "model.onnx").read_bytes()
    assert deepshield(["soup", str(first), str(second), "--out", str(out)]) == EXIT_USAGE
    assert capsys.readouterr().err == f"deepshield: error: {out} exists and is not empty (use --force to replace it)\n"
    assert (out / "model.onnx").read_bytes() == before


def test_the_command_says_a_synthetic_face_head_is_left_out(tmp_path, capsys):
    # The soup of a two-score bundle has no synthetic-face score: said in --help alone, not when it happened.
    from tests.test_synthetic_score import export_two_output_bundle

    _net, two = export_two_output_bundle(tmp_path / "two")
    first = _bundle(tmp_path / "a", seed=1, size=64)
    card = json.loads((first / "model_card.json").read_text())
    card["crop_policy"]["scale"] = read_card(two).crop_policy.scale  # the same crops, so that they average
    (first / "model_card.json").write_text(json.dumps(card))
    assert deepshield(["soup", str(first), str(two), "--out", str(tmp_path / "soup")]) == 0
    said = capsys.readouterr().out
    assert "no synthetic-face score: the heads of two-output 1 left out" in said
    # The soup just written named as the head's parent ("synthetic.init=NEW_BUNDLE", the option's placeholder).
    assert f"--set synthetic.init={tmp_path / 'soup'})" in said
    assert read_card(tmp_path / "soup").synthetic is None
    assert deepshield(["soup", str(first), str(first), "--out", str(tmp_path / "plain")]) == 0
    assert "synthetic" not in capsys.readouterr().out


def test_a_forced_soup_that_stops_keeps_the_bundle_it_would_replace(tmp_path, monkeypatch, capsys):
    """--force emptied --out before the soup was built: stopped there (Ctrl-C, a failed export), the old
    bundle was gone, and --out may be one of the soup's own ingredients."""
    import deepshield.models.export as export

    first, second = _bundle(tmp_path / "a", seed=1), _bundle(tmp_path / "b", seed=2)
    before = (first / "model.onnx").read_bytes()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.torch.onnx, "export", stopped)
    assert deepshield(["soup", str(first), str(second), "--out", str(first), "--force"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "deepshield: interrupted\n"
    assert (first / "model.onnx").read_bytes() == before and read_card(first).name == "b1"
    monkeypatch.undo()
    assert deepshield(["soup", str(first), str(second), "--out", str(first), "--force"]) == 0
    assert read_card(first).training.soup and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    (tmp_path / "a.old").mkdir()  # a user's folder beside it: never the replaced bundle's place
    (tmp_path / "a.old" / "keep.txt").write_text("mine")
    assert deepshield(["soup", str(first), str(second), "--out", str(first), "--force"]) == 0
    assert (tmp_path / "a.old" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("damage", "refusal"),
    [
        ("replaced", "model.onnx does not match the checksum in its model card (corrupt or replaced)"),
        ("cut off", "model.onnx does not match the checksum in its model card (corrupt or replaced)"),
        ("missing", "has no model.onnx"),
    ],
)
def test_a_bundle_whose_graph_is_not_its_cards_is_refused_as_scan_refuses_it(tmp_path, capsys, damage, refusal):
    """A replaced graph was averaged under its card's name and checksum; a cut-off one ended in a protobuf
    DecodeError traceback, a missing one in a FileNotFoundError traceback. model.init reads bundles alike."""
    from deepshield.training.config import TrainConfig
    from deepshield.training.parent import initial_weights

    first, second = _bundle(tmp_path / "a", seed=1), _bundle(tmp_path / "b", seed=2)
    graph = second / "model.onnx"
    if damage == "replaced":
        graph.write_bytes((first / "model.onnx").read_bytes())
    elif damage == "cut off":
        graph.write_bytes(graph.read_bytes()[:1000])
    else:
        graph.unlink()
    out = tmp_path / "soup"
    assert deepshield(["soup", str(first), str(second), "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert refusal in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert deepshield(["scan", str(tmp_path), "--model", str(second)]) == EXIT_USAGE
    assert refusal in capsys.readouterr().err  # the same words scan gives
    config = TrainConfig.model_validate({"model": {"backbone": "tiny", "input_size": 64, "init": str(second)}})
    with pytest.raises(DeepShieldError, match=re.escape(refusal)):
        initial_weights(config)


def test_a_soup_records_its_folders_without_this_machines(tmp_path, monkeypatch):
    """The absolute --out and bundle folders were recorded in training.command: a machine's folders in a card."""
    from tests.conftest import absolute_paths_in

    first, second = _bundle(tmp_path / "a", seed=1), _bundle(tmp_path / "b", seed=2)
    monkeypatch.chdir(tmp_path)  # under the working folder: as it reaches them
    assert deepshield(["soup", str(first), str(second), "--out", str(tmp_path / "soup"), "--version", "1"]) == 0
    assert read_card(tmp_path / "soup").training.command == "deepshield soup a b --out soup --name soup --version 1"
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # elsewhere: by name alone
    assert deepshield(["soup", str(first), str(second), "--out", str(tmp_path / "elsewhere"), "--version", "1"]) == 0
    command = read_card(tmp_path / "elsewhere").training.command
    assert command == "deepshield soup a b --out elsewhere --name soup --version 1"
    assert absolute_paths_in(tmp_path / "soup") == absolute_paths_in(tmp_path / "elsewhere") == []


def test_a_soup_carries_no_rate_of_its_ingredients(tmp_path):
    """A soup is a new network at an uncalibrated threshold: no ingredient's figure (reals flagged, AUCs) is its."""
    from tests.conftest import bundle_with_record

    recorded = bundle_with_record(_bundle(tmp_path / "a", seed=1), tmp_path / "a-recorded")
    assert read_card(recorded).record().benchmarks  # the ingredient has figures on labelled sets
    soup = write_soup(make_soup([recorded, _bundle(tmp_path / "b", seed=2)], None, "s", "1", "soup"), tmp_path / "soup")
    assert soup.metrics == {} and soup.training.benchmarks == []
    record = soup.record()
    assert record.benchmarks == [] and record.validation_real_flagged is None and record.validation_auc is None
    assert soup.training.soup[0].training.benchmarks == [
        "dev-eval/modern-swaps",
        "dev-eval/never-scored",
        "dev-eval/dfdc-sample",
    ]


def test_the_shipped_model_is_named_default_as_every_command_names_it(tmp_path, monkeypatch, capsys):
    # `--model default` worked everywhere, `soup default OTHER` was refused: "model bundle default does not exist".
    import deepshield.inference.runtime as runtime

    monkeypatch.setattr(runtime, "DEFAULT_BUNDLE", _bundle(tmp_path / "shipped", seed=1))
    other = _bundle(tmp_path / "b", seed=2)
    assert deepshield(["soup", "default", str(other), "--out", str(tmp_path / "soup")]) == 0
    assert "b1 1.0.0 x 0.5, b2 1.0.0 x 0.5" in capsys.readouterr().out
    assert read_card(tmp_path / "soup").training.command.startswith("deepshield soup default ")


def test_a_soups_verdicts_say_its_scores_are_not_calibrated(tmp_path, capsys, astronaut):
    # scan, serve and the Python API called a soup's verdicts with temperature 1 and threshold 50% unsaid.
    from PIL import Image

    from deepshield.inference.analysis import Detector
    from deepshield.models.card import NOT_CALIBRATED, not_calibrated

    soup = tmp_path / "soup"
    assert (
        deepshield(["soup", str(_bundle(tmp_path / "a", 1)), str(_bundle(tmp_path / "b", 2)), "--out", str(soup)]) == 0
    )
    photo = tmp_path / "photo.jpg"
    Image.fromarray(astronaut).save(photo)
    capsys.readouterr()
    page = tmp_path / "page.html"
    args = ["scan", str(photo), "--model", str(soup), "--format", "json", "--html", str(page)]
    assert deepshield(args) == 0
    out, err = capsys.readouterr()
    assert err.count(NOT_CALIBRATED) == 1 and f"warning: model soup 0.0.0: {NOT_CALIBRATED}" in err
    (row,) = json.loads(out)
    assert row["result"]["calibrated"] is False
    assert f"model soup 0.0.0 ({NOT_CALIBRATED})" in page.read_text()
    # a threshold given is one chosen: only the temperature is the default
    assert deepshield([*args, "--threshold", "0.6"]) == 0
    given = not_calibrated(threshold_given=True)
    err = capsys.readouterr().err
    assert f"warning: model soup 0.0.0: {given}" in err and "not chosen" not in err
    assert f"model soup 0.0.0 ({given})" in page.read_text() and "not chosen" not in page.read_text()
    with Detector.from_bundle(soup) as detector:
        assert detector.scoring_terms().calibrated is False  # the API's results and /healthz carry it
    calibrated = _bundle(tmp_path / "c", 3)
    card = json.loads((calibrated / "model_card.json").read_text())
    card["calibration"]["fitted_on"] = "a labelled set"
    (calibrated / "model_card.json").write_text(json.dumps(card))
    assert deepshield(["scan", str(photo), "--model", str(calibrated), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert "calibrated" not in err and json.loads(out)[0]["result"]["calibrated"] is True
