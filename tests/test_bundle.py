"""The bundle contract: what ONNX Runtime computes from model.onnx is what the torch network
computes, and a broken bundle is refused with a message that says what is wrong."""

from __future__ import annotations

import itertools
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshield.errors import EXIT_USAGE, BundleError, DeepShieldError, exit_status
from deepshield.faces.crop import CropPolicy
from deepshield.inference.runtime import OnnxClassifier, read_card
from deepshield.media.files import file_sha256
from deepshield.models.card import CARD_FILE, ONNX_FILE, Calibration, ModelCard, card_outputs
from deepshield.models.export import export_bundle
from deepshield.models.network import DeepfakeNet, ExportWrapper, normalize_batch
from tests.conftest import file_size_limit


def torch_outputs(net: DeepfakeNet, card: ModelCard, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        logit, cam = net(normalize_batch(torch.from_numpy(crops), card.normalization))
    return logit.numpy(), cam.numpy()


def face_like_crops(astronaut: np.ndarray, size: int, count: int) -> np.ndarray:
    """Real photo content (not noise) at a few offsets, plus one flat grey crop."""
    import cv2

    crops = [
        cv2.resize(astronaut[y : y + 160, x : x + 160], (size, size), interpolation=cv2.INTER_AREA)
        for y, x in [(60, 150), (0, 0), (300, 300), (200, 50)]
    ]
    crops.append(np.full((size, size, 3), 128, np.uint8))
    return np.stack([crops[i % len(crops)] for i in range(count)])


@pytest.fixture(scope="module")
def efficientnet_bundle(tmp_path_factory):
    torch.manual_seed(1)
    net = DeepfakeNet("efficientnet_lite0", 96, pretrained=True).eval()
    torch.nn.init.normal_(net.head.weight, std=0.05)  # a head that gives logits of a few units
    card = ModelCard(
        name="effnet-test",
        version="0.0.1",
        architecture="efficientnet_lite0",
        input_size=96,
        crop_policy=CropPolicy(size=96),
        calibration=Calibration(temperature=1.7, offset=0.3, threshold=0.4),
    )
    return net, card, export_bundle(net, card, tmp_path_factory.mktemp("bundle") / "effnet")


@pytest.fixture(scope="module")
def tiny_net_bundle(tmp_path_factory):
    torch.manual_seed(2)
    net = DeepfakeNet("tiny", 64, pretrained=False).eval()
    torch.nn.init.normal_(net.head.weight, std=0.5)
    card = ModelCard(name="tiny", version="1", architecture="tiny", input_size=64, crop_policy=CropPolicy(size=64))
    return net, card, export_bundle(net, card, tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.mark.parametrize("which", ["tiny_net_bundle", "efficientnet_bundle"])
def test_onnx_runtime_matches_torch(request, astronaut, which):
    net, card, bundle = request.getfixturevalue(which)
    classifier = OnnxClassifier(bundle)
    assert classifier.input_size == card.input_size
    crops = face_like_crops(astronaut, card.input_size, 20)  # more than one ORT batch of 16
    scores = classifier.score(crops)
    logits, cams = torch_outputs(net, card, crops)
    assert np.ptp(logits) > 0.05  # the crops really give different answers
    np.testing.assert_allclose(scores.logits, logits, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(scores.cams, cams, rtol=1e-3, atol=1e-4)
    # Calibrated probability: sigmoid((logit - offset) / temperature), both from the card.
    expected = 1 / (1 + np.exp(-(logits.astype(np.float64) - card.calibration.offset) / card.calibration.temperature))
    np.testing.assert_allclose(scores.probabilities, expected, rtol=1e-5, atol=1e-6)
    # A batch of one gives what the same crop gives inside a batch.
    single = classifier.score(crops[:1])
    np.testing.assert_allclose(single.logits, scores.logits[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("which", "cam_side"), [("tiny_net_bundle", 8), ("efficientnet_bundle", 3)])
def test_cam_shape_and_mean_is_the_logit(request, astronaut, which, cam_side):
    _net, card, bundle = request.getfixturevalue(which)
    scores = OnnxClassifier(bundle).score(face_like_crops(astronaut, card.input_size, 3))
    assert scores.cams.shape == (3, cam_side, cam_side)  # input / 8 (tiny), input / 32 (EfficientNet)
    np.testing.assert_allclose(scores.cams.mean(axis=(1, 2)), scores.logits, rtol=1e-4, atol=1e-5)


def test_a_score_that_is_not_a_number_is_the_models_fault_not_no_face(tiny_net_bundle, astronaut, monkeypatch):
    # Downstream a NaN score means "no face": a damaged graph's NaN read as a file without a face.
    _net, card, bundle = tiny_net_bundle
    classifier = OnnxClassifier(bundle)
    real_run = classifier._run

    def with_a_nan(batch):
        logits, *rest = real_run(batch)
        return [np.where(np.arange(len(logits)) == 1, np.nan, logits).astype(logits.dtype), *rest]

    monkeypatch.setattr(classifier, "_run", with_a_nan)
    with pytest.raises(RuntimeError, match="gave a score that is not a number"):
        classifier.score(face_like_crops(astronaut, card.input_size, 3))


def test_log_mean_exp_pooling_leans_to_the_most_suspicious_locations():
    cam = torch.tensor([[[0.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])  # a local peak; a flat map
    pooled = {
        t: DeepfakeNet("tiny", 32, pretrained=False, cam_pooling_temperature=t).pool_cam(cam).numpy()
        for t in (0.05, 2.0, 1e4)
    }
    np.testing.assert_allclose(pooled[2.0][0], 2 * np.log((3 + np.exp(2.0)) / 4), rtol=1e-6)
    assert 1.0 < pooled[2.0][0] < 4.0  # between the mean and the peak
    np.testing.assert_allclose(pooled[1e4], [1.0, 1.0], atol=1e-3)  # a large t: the mean
    np.testing.assert_allclose(pooled[0.05][0], 4.0 - 0.05 * np.log(4), rtol=1e-5)  # a small t: the peak
    np.testing.assert_allclose([p[1] for p in pooled.values()], 1.0, rtol=1e-3)  # a flat map: its value at any t
    mean = DeepfakeNet("tiny", 32, pretrained=False).pool_cam(cam).numpy()
    np.testing.assert_allclose(mean, [1.0, 1.0])


def test_log_mean_exp_pooled_bundle_matches_torch(tmp_path, astronaut):
    torch.manual_seed(3)
    net = DeepfakeNet("tiny", 64, pretrained=False, cam_pooling_temperature=0.5).eval()
    torch.nn.init.normal_(net.head.weight, std=0.5)
    card = ModelCard(
        name="lse",
        version="1",
        architecture="tiny",
        input_size=64,
        crop_policy=CropPolicy(size=64),
        outputs=card_outputs(False, 0.5),
    )
    crops = face_like_crops(astronaut, 64, 5)
    scores = OnnxClassifier(export_bundle(net, card, tmp_path / "lse")).score(crops)
    logits, cams = torch_outputs(net, card, crops)
    np.testing.assert_allclose(scores.logits, logits, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(scores.cams, cams, rtol=1e-3, atol=1e-4)
    flat = scores.cams.reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(scores.logits, 0.5 * np.log(np.exp(flat / 0.5).mean(axis=1)), rtol=1e-4, atol=1e-5)
    assert (scores.logits[:4] > flat[:4].mean(axis=1) + 1e-3).all()  # not the mean (the fifth crop is flat grey)
    assert "t = 0.5" in OnnxClassifier(tmp_path / "lse").card.outputs["cam"]


def test_card_records_checksum_and_policy(efficientnet_bundle):
    _, _card, bundle = efficientnet_bundle
    stored = json.loads((bundle / CARD_FILE).read_text())
    assert stored["onnx_sha256"] == file_sha256(bundle / ONNX_FILE)
    assert stored["input_size"] == 96 and stored["crop_policy"]["size"] == 96
    assert stored["calibration"]["temperature"] == 1.7
    assert OnnxClassifier(bundle).card.calibration.threshold == 0.4


def test_pretrained_weights_are_loaded():
    torch.manual_seed(3)
    first = DeepfakeNet("efficientnet_lite0", 96, pretrained=True).backbone.state_dict()
    torch.manual_seed(4)
    second = DeepfakeNet("efficientnet_lite0", 96, pretrained=True).backbone.state_dict()
    torch.manual_seed(4)
    random_init = DeepfakeNet("efficientnet_lite0", 96, pretrained=False).backbone.state_dict()
    stem = "net._conv_stem.weight"
    assert torch.equal(first[stem], second[stem])  # the shipped ImageNet weights, not the seed's
    assert not torch.equal(first[stem], random_init[stem])


def test_score_rejects_wrong_crop_shapes(tiny_bundle):
    classifier = OnnxClassifier(tiny_bundle)
    with pytest.raises(ValueError, match="expected N x 64 x 64 x 3 crops"):
        classifier.score(np.zeros((2, 32, 32, 3), np.uint8))
    empty = classifier.score(np.zeros((0, 64, 64, 3), np.uint8))
    assert empty.logits.shape == (0,) and empty.probabilities.shape == (0,)


def test_export_refuses_mismatched_input_size(tmp_path):
    net = DeepfakeNet("tiny", 64, pretrained=False)
    card = ModelCard(name="x", version="1", architecture="tiny", input_size=96, crop_policy=CropPolicy(size=96))
    with pytest.raises(ValueError, match="card input_size 96 != network input_size 64"):
        export_bundle(net, card, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_export_leaves_the_folder_as_it_was_and_a_rerun_replaces_it(tmp_path, monkeypatch):
    # A stopped export left model.onnx beside a cut-off card: a bundle that failed to load, and a folder the
    # rerun refused without --force. Then it left its .part folder, until the next export: on a full disk,
    # its partial graph held the space.
    import deepshield.models.export as export_module

    net = DeepfakeNet("tiny", 64, pretrained=False)
    card = ModelCard(name="x", version="1", architecture="tiny", input_size=64, crop_policy=CropPolicy(size=64))
    export_bundle(net, card, tmp_path / "b")
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "file_sha256", stopped)  # after the graph is written, before the card
    torch.manual_seed(1)
    other = DeepfakeNet("tiny", 64, pretrained=False)  # other weights: another graph
    with pytest.raises(KeyboardInterrupt):
        export_bundle(other, card.model_copy(update={"version": "2"}), tmp_path / "b")
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # its graph went with its .part folder
    monkeypatch.undo()
    export_bundle(other, card.model_copy(update={"version": "2"}), tmp_path / "b")
    assert read_card(tmp_path / "b").version == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_an_export_onto_a_full_disk_keeps_the_bundle_before_and_names_it(tmp_path, capsys):
    # Its part of a graph stayed in b.part, holding the space that was short, and the line named no file.
    net = DeepfakeNet("tiny", 64, pretrained=False)
    card = ModelCard(name="x", version="1", architecture="tiny", input_size=64, crop_policy=CropPolicy(size=64))
    export_bundle(net, card, tmp_path / "b")
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    with file_size_limit(4096):
        status = exit_status(lambda: export_bundle(net, card.model_copy(update={"version": "2"}), tmp_path / "b"), "x")
    assert status == EXIT_USAGE and capsys.readouterr().err == f"x: error: {tmp_path / 'b'}: File too large\n"
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_second_export_into_a_bundle_being_built_is_refused_and_the_first_finishes(tmp_path):
    # Two exports or calibrations into one folder filled one .part folder: a bundle of both, or a failed rename.
    from deepshield.models.card import building_bundle

    net = DeepfakeNet("tiny", 64, pretrained=False)
    card = ModelCard(name="x", version="1", architecture="tiny", input_size=64, crop_policy=CropPolicy(size=64))
    with building_bundle(tmp_path / "b") as building:
        (building / "marker").write_text("the first")
        with pytest.raises(DeepShieldError, match=r"b: another deepshield process is writing this bundle"):
            export_bundle(net, card, tmp_path / "b")
        assert [p.name for p in building.iterdir()] == ["marker"]  # the second touched nothing
    assert (tmp_path / "b" / "marker").read_text() == "the first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no lock or .part folder left


def test_a_bundle_lock_a_killed_export_left_goes_with_the_next_bundle(tmp_path):
    # file_lock removes a lock file it made: the one a killed export left beside the bundle stayed through
    # every later export, though the lock "goes when the bundle is in place".
    from deepshield.models.card import building_bundle

    (tmp_path / "b.part.lock").touch()  # as a killed export leaves it
    with building_bundle(tmp_path / "b") as building:
        (building / "marker").write_text("built")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_bundle_lock_removed_as_another_export_takes_it_keeps_the_next_one_out(tmp_path, monkeypatch):
    # The first export removes the lock file once its bundle is in place: a second one that had opened the file
    # just before locked it just after, a file no longer named, and a third, opening the name, made a new file
    # and locked it at once: two exports filled one .part folder, and the second's rename failed.
    from deepshield import locks
    from deepshield.models.card import building_bundle

    first = building_bundle(tmp_path / "b")
    first.__enter__()
    take = locks._flock

    def opened_before_the_first_finished(handle, lock_file, operation):
        monkeypatch.setattr(locks, "_flock", take)
        first.__exit__(None, None, None)  # its bundle in place, its lock file removed, let go
        return take(handle, lock_file, operation)

    monkeypatch.setattr(locks, "_flock", opened_before_the_first_finished)
    with building_bundle(tmp_path / "b") as building:
        third = building_bundle(tmp_path / "b")
        with pytest.raises(DeepShieldError, match="another deepshield process is writing this bundle"):
            third.__enter__()
        (building / "marker").write_text("second")
    assert (tmp_path / "b" / "marker").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


# --- the loader refuses broken bundles ------------------------------------------------------


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def edit_card(bundle: Path, **changes) -> None:
    card = json.loads((bundle / CARD_FILE).read_text())
    card.update(changes)
    (bundle / CARD_FILE).write_text(json.dumps(card))


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match=r"nowhere does not exist$"):
        OnnxClassifier(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match=r"file is not a directory$"):
        OnnxClassifier(tmp_path / "file")


def test_a_training_runs_outputs_named_as_a_bundle_say_what_to_give(bundle_copy, tmp_path):
    """`--model runs/x` or `--model runs/x/checkpoints/best.pt`, a first run's guesses, were told only that no
    bundle was there."""
    run = tmp_path / "runs" / "x"
    (run / "checkpoints").mkdir(parents=True)
    # A run stopped in its first epoch (last.pt alone), or whose epochs had no value to choose by: the export
    # of a best.pt it does not have was named.
    (run / "checkpoints" / "last.pt").write_bytes(b"torch")
    with pytest.raises(BundleError, match=r"that has finished no epoch: continue it with its command and --resume$"):
        OnnxClassifier(run)
    (run / "checkpoints" / "epoch_001.pt").write_bytes(b"torch")
    with pytest.raises(BundleError, match=rf"`deepshield export {run / 'checkpoints' / 'epoch_001.pt'} --out BUNDLE`$"):
        OnnxClassifier(run)
    checkpoint = run / "checkpoints" / "best.pt"
    checkpoint.write_bytes(b"torch")
    with pytest.raises(BundleError, match=r"has no model_card.json: a training run's folder without a bundle; make "):
        OnnxClassifier(run)
    with pytest.raises(
        BundleError, match=rf"a training checkpoint; make a bundle of it with `deepshield export {checkpoint}"
    ):
        OnnxClassifier(checkpoint)
    shutil.copytree(bundle_copy, run / "bundle")
    with pytest.raises(BundleError, match=rf"a training run's folder; its bundle is {run / 'bundle'}$"):
        OnnxClassifier(run)


def test_missing_card(bundle_copy):
    (bundle_copy / CARD_FILE).unlink()
    with pytest.raises(BundleError, match=r"has no model_card.json"):
        OnnxClassifier(bundle_copy)


def test_invalid_json(bundle_copy):
    (bundle_copy / CARD_FILE).write_text('{"format": 1, "name": ')
    with pytest.raises(BundleError, match=r"model card .* is invalid"):
        OnnxClassifier(bundle_copy)


def test_card_missing_required_field(bundle_copy):
    card = json.loads((bundle_copy / CARD_FILE).read_text())
    del card["crop_policy"]
    (bundle_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match=r"is invalid: crop_policy: Field required$"):  # one line, not pydantic's four
        OnnxClassifier(bundle_copy)


def test_wrong_format_number(bundle_copy):
    edit_card(bundle_copy, format=2)
    with pytest.raises(BundleError, match="model bundle format 2 is not supported \\(expected 1\\)"):
        OnnxClassifier(bundle_copy)


def test_a_newer_formats_card_is_refused_for_its_format_not_its_new_keys(bundle_copy):
    # Its keys this version does not know were named as an edited card's misspelling: "invalid: unknown key
    # preprocessing; did you mean version?".
    edit_card(bundle_copy, format=2, preprocessing={"resize": "bicubic"})
    with pytest.raises(
        BundleError, match=r"^model bundle format 2 is not supported \(expected 1\) \(a newer deepshield's: upgrade"
    ):
        OnnxClassifier(bundle_copy)
    edit_card(bundle_copy, format=0)
    with pytest.raises(BundleError, match=r"^model bundle format 0 is not supported \(expected 1\)$"):
        OnnxClassifier(bundle_copy)


def test_missing_onnx(bundle_copy):
    (bundle_copy / ONNX_FILE).unlink()
    with pytest.raises(BundleError, match=r"has no model.onnx"):
        OnnxClassifier(bundle_copy)


def test_checksum_mismatch(bundle_copy):
    onnx = bundle_copy / ONNX_FILE
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    onnx.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the checksum in its model card"):
        OnnxClassifier(bundle_copy)


def test_unloadable_onnx(bundle_copy):
    (bundle_copy / ONNX_FILE).write_bytes(b"not a protobuf at all")
    edit_card(bundle_copy, onnx_sha256=file_sha256(bundle_copy / ONNX_FILE))
    with pytest.raises(BundleError, match="is not a loadable ONNX model"):
        OnnxClassifier(bundle_copy)


def test_input_size_mismatch_between_card_and_graph(bundle_copy):
    edit_card(bundle_copy, input_size=128, crop_policy={"size": 128, "scale": 1.5, "align": False})
    with pytest.raises(
        BundleError,
        match=r"input \[\('image', \['batch', 64, 64, 3\], 'tensor\(uint8\)'\)\] does not match the card's 128x128x3 uint8",
    ):
        OnnxClassifier(bundle_copy)


def test_a_card_whose_outputs_or_crop_size_the_runtime_cannot_follow_is_refused(bundle_copy):
    # The runtime reads outputs by position and cuts faces at crop_policy.size: such a card loaded, and
    # every file with a face then failed ("only length-1 arrays can be converted", "expected 64 x 64 crops").
    card = json.loads((bundle_copy / CARD_FILE).read_text())
    with pytest.raises(
        ValueError, match=r"outputs \['cam', 'logit'\]: a model gives \['logit', 'cam'\], in that order"
    ):
        ModelCard.model_validate({**card, "outputs": {"cam": "", "logit": ""}})
    with pytest.raises(ValueError, match=r"crop_policy\.size 48 and input_size 64 differ"):
        ModelCard.model_validate({**card, "crop_policy": {**card["crop_policy"], "size": 48}})


def test_a_graph_fed_other_than_uint8_is_refused_at_load(tmp_path):
    # A float32 'image' input loaded, and every file failed at scoring with ONNX Runtime's INVALID_ARGUMENT.
    import onnx
    from onnx import TensorProto, helper

    bundle = tmp_path / "float-input"
    bundle.mkdir()
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["logit"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("ReduceMean", ["image"], ["cam"], axes=[3], keepdims=0)],
        "float", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["batch", 32, 32])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, bundle / ONNX_FILE)
    card = ModelCard(name="f", version="1", architecture="tiny", input_size=32, crop_policy=CropPolicy(size=32))
    card = card.model_copy(update={"onnx_sha256": file_sha256(bundle / ONNX_FILE)})
    (bundle / CARD_FILE).write_text(card.model_dump_json())
    with pytest.raises(BundleError, match="does not match the card's 32x32x3 uint8 'image'"):
        OnnxClassifier(bundle)


def test_a_graph_of_a_fixed_batch_size_is_refused_at_load(tmp_path):
    # Traced without a dynamic batch axis, it loaded, and every file whose faces were not that many failed at
    # scoring with ONNX Runtime's INVALID_ARGUMENT ('Got: 1 Expected: 2').
    net = DeepfakeNet("tiny", 32, pretrained=False).eval()
    card = ModelCard(name="fixed", version="1", architecture="tiny", input_size=32, crop_policy=CropPolicy(size=32))
    bundle = export_bundle(net, card, tmp_path / "fixed")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ExportWrapper(net, card.normalization).eval(),
            (torch.zeros(2, 32, 32, 3, dtype=torch.uint8),),
            str(bundle / ONNX_FILE),
            input_names=["image"],
            output_names=card.output_names(),
            opset_version=17,
            dynamo=False,
        )
    card = card.model_copy(update={"onnx_sha256": file_sha256(bundle / ONNX_FILE)})
    (bundle / CARD_FILE).write_text(card.model_dump_json())
    with pytest.raises(BundleError, match=r"model.onnx takes a batch of 2 faces only, where a bundle's graph"):
        OnnxClassifier(bundle)


def test_a_graph_whose_outputs_are_not_a_score_and_a_map_per_face_is_refused_at_load(tmp_path):
    # A logit of N x 32 loaded, and every file with a face failed: "only length-1 arrays can be converted".
    import onnx
    from onnx import TensorProto, helper

    bundle = tmp_path / "wide-logit"
    bundle.mkdir()
    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["pixels"], ["logit"], axes=[2, 3], keepdims=0),
         helper.make_node("ReduceMean", ["pixels"], ["cam"], axes=[3], keepdims=0)],
        "wide", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 32]),
         helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["batch", 32, 32])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), bundle / ONNX_FILE)
    card = ModelCard(name="w", version="1", architecture="tiny", input_size=32, crop_policy=CropPolicy(size=32))
    card = card.model_copy(update={"onnx_sha256": file_sha256(bundle / ONNX_FILE)})
    (bundle / CARD_FILE).write_text(card.model_dump_json())
    with pytest.raises(
        BundleError, match=r"outputs logit \['batch', 32\], where a model gives logit and synthetic_logit"
    ):
        OnnxClassifier(bundle)


def test_export_shows_no_tracer_warnings(tmp_path):
    net = DeepfakeNet("tiny", 32, pretrained=False).eval()
    card = ModelCard(name="quiet", version="1", architecture="tiny", input_size=32, crop_policy=CropPolicy(size=32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_bundle(net, card, tmp_path / "quiet")
    noise = [
        w for w in caught if issubclass(w.category, torch.jit.TracerWarning) or "Constant folding" in str(w.message)
    ]
    assert (
        noise == []
    )  # the tracer's constant and constant-folding warnings: expected, and kept off the user's terminal


def test_the_shipped_models_record_names_its_labelled_sets_and_generated_faces():
    from deepshield.inference.runtime import DEFAULT_BUNDLE, read_card

    card = read_card(DEFAULT_BUNDLE)
    record = card.record()
    assert [figures.labelled_set for figures in record.benchmarks] == [
        "dev-eval/dfdc-sample",
        "dev-eval/modern-swaps",
        "dev-eval/face-edits",
    ]
    swaps = record.benchmarks[1]
    assert swaps.file_auc is not None and swaps.file_auc.value == card.metrics["bench_modern_swaps_file_auc"]
    assert swaps.file_auc.low is not None and swaps.file_auc.low < swaps.file_auc.value < swaps.file_auc.high
    holdout = record.synthetic_holdout_auc
    assert holdout is not None and (holdout.value, holdout.low, holdout.high) == tuple(
        card.metrics[f"synthetic_holdout_auc{end}"] for end in ("", "_lo", "_hi")
    )
    # 1.2.3 refitted the synthetic-face score: its validation real faces flagged, measured by training at
    # 1.2.1's calibration, are not claimed at a threshold they were not measured at.
    assert record.synthetic_real_flagged is None and "synthetic_holdout_tpr" not in card.metrics


def test_the_shipped_cards_rates_agree_with_its_own_calibration_figures():
    """Carried over from training, 1.2.3's card said 1 of 22 modern-swaps real files flagged by each score
    (the product flags none) and no face-edits real file by the synthetic-face score, beside its own held-out
    figure of 3 of 534 (0.0056). Its synthetic calibration kept the verdicts, so each set held out was
    measured at the threshold the bundle applies: the rates the record shows are those."""
    from deepshield.inference.runtime import DEFAULT_BUNDLE, read_card

    card = read_card(DEFAULT_BUNDLE)
    assert card.synthetic is not None and "the verdicts unchanged" in card.synthetic.calibration.fitted_on
    metrics = card.metrics
    for figures in card.record().benchmarks:
        key = Path(figures.labelled_set).name.replace("-", "_")
        held_out = metrics[f"synthetic_calibration_heldout_{key}_real_after_flagged"]
        assert figures.synthetic_real_flagged == held_out, figures.labelled_set
        # the face-swap score, measured on the same real files by the same run
        assert figures.real_flagged == metrics[f"bench_{key}_fpr"]
    swaps = card.record().benchmarks[1]
    assert swaps.labelled_set == "dev-eval/modern-swaps" and swaps.real_flagged == swaps.synthetic_real_flagged == 0


def test_the_shipped_bundles_readme_is_the_one_calibrate_wrote_from_its_card(tmp_path):
    """The bundle's README was hand-written, and each ship edited it: the bundle holds only what the
    project's code wrote (its story is in docs/shipped-model.md)."""
    from deepshield.evaluation.recalibrate import calibrated_readme
    from deepshield.inference.runtime import DEFAULT_BUNDLE

    card = read_card(DEFAULT_BUNDLE)
    parent = tmp_path / "bundle-1.2.2"  # 1.2.3 was calibrated from 1.2.2's bundle under this name
    parent.mkdir()
    (parent / CARD_FILE).write_text(card.model_copy(update={"version": "1.2.2"}).model_dump_json())
    written = calibrated_readme(parent, card, card.training.benchmarks)
    assert (DEFAULT_BUNDLE / "README.md").read_text() == written
    assert "Research use" in written and "deepshield-effnetlite0-sbi 1.2.2" in written


def test_export_of_a_missing_or_foreign_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from deepshield.cli.main import EXIT_USAGE, main

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a photo, not a checkpoint")
    for checkpoint, message in [
        (tmp_path / "nothere.pt", f"no checkpoint at {tmp_path / 'nothere.pt'}"),
        (photo, f"{photo} is not a training checkpoint (UnpicklingError"),
    ]:
        assert main(["export", str(checkpoint), "--out", str(tmp_path / "bundle")]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "bundle").exists()
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "model_card.json").write_text("{}")  # a bundle already there is kept
    assert main(["export", str(photo), "--out", str(tmp_path / "bundle")]) == EXIT_USAGE
    assert "exists and is not empty (use --force to replace it)" in capsys.readouterr().err
    for command in (["export", str(photo), "--out", str(tmp_path / "b2")], ["soup", "a", "b", "--out", "c"]):
        with pytest.raises(SystemExit) as refused:  # a version cards, file names and URLs can carry
            main([*command, "--version", "not a version!"])
        assert refused.value.code == EXIT_USAGE
        assert "'not a version!' is not a version" in capsys.readouterr().err


def test_a_bundle_into_the_working_folder_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    # `--out .` in an empty folder ended, after the checkpoint was read (calibrate: after all the scoring), in
    # a traceback: "ValueError: PosixPath('.') has an empty name".
    from deepshield.cli.main import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", str(work), ".."):
        assert main(["export", str(tmp_path / "best.pt"), "--out", out, "--force"]) == EXIT_USAGE
        assert (
            f"{out} is the working folder or holds it: a new bundle replaces its folder whole"
            in capsys.readouterr().err
        )
    assert main(["soup", "a", "b", "--out", "."]) == EXIT_USAGE
    assert "is the working folder or holds it" in capsys.readouterr().err
    assert list(work.iterdir()) == []


def test_an_edited_cards_misspelt_key_is_refused_by_name(bundle_copy):
    """Loaded before with the default threshold in its place: `threshhold` was ignored."""
    card = json.loads((bundle_copy / CARD_FILE).read_text())
    card["calibration"]["threshhold"] = 0.9
    (bundle_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(
        BundleError, match=r"is invalid: unknown key calibration\.threshhold; did you mean calibration\.threshold\?$"
    ):
        OnnxClassifier(bundle_copy)
    card["calibration"].pop("threshhold")
    card["crop_policy"]["scal"] = 1.3
    (bundle_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match=r"unknown key crop_policy\.scal; did you mean crop_policy\.scale\?"):
        read_card(bundle_copy)


def test_a_cards_boolean_where_a_number_belongs_is_refused_by_name(bundle_copy):
    # `"threshold": true` loaded as a threshold of 1.0, `"input_size": true` as 1.
    card = json.loads((bundle_copy / CARD_FILE).read_text())
    card["calibration"]["threshold"] = True
    (bundle_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match=r"calibration\.threshold: Input should be a number, not a boolean"):
        read_card(bundle_copy)


def test_a_card_giving_a_key_twice_is_refused(bundle_copy, capsys):
    # json keeps the last of the two: the card loaded, and `deepshield model --json` exited 0.
    from deepshield.cli.main import main

    text = json.dumps(json.loads((bundle_copy / CARD_FILE).read_text()))
    assert text.count('"calibration": {') == 1
    (bundle_copy / CARD_FILE).write_text(text.replace('"calibration": {', '"calibration": {"threshold": 0.99, '))
    with pytest.raises(BundleError, match=r"model_card.json is invalid: key 'threshold' is given twice$"):
        read_card(bundle_copy)
    assert main(["model", "--model", str(bundle_copy), "--json"]) == 2
    assert "key 'threshold' is given twice" in capsys.readouterr().err


def test_a_card_without_its_checksum_is_refused(bundle_copy, capsys):
    """An emptied onnx_sha256 turned the graph check off: any model.onnx loaded under the card."""
    from deepshield.cli.main import main

    edit_card(bundle_copy, onnx_sha256="")
    with pytest.raises(BundleError, match=r"model_card.json gives no onnx_sha256 to check model.onnx against"):
        OnnxClassifier(bundle_copy)
    assert main(["model", "--model", str(bundle_copy)]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"deepshield: error: model card {bundle_copy / 'model_card.json'} gives no onnx_sha256 to check model.onnx "
        "against\n"
    )


def test_the_shipped_card_and_every_card_the_commands_write_load_under_the_strict_model(tiny_bundle, tmp_path):
    """Cards are not edited by hand: what the strict model refuses must be none of theirs."""
    from deepshield.inference.runtime import DEFAULT_BUNDLE
    from deepshield.training.soup import make_soup, write_soup

    for bundle in (DEFAULT_BUNDLE, tiny_bundle):
        ModelCard.model_validate_json((bundle / CARD_FILE).read_text())
    soup = write_soup(make_soup([tiny_bundle, tiny_bundle], None, "s", "1", "deepshield soup"), tmp_path / "soup")
    assert read_card(tmp_path / "soup") == soup


@pytest.mark.parametrize("command", [["soup", "a", "b"], ["export", "best.pt"]])
def test_force_replaces_a_bundle_only(tmp_path, capsys, command):
    # --force replaced whatever --out named, whole: a labelled set's photos, and a file, deleted unsaid.
    from deepshield.cli.main import main

    photos = tmp_path / "labelled"
    (photos / "real").mkdir(parents=True)
    (photos / "real" / "a.jpg").write_bytes(b"a photo")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    said = {
        photos: f"{photos} is not a model bundle (it has no model_card.json) and --force replaces only a bundle",
        notes: f"{notes} is a file, and --force replaces only a model bundle: give a folder",
    }
    # Without --force too: each was told to use --force, which then refused it.
    for out, force in itertools.product((photos, notes), ([], ["--force"])):
        assert main([*command, "--out", str(out), *force]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert said[out] in err and "use --force" not in err, err
    assert (photos / "real" / "a.jpg").read_bytes() == b"a photo" and notes.read_text() == "mine"


def test_threads_follow_the_cores_the_process_may_use_not_the_machines(tiny_net_bundle, monkeypatch):
    """A container's CPU-set limit leaves fewer cores than os.cpu_count() reports; ONNX Runtime's threads,
    the local engine's per-worker split and torch's threads count the usable ones."""
    import deepshield.inference.runtime as runtime
    from deepshield.engines.local import LocalEngine

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3}, raising=False)
    real_session = runtime.ort.InferenceSession
    threads = []

    def session(path, options, **kwargs):
        threads.append(options.intra_op_num_threads)
        return real_session(path, options, **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", session)
    OnnxClassifier(tiny_net_bundle[2])
    assert threads == [1]
    assert LocalEngine().worker_cpus(1) == 1
    assert LocalEngine().describe() == "this machine, 1 CPU"
    monkeypatch.delattr("os.sched_getaffinity")  # where it does not exist (macOS, Windows): all the machine's
    assert LocalEngine().worker_cpus(2) == 8
    assert LocalEngine().describe() == "this machine, 16 CPUs"
