"""Training the synthetic-face score with the project's trainer: frozen on a parent run (whose
manipulation output it must keep bit for bit) and jointly with the manipulation head."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshield.errors import DeepShieldError
from deepshield.faces.crop import CropPolicy
from deepshield.inference.runtime import OnnxClassifier, read_card
from deepshield.models.card import sigmoid
from deepshield.models.network import DeepfakeNet
from deepshield.training import trainer as trainer_module
from deepshield.training.benchmarks import BenchmarkOverlapError, load_benchmark
from deepshield.training.checkpoint import load_checkpoint
from deepshield.training.config import AugmentConfig
from deepshield.training.export import fit_synthetic_calibration
from deepshield.training.parent import bundle_weights, initial_weights
from deepshield.training.soup import make_soup, write_soup
from deepshield.training.synthetic import ScoredChecks, SyntheticFaceSamples, build_synthetic_data
from deepshield.training.trainer import Trainer
from tests.face_data import write_benchmark, write_generated_faces, write_real_faces
from tests.test_bundle import face_like_crops
from tests.test_training import tiny_config

CHECKS = ("val", "holdout", "holdout_downscaled", "holdout_jpeg", "confound", "holdout_cut")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faces")
    return write_real_faces(root / "real", 8), write_generated_faces(root / "generated", 12)


def synthetic_settings(faces, **extra) -> dict:
    real, generated = faces
    return {
        "synthetic.fake_dirs": f'["{generated}"]',
        "synthetic.matched_real_dir": str(real),
        "optim.samples_per_epoch": 32,
        "optim.lr": 1e-2,
    } | extra


def record_network_passes(monkeypatch) -> list[np.ndarray]:
    """Every batch of crops the trainer runs the network over, in order."""
    seen: list[np.ndarray] = []
    predict_heads = trainer_module.predict_heads

    def recording(net, images, batch_size=64, flip=False, synthetic_crops=None):
        seen.append(np.array(images, copy=True))
        return predict_heads(net, images, batch_size, flip, synthetic_crops)

    monkeypatch.setattr(trainer_module, "predict_heads", recording)
    return seen


def passes_over(seen: list[np.ndarray], crops: np.ndarray) -> int:
    return sum(a.shape == crops.shape and np.array_equal(a, crops) for a in seen)


@pytest.fixture(scope="module")
def parent(faces, tmp_path_factory, mlflow_store):
    root = tmp_path_factory.mktemp("parent")
    return Trainer(tiny_config(faces[0], root / "run", mlflow_store(root / "mlruns.db"), root / "cache")).run()


def test_frozen_mode_keeps_the_parent_manipulation_output_bit_for_bit(faces, parent, tmp_path, astronaut, mlflow_store):
    settings = synthetic_settings(
        faces,
        **{
            "synthetic.init": str(parent.run_dir / "checkpoints" / "best.pt"),
            "export.select": "max.synthetic_val_auc",
            "export.threshold_fpr": 0.2,  # not the parent's (none): the manipulation threshold must stay the parent's
            "export.test_time_flip": "true",  # nor may the manipulation output change by a flip the parent had not
        },
    )
    result = Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings),
        command="pytest",
    ).run()
    before = load_checkpoint(parent.run_dir / "checkpoints" / "best.pt")["model"]
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["model"]
    for name, tensor in before.items():  # trunk, batch-norm statistics and manipulation head untouched
        assert torch.equal(tensor, after[name]), name
    assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in after if k.startswith("synthetic_head."))

    crops = face_like_crops(astronaut, 48, 6)
    old, new = OnnxClassifier(parent.bundle_dir), OnnxClassifier(result.bundle_dir)
    old_scores, new_scores = old.score(crops), new.score(crops)
    np.testing.assert_array_equal(new_scores.logits, old_scores.logits)  # the face-swap score is the parent's
    np.testing.assert_array_equal(new_scores.cams, old_scores.cams)
    assert new_scores.synthetic_logits.shape == (6,) and old_scores.synthetic_logits is None

    card = new.card
    assert card.calibration == old.card.calibration  # fitted from the parent's validation logits, as the parent's was
    assert card.synthetic.calibration.temperature > 0 and card.synthetic.calibration.inconclusive is not None
    assert "synthetic-face validation split" in card.synthetic.calibration.fitted_on
    assert str(parent.run_dir) in card.synthetic.parent and card.synthetic.trained.startswith("frozen")
    assert card.synthetic.parent_training.config == old.card.training.config  # the parent's recipe, as its card has it
    assert "central" in card.synthetic.pooling and list(card.outputs) == ["logit", "cam", "synthetic_logit"]
    for check in CHECKS:
        assert 0 <= card.metrics[f"synthetic_{check}_auc"] <= 1
        assert (
            card.metrics[f"synthetic_{check}_auc_lo"]
            <= card.metrics[f"synthetic_{check}_auc"]
            <= card.metrics[f"synthetic_{check}_auc_hi"]
        )
    assert 0 <= card.metrics["synthetic_real_fpr"] <= 1 and "synthetic_matched_real_fpr" in card.metrics
    assert 0 <= card.metrics["synthetic_holdout_tpr"] <= 1
    assert 0 <= card.metrics["synthetic_holdout_cut_tpr"] <= 1 and 0 <= card.metrics["synthetic_cut_real_fpr"] <= 1
    assert all(f"synthetic_{check}_auc" in h for h in result.progress.history for check in CHECKS)


def test_frozen_mode_holds_the_synthetic_threshold_on_the_benchmarks_real_files(
    faces, parent, tmp_path, monkeypatch, mlflow_store
):
    """The verdict takes the more severe of the two scores, so a benchmark's real files bound the synthetic
    threshold too: at 20% of two real files, neither may be called synthetic. Only those files are scored."""
    seen = record_network_passes(monkeypatch)
    benchmark = write_benchmark(tmp_path / "Tiny Bench")
    settings = synthetic_settings(
        faces,
        **{
            "synthetic.init": str(parent.run_dir / "checkpoints" / "best.pt"),
            "synthetic.threshold_fpr": "0.2",
            "export.select": "max.synthetic_val_auc",
            "data.benchmarks": f'["{benchmark}"]',
            "data.benchmark_frames": "2",
            "optim.epochs": "1",
        },
    )
    result = Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings),
        command="pytest",
    ).run()
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    reals = best["synthetic_benchmark_reals"]["tiny_bench"]
    assert len(reals) == 2  # the two real photos, scored by the synthetic head
    calibration = read_card(result.bundle_dir).synthetic.calibration
    for _, logits, _ in reals:
        assert sigmoid(np.max(logits) / calibration.temperature) < calibration.threshold
    assert "tiny_bench 2" in calibration.fitted_on
    card = read_card(result.bundle_dir)
    assert card.metrics["synthetic_bench_tiny_bench_fpr"] == 0.0
    assert result.progress.history[-1]["synthetic_bench_tiny_bench_fpr"] == 0.0
    without = fit_synthetic_calibration(ScoredChecks.from_stored(best["synthetic_checks"]), 0.2)
    assert calibration.threshold >= without.threshold  # the benchmark can only raise it
    policy = CropPolicy(size=card.input_size, scale=card.crop_policy.scale)
    cut = load_benchmark(benchmark, policy, tmp_path / "cache", [], 2)  # the run's cached faces
    assert passes_over(seen, cut.real_files_only().crops) == 1 and passes_over(seen, cut.crops) == 0


def test_a_benchmark_holding_a_synthetic_training_photo_is_refused(faces, parent, tmp_path, mlflow_store):
    real, generated = faces
    benchmark = tmp_path / "leaky"
    shutil.copytree(generated, benchmark / "fake")
    shutil.copytree(real, benchmark / "real")
    settings = synthetic_settings(
        faces,
        **{
            "synthetic.init": str(parent.run_dir / "checkpoints" / "best.pt"),
            "export.select": "max.synthetic_val_auc",
            "data.benchmarks": f'["{benchmark}"]',
        },
    )
    config = tiny_config(real, tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    with pytest.raises(BenchmarkOverlapError, match="leaky shares"):
        Trainer(config).run()


def test_frozen_mode_on_a_bundle_keeps_its_manipulation_score_and_card(
    faces, parent, tmp_path, astronaut, mlflow_store
):
    """A parent whose checkpoint was not kept (the shipped model): its weights come back from the graph,
    its calibration and figures from its card."""
    settings = synthetic_settings(
        faces, **{"synthetic.init": str(parent.bundle_dir), "export.select": "max.synthetic_val_auc"}
    )
    result = Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings),
        command="pytest",
    ).run()
    crops = face_like_crops(astronaut, 48, 6)
    old, new = OnnxClassifier(parent.bundle_dir), OnnxClassifier(result.bundle_dir)
    old_scores, new_scores = old.score(crops), new.score(crops)
    assert np.ptp(old_scores.logits) > 1e-3
    np.testing.assert_allclose(new_scores.logits, old_scores.logits, rtol=1e-4, atol=1e-5)  # folded and refolded
    np.testing.assert_allclose(new_scores.cams, old_scores.cams, rtol=1e-4, atol=1e-5)
    assert new_scores.synthetic_logits.shape == (6,)
    assert new.card.calibration == old.card.calibration  # as shipped, not refitted
    assert new.card.metrics["val_auc"] == old.card.metrics["val_auc"]
    assert new.card.synthetic.parent.startswith(f"bundle {old.card.name} {old.card.version}")
    kept = new.card.synthetic.parent_training  # how the manipulation score was trained: the parent's record
    assert kept.command == old.card.training.command and kept.config["model"] == old.card.training.config["model"]
    assert "run_dir" not in kept.config and "cache_dir" not in kept.config["data"]  # no machine folders


def test_a_head_on_a_soup_keeps_the_soups_record(faces, parent, tmp_path, mlflow_store):
    """A soup was not trained: its head's card names the soup's ingredients, not a configuration."""
    soup = write_soup(
        make_soup([parent.bundle_dir, parent.bundle_dir], None, "s", "1.0.0", "deepshield soup"), tmp_path / "soup"
    )
    settings = synthetic_settings(
        faces, **{"synthetic.init": str(tmp_path / "soup"), "export.select": "max.synthetic_val_auc"}
    )
    result = Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    ).run()
    kept = OnnxClassifier(result.bundle_dir).card.synthetic.parent_training
    assert kept.config == {} and kept.command == "deepshield soup"
    assert [i.name for i in kept.soup] == [i.name for i in soup.training.soup] and len(kept.soup) == 2


def test_a_bundle_with_a_synthetic_head_has_it_replaced(faces, parent, tmp_path, astronaut, mlflow_store):
    """The shipped model keeps no checkpoint: its head is retrained on its own graph's trunk, the face-swap
    score and the record of how it was trained kept, the old head's figures and weights left behind."""
    settings = synthetic_settings(
        faces, **{"synthetic.init": str(parent.bundle_dir), "export.select": "max.synthetic_val_auc"}
    )
    first = Trainer(
        tiny_config(faces[0], tmp_path / "a", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    ).run()
    settings |= {"synthetic.init": str(first.bundle_dir), "seed": "3"}
    second = Trainer(
        tiny_config(faces[0], tmp_path / "b", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    ).run()
    crops = face_like_crops(astronaut, 48, 6)
    old, new = OnnxClassifier(first.bundle_dir), OnnxClassifier(second.bundle_dir)
    old_scores, new_scores = old.score(crops), new.score(crops)
    np.testing.assert_allclose(new_scores.logits, old_scores.logits, rtol=1e-4, atol=1e-5)
    assert np.abs(new_scores.synthetic_logits - old_scores.synthetic_logits).max() > 1e-3  # a head of its own
    assert new.card.calibration == old.card.calibration
    parent_card = OnnxClassifier(parent.bundle_dir).card
    kept = new.card.synthetic.parent_training  # the face-swap score's training, not the first head's
    assert kept.command == parent_card.training.command and kept.config.get("synthetic") is None
    assert new.card.synthetic.parent.startswith(f"bundle {old.card.name} {old.card.version}")


def test_joint_mode_trains_both_heads_from_one_loss(faces, tmp_path, monkeypatch, mlflow_store):
    seen = record_network_passes(monkeypatch)
    benchmark = write_benchmark(tmp_path / "bench")
    settings = synthetic_settings(
        faces,
        **{
            "synthetic.mode": "joint",
            "data.benchmarks": f'["{benchmark}"]',
            "data.benchmark_frames": "2",
            "data.loader_workers": "1",  # as trained by default: both streams' workers serve both epochs
        },
    )
    result = Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    ).run()
    history = result.progress.history
    assert all("val_auc" in h and "synthetic_holdout_auc" in h for h in history)  # both scores validated every epoch
    first = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_001.pt")["model"]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_002.pt")["model"]
    for prefix in ("backbone.", "head.", "synthetic_head."):  # every part moved in the second epoch
        assert any(not torch.equal(first[k], last[k]) for k in first if k.startswith(prefix)), prefix
    card = OnnxClassifier(result.bundle_dir).card
    assert card.synthetic.trained.startswith("joint") and card.synthetic.parent is None and "val_auc" in card.metrics
    assert all("bench_bench_face_auc" in h and "synthetic_bench_bench_fpr" in h for h in history)
    cut = load_benchmark(benchmark, card.crop_policy, tmp_path / "cache", [], 2)
    assert passes_over(seen, cut.crops) == len(history)  # one pass an epoch serves both heads


def _weights(state: dict) -> dict:
    """The trained parameters of a state dict (batch-norm statistics move in any training step)."""
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches_tracked" not in k}


def test_joint_mode_fine_tunes_from_a_checkpoint(faces, parent, tmp_path, mlflow_store):
    """model.init: every weight starts from a trained run's (here at a learning rate too small to move
    them), and the synthetic head it lacks starts fresh."""
    init = parent.run_dir / "checkpoints" / "best.pt"
    settings = synthetic_settings(faces, **{"synthetic.mode": "joint", "model.init": str(init), "optim.lr": 1e-12})
    Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    ).run()
    before = _weights(load_checkpoint(init)["model"])
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_001.pt")["model"]
    assert set(after) - set(before) >= {"synthetic_head.weight"}
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=1e-6, atol=1e-8)
    fresh = DeepfakeNet("tiny", 48, pretrained=False).state_dict()
    assert any(not torch.allclose(fresh[k], before[k]) for k in before)  # the parent is not an untrained net


def test_joint_mode_fine_tunes_from_a_bundle_with_its_batch_norms_kept(
    faces, parent, tmp_path, astronaut, mlflow_store
):
    """From a bundle (weights read back from its graph, batch norms folded): the fine-tuned model
    computes the bundle's function until its weights move, then the synthetic head trains from fresh."""
    settings = synthetic_settings(
        faces, **{"synthetic.mode": "joint", "model.init": str(parent.bundle_dir), "optim.lr": 1e-12}
    )
    result = Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    ).run()
    crops = face_like_crops(astronaut, 48, 6)
    old, new = OnnxClassifier(parent.bundle_dir).score(crops), OnnxClassifier(result.bundle_dir).score(crops)
    assert np.ptp(old.logits) > 1e-3
    np.testing.assert_allclose(new.logits, old.logits, rtol=1e-4, atol=1e-4)
    assert new.synthetic_logits is not None and old.synthetic_logits is None


def test_a_fine_tune_resumes_only_from_the_weights_it_started_from(faces, parent, tmp_path, mlflow_store):
    # model.init is read again at resume (init_share mixes it in every epoch): rewritten in between, a resumed
    # run silently mixed in other weights (up to 0.47 a weight from the uninterrupted run).
    import shutil

    init = tmp_path / "init.pt"
    shutil.copy(parent.run_dir / "checkpoints" / "best.pt", init)
    settings = {"model.init": str(init), "model.init_share": 0.25}
    config = tiny_config(
        faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings
    )
    assert Trainer(config.model_copy(update={"max_steps": 3})).run().stopped_early
    original = init.read_bytes()
    state = torch.load(init, weights_only=False)
    state["model"] = {k: v + 0.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, init)
    with pytest.raises(DeepShieldError, match=r"init\.pt no longer holds the weights .*last\.pt started from"):
        Trainer(config).run(resume=True)
    init.write_bytes(original)  # put back: the run goes on
    assert Trainer(config).run(resume=True).bundle_dir is not None


def test_init_share_evaluates_and_exports_the_fine_tune_mixed_with_its_start(faces, parent, tmp_path, mlflow_store):
    """WiSE-FT: training moves the weights as without it; what an epoch is scored, chosen and exported by
    is init_share x the starting weights + the rest x the trained ones."""
    init = parent.run_dir / "checkpoints" / "best.pt"
    settings = {"model.init": str(init), "model.init_share": 0.25, "optim.lr": 1e-2}
    result = Trainer(
        tiny_config(faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    ).run()
    start = load_checkpoint(init)["model"]
    checkpoints = tmp_path / "run" / "checkpoints"
    trained = load_checkpoint(checkpoints / "last.pt")["model"]  # the weights training moved, to resume from
    judged = load_checkpoint(checkpoints / "epoch_002.pt")["model"]  # the last epoch's, as scored and exportable
    assert any(not torch.allclose(trained[k], start[k]) for k in _weights(start))  # the fine-tune trained
    for name in _weights(start):
        torch.testing.assert_close(judged[name], 0.25 * start[name] + 0.75 * trained[name])
    best = load_checkpoint(checkpoints / "best.pt")
    chosen = load_checkpoint(checkpoints / f"epoch_{best['epoch'] + 1:03d}.pt")["model"]
    for name in _weights(start):
        torch.testing.assert_close(best["model"][name], chosen[name])
    assert read_card(result.bundle_dir).training.config["model"]["init_share"] == 0.25
    # A synthetic head frozen on that fine-tune: its parent's model.init is the parent's history, not its own.
    frozen = synthetic_settings(
        faces,
        **{
            "synthetic.init": str(tmp_path / "run" / "checkpoints" / "best.pt"),
            "export.select": "max.synthetic_val_auc",
        },
    )
    headed = Trainer(
        tiny_config(faces[0], tmp_path / "frozen", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **frozen)
    ).run()
    card = read_card(headed.bundle_dir)
    assert card.training.config["model"]["init"] is None and card.training.config["model"]["init_share"] == 0
    assert card.synthetic.parent_training.config["model"]["init_share"] == 0.25
    with pytest.raises(DeepShieldError, match=r"model\.init_share mixes in model\.init's weights: set model\.init"):
        tiny_config(
            faces[0], tmp_path / "r", mlflow_store(tmp_path / "m.db"), tmp_path / "c", **{"model.init_share": 0.5}
        )


def test_model_init_must_match_the_model_settings(faces, parent, tmp_path, mlflow_store):
    other = tiny_config(
        faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache",
        **{"model.init": str(parent.bundle_dir), "model.backbone": "efficientnet_lite0"},
    )  # fmt: skip
    with pytest.raises(DeepShieldError, match=r"model.init .* is a tiny network, but this run's model.backbone is eff"):
        initial_weights(other)
    # Another crop scale or input size is a fine-tune to a new framing or resolution: the same weights,
    # every one of them, to start from.
    bundle = bundle_weights(parent.bundle_dir, read_card(parent.bundle_dir))
    for change in ({"model.crop_scale": 1.3}, {"model.input_size": 64}):
        moved = tiny_config(
            faces[0], tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache",
            **{"model.init": str(parent.bundle_dir), **change},
        )  # fmt: skip
        start = initial_weights(moved)
        assert start.keys() == bundle.keys() and all(torch.equal(start[k], bundle[k]) for k in bundle), change
    with pytest.raises(DeepShieldError, match=r"a frozen synthetic run keeps synthetic\.init"):
        tiny_config(
            faces[0],
            tmp_path / "run",
            mlflow_store(tmp_path / "mlruns.db"),
            tmp_path / "cache",
            **synthetic_settings(
                faces,
                **{
                    "synthetic.init": str(parent.bundle_dir),
                    "model.init": str(parent.bundle_dir),
                    "export.select": "max.synthetic_val_auc",
                },
            ),
        )


def test_generated_training_faces_take_a_real_faces_padding():
    """Tight real photos' crops run into black padding, generated faces are framed whole: with
    fake_padding_share 1 every generated sample is blacked out where a real training crop was padding."""
    still = AugmentConfig(
        jpeg_probability=0, rescale_probability=0, blur_probability=0, noise_probability=0, colour_probability=0,
        flip_probability=0, jitter_shift=0, jitter_scale=0, jitter_rotation_deg=0, codec_probability=0,
    )  # fmt: skip
    fake = np.full((3, 16, 16, 3), 200, np.uint8)
    real = np.full((2, 16, 16, 3), 100, np.uint8)
    valid = np.ones((2, 16, 16), bool)
    valid[0, :, :5] = False  # the first real crop ran past its photo's left edge
    valid[1, 12:] = False  # the second past its bottom edge
    padded = SyntheticFaceSamples(fake, real, valid, 40, 0, still, fake_padding_share=1.0)
    framed = SyntheticFaceSamples(fake, real, valid, 40, 0, still)
    shapes = set()
    for index in range(1, 40, 2):  # odd: generated
        image, label = padded[(0, index)]
        assert label == 1
        black = (image.numpy() == 0).all(axis=2)
        assert any(np.array_equal(black, ~valid[i]) for i in range(2))
        shapes.add(int(black.sum()))
        assert (framed[(0, index)][0].numpy() == 200).all()  # without it: framed whole
    assert shapes == {80, 64}  # both real crops' padding drawn
    real_image, label = padded[(0, 0)]
    assert label == 0 and (real_image.numpy() == 100).all()  # real faces keep their own framing


def test_a_matched_real_folder_without_validation_faces_says_what_to_change(faces, tmp_path, mlflow_store):
    """A first small run's matched folder had no person drawn for validation, and the error said only that
    the check needs some: it now says whether to name another folder or to add people or validation share."""
    real = faces[0]
    few = tmp_path / "few"
    few.mkdir()
    shutil.copy(next(real.glob("person1_*.png")), few / "person7_0.png")

    def data_for(**extra):
        config = tiny_config(
            real,
            tmp_path / "run",
            mlflow_store(tmp_path / "mlruns.db"),
            tmp_path / "cache",
            **synthetic_settings(faces, **{"synthetic.mode": "joint"} | extra),
        )
        return build_synthetic_data(config, progress=False)

    with pytest.raises(DeepShieldError, match=r"\(synthetic.matched_real_dir\).*not one of the real-face folders"):
        data_for(**{"synthetic.matched_real_dir": str(few)})
    with pytest.raises(DeepShieldError, match=r"none of its 1 faces' people was drawn .* raise data.val_fraction"):
        data_for(**{"synthetic.matched_real_dir": str(few), "data.real_dirs": f'["{real}", "{few}"]'})
