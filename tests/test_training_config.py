"""Training configuration: strict keys with suggestions, checked values, data paths from one setting,
and the shipped model's card agreeing with its configuration."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from deepshield.errors import DeepShieldError
from deepshield.inference.runtime import DEFAULT_BUNDLE, OnnxClassifier
from deepshield.training.config import DATA_DIR_ENV, DEFAULT_CONFIG, SYNTHETIC_AUGMENT, TrainConfig, load_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1e-3", r"unknown key optim\.lrr; did you mean optim\.lr\?"),
        ("modle.input_size=96", r"unknown key modle; did you mean model\?"),
        ("augment.codec_prob=0.3", r"unknown key augment\.codec_prob; did you mean augment\.codec_probability\?"),
        ("synthesis.part_prob=0.3", r"unknown key synthesis\.part_prob; did you mean synthesis\.part_probability\?"),
        ("model.backbone=resnet50", r"model\.backbone: Input should be 'efficientnet_lite0' or 'tiny'"),
        ("optim.optimizer=sgd", r"optim\.optimizer: Input should be 'adamw' or 'sam'"),
        ("export.select=max.train_loss", "selects on a training metric"),
        # Sampled ranges are checked when the config loads, not at the first training sample.
        ("augment.jpeg_quality=[90, 40]", r"augment\.jpeg_quality: .*low <= high <= 100, got \(90, 40\)"),
        ("augment.codec_crf=[18, 60]", r"augment\.codec_crf: .*0 <= low <= high <= 51, got \(18, 60\)"),
        ("augment.rescale_range=[0.9, 0.3]", r"augment\.rescale_range: .*low <= high <= 1\.0"),
        ("synthesis.source_jpeg_quality=[0, 40]", r"synthesis\.source_jpeg_quality: .*1 <= low"),
        # one synthetic.* key turns the synthetic-face head on: the error says so, and how to go on
        ("synthetic.threshold_fpr=0.05", r"any synthetic\.\* key sets one.*needs synthetic\.init.*'joint'"),
        # as `export --version` refuses it: any text went into the card, spaces and all
        ("export.version=my model v2", r"export\.version: Value error, not a version: letters, digits"),
        ('export.version=""', r"export\.version: Value error, not a version"),
    ],
)
def test_a_typo_or_bad_value_is_an_error_that_names_the_key(override, message):
    with pytest.raises(DeepShieldError, match=message):
        load_config(None, [override])


def test_unknown_keys_in_a_file_and_a_params_file_are_refused_too(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("optim:\n  epochs: 2\n  warmup: 0.1\n")
    with pytest.raises(DeepShieldError, match=r"unknown key optim\.warmup; did you mean optim\.warmup_fraction\?"):
        load_config(config)
    params = tmp_path / "best.yaml"
    params.write_text("model.dropuot: 0.3\n")
    with pytest.raises(DeepShieldError, match=r"unknown key model\.dropuot; did you mean model\.dropout\?"):
        load_config(None, [], params)
    broken = tmp_path / "broken.toml"
    broken.write_text("[optim\nepochs = 2\n")
    with pytest.raises(DeepShieldError, match="cannot be parsed"):
        load_config(broken)


def test_a_toml_or_json_file_is_read_without_pyyaml(tmp_path, monkeypatch):
    # PyYAML was imported for every file: a machine without it could not read a TOML configuration.
    from deepshield.training.config import read_mapping

    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    (tmp_path / "c.toml").write_text("[optim]\nepochs = 2\n")
    (tmp_path / "c.json").write_text('{"optim": {"epochs": 2}}')
    for name in ("c.toml", "c.json"):
        assert read_mapping(tmp_path / name) == {"optim": {"epochs": 2}}
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DeepShieldError, match="cannot be parsed"):
        read_mapping(tmp_path / "broken.json")


def test_relative_data_paths_come_from_the_data_dir_setting(tmp_path, monkeypatch):
    (tmp_path / "real-faces" / "a").mkdir(parents=True)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    config = load_config(None, ['data.real_dirs=["real-faces/a"]'])
    monkeypatch.chdir(tmp_path / "real-faces")  # anywhere but the data folder
    with pytest.raises(
        DeepShieldError,
        match=rf"real-face folder real-faces/a not found .*set {DATA_DIR_ENV} \(or data\.root, or --data-dir\)",
    ):
        config.data.locate(config.data.real_dirs[0], "real-face folder")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert config.data.locate(config.data.real_dirs[0], "real-face folder") == tmp_path / "real-faces" / "a"
    rooted = load_config(None, [f"data.root={tmp_path}", 'data.real_dirs=["real-faces/a"]'])
    monkeypatch.delenv(DATA_DIR_ENV)
    assert rooted.data.locate(Path("real-faces/a"), "x") == tmp_path / "real-faces" / "a"
    assert "root" not in rooted.recorded()["data"]  # a machine's folder never reaches a model card


def test_the_packaged_config_names_data_relative_to_the_data_dir():
    config = load_config()
    assert all(not p.is_absolute() and not str(p).startswith("..") for p in config.data.real_dirs)
    assert config.export.name is None and config.export.version is None  # a toy run is named after itself


def test_the_shipped_bundle_loads_and_its_card_agrees_with_its_configuration():
    classifier = OnnxClassifier(DEFAULT_BUNDLE)  # checks the ONNX file against the card's SHA-256
    card = classifier.card
    assert len(card.onnx_sha256) == 64
    config = TrainConfig.model_validate(card.training.config)  # strict: the card's config is a valid one
    assert (config.model.input_size, config.model.crop_scale, config.model.backbone) == (
        card.input_size,
        card.crop_policy.scale,
        card.architecture,
    )
    assert card.crop_policy.size == card.input_size
    words = shlex.split(card.training.command)
    assert words[:2] == ["deepshield", "train"]
    for item in [w for w in words if "=" in w and not w.startswith("-")]:  # every --set in the command is in the config
        key, value = item.split("=", 1)
        if key == "run_dir":  # a machine's folder: never recorded
            continue
        node = card.training.config
        for part in key.split("."):
            node = node[part]
        assert json.dumps(node) == value or str(node) == value, key
    assert DEFAULT_CONFIG.is_file()


def test_the_repository_holds_the_recipe_that_trained_the_shipped_model():
    """The shipped face-swap score's training command, run from this repository, configures the recipe
    its card records: the packaged configuration, or the configuration file the command names (the
    fine-tune study's) with the command's --set values."""
    card = OnnxClassifier(DEFAULT_BUNDLE).card
    # A frozen synthetic head keeps its parent's manipulation score: the recipe is the parent's.
    trained = card.manipulation_training()
    shipped = TrainConfig.model_validate(trained.config)
    words = shlex.split(trained.command)
    config_file = Path(words[words.index("--config") + 1]) if "--config" in words else None
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    packaged = load_config(config_file, sets)
    for section in ("model", "optim", "augment", "synthesis"):
        assert getattr(packaged, section) == getattr(shipped, section), section
    for key in ("group_pattern", "val_fraction", "cross_blend_fraction", "synthesize"):
        assert getattr(packaged.data, key) == getattr(shipped.data, key), key
    assert [p.parts[-2:] for p in packaged.data.real_dirs] == [p.parts[-2:] for p in shipped.data.real_dirs]
    assert packaged.seed == shipped.seed


def test_a_recorded_command_names_no_machine_folder():
    from deepshield.training.config import recorded_command

    lease = (
        "deepshield -v train --config docs/study/gpu.toml --data-dir .kit --run-dir /tmp/gpu-run --set optim.lr=6e-4"
    )
    assert (
        recorded_command(lease)
        == "deepshield -v train --config docs/study/gpu.toml --data-dir .kit --set optim.lr=6e-4"
    )
    here = "deepshield train --run-dir=runs/x --data-dir /data --tracking-uri sqlite:///m.db --set 'data.real_dirs=[\"a b\"]' --resume"
    # A resumed run's card records the command that trains it again, not the one that continued it.
    assert recorded_command(here) == "deepshield train --set 'data.real_dirs=[\"a b\"]'"
    assert recorded_command("") == ""
    # --set gave the same folders (they were kept), and files were named by absolute paths.
    elsewhere = (
        "deepshield train --config /home/alice/train.yaml --params=/home/alice/best.yaml --set run_dir=/srv/runs/a "
        "--set data.cache_dir=/srv/cache --set tracking.uri=sqlite:////home/alice/m.db --set data.root=/data "
        "--set data.root=.kit --set model.dropout=0.5"
    )
    assert recorded_command(elsewhere) == (
        "deepshield train --config train.yaml --params best.yaml --set data.root=.kit --set model.dropout=0.5"
    )
    inside = Path.cwd() / "docs" / "study" / "gpu.toml"
    assert recorded_command(f"deepshield train --config {inside}") == "deepshield train --config docs/study/gpu.toml"


def test_a_resume_command_is_the_train_command_with_resume():
    from deepshield.training.config import resume_command

    assert resume_command("deepshield -v train --config my.toml") == "deepshield -v train --config my.toml --resume"
    assert resume_command("deepshield train --resume --run-dir r") == "deepshield train --resume --run-dir r"
    # A search's trial records what it was, not a command to rerun; a run trained from Python records none.
    assert resume_command("deepshield tune (study s, trial 3)") is None
    assert resume_command("") is None


STUDY = Path(__file__).resolve().parent.parent / "docs" / "study"


@pytest.mark.parametrize(
    ("base", "runs"),
    [("base.toml", "runs.yaml"), ("finetune.toml", "finetune-runs.yaml"), ("finetune-1.2.2.toml", "retouch-runs.yaml")],
)
def test_every_committed_study_run_is_a_valid_configuration(base, runs):
    """The study's documented commands fail at once on a mistyped key or a bad value, not hours in."""
    import yaml

    recipes = yaml.safe_load((STUDY / runs).read_text())
    for name, overrides in recipes.items():
        settings = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
        try:
            load_config(STUDY / base, settings)
        except DeepShieldError as error:
            raise AssertionError(f"{runs}: {name}: {error}") from error
    for config in ("gpu.toml", "cross-codec.toml", "sbi-codec.toml"):
        load_config(STUDY / config)


def test_a_section_given_whole_keeps_the_keys_it_leaves_out(tmp_path):
    # `optim: {lr: ...}` in --params (a search's best.yaml) or --set reset every other optim key to the
    # model's default: default.toml's optim.epochs 5 became 6.
    default = load_config()
    params = tmp_path / "best.yaml"
    params.write_text("optim: {lr: 1.0e-3}\n")
    for config in (load_config(params=params), load_config(None, ['optim={"lr": 0.001}'])):
        assert config.optim.lr == 1e-3 and config.optim.epochs == default.optim.epochs
    params.write_text("1: 2\n")
    with pytest.raises(DeepShieldError, match="key 1 is not a setting's name"):
        load_config(params=params)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("dup.yaml", "optim:\n  lr: 1.0e-3\n  epochs: 3\noptim:\n  lr: 4.0e-4\n", "line 4.*'optim' is given twice"),
        ("dup.json", '{"seed": 1, "seed": 2}', "'seed' is given twice"),
        ("list-key.yaml", "? [a, b]\n: 1\n", "line 1, column 3: found unhashable key"),  # a TypeError traceback
    ],
)
def test_keys_a_file_cannot_give_settings_by_are_refused(tmp_path, name, text, message):
    # YAML and JSON kept the last of two sections without a word (the first optim section was gone).
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DeepShieldError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.samples_per_epoch=3", "an epoch would take no step"),  # it exported the untrained network
        ("optim.lr=Infinity", "optim.lr"),  # a whole epoch trained to NaN scores
        ("threads=-1", "threads"),
        ("max_steps=0", "max_steps"),
        ("data.limit_per_folder=0", "data.limit_per_folder"),  # 0 meant all, -1 dropped each folder's last file
        ("data.group_pattern=(unclosed", "data.group_pattern: .*not a regular expression"),
        ("data.group_pattern=person", "data.group_pattern: .*needs a group"),
        # "N generated faces are too few for a 60% holdout and 50% validation", once the files were listed
        ('synthetic={"mode": "joint", "holdout_fraction": 0.6, "val_fraction": 0.5}', "add up to 1 or more"),
        # MLflow's own store (mlflow.db here) took the run, and the last line named no store to open
        ('tracking.uri=""', "tracking.uri: String should have at least 1 character"),
        ('tracking.experiment=""', "tracking.experiment: String should have at least 1 character"),  # after the bank
    ],
)
def test_values_that_would_fail_late_or_silently_are_refused_when_the_settings_load(override, message):
    with pytest.raises(DeepShieldError, match=message):
        load_config(None, [override])


def checked_early_config(tmp_path, setting: str):
    """A training configuration on an empty real folder, its run and cache in `tmp_path`, with `setting`: what
    is refused before any data is built (the cache folder not made)."""
    real = tmp_path / "real"
    real.mkdir()
    overrides = [f'data.real_dirs=["{real}"]', setting, f"run_dir={tmp_path / 'run'}"]
    return load_config(None, [*overrides, f"data.cache_dir={tmp_path / 'cache'}", "tracking.enabled=false"])


def test_a_configured_folder_that_is_not_there_is_refused_before_the_face_bank(tmp_path):
    from deepshield.training.trainer import Trainer

    config = checked_early_config(tmp_path, f'data.benchmarks=["{tmp_path / "dev-eval" / "dfdc-sampel"}"]')
    with pytest.raises(DeepShieldError, match=r"benchmark .*dfdc-sampel not found"):
        Trainer(config).run()
    assert not (tmp_path / "cache").exists()  # refused before any face was detected


def test_a_missing_model_init_is_refused_before_the_data_is_built(tmp_path, monkeypatch):
    # The README's `train --config docs/study/finetune.toml` names model.init = runs/parent-1.0.0, a folder
    # its header says to extract from git: without it the run built its face bank (minutes; the packaged
    # 12,110 faces, most of an hour here) and only then said the parent was missing.
    from deepshield.training.trainer import Trainer

    def built(self, *args, **kwargs):
        raise AssertionError("the data was built before model.init was checked")

    monkeypatch.setattr(Trainer, "_build_data", built)
    config = checked_early_config(tmp_path, f"model.init={tmp_path / 'runs' / 'parent-1.0.0'}")
    with pytest.raises(DeepShieldError, match=r"model\.init .*parent-1\.0\.0 is neither a checkpoint file"):
        Trainer(config).run()
    assert not (tmp_path / "cache").exists()


def test_train_takes_its_folder_flags_as_they_are_typed(tmp_path, monkeypatch):
    # --run-dir 2024 was read as JSON, the number 2024: "run_dir: Input is not a valid path".
    import argparse

    from deepshield.cli import train

    seen = {}
    monkeypatch.setattr(
        "deepshield.training.trainer.Trainer.run", lambda self, resume=False: seen.setdefault("config", self.config)
    )
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        config=None, overrides=["tracking.enabled=false"], data_dir=None, params=None, run_dir=Path("2024"),
        tracking_uri="null", no_tracking=False, resume=False, no_progress=False,
    )  # fmt: skip
    with pytest.raises(AttributeError):  # the stubbed run returns no TrainResult: the settings are what is asserted
        train.run_train(args)
    assert seen["config"].run_dir == Path("2024") and seen["config"].tracking.uri == "null"


def test_a_search_space_can_name_the_synthetic_sections_keys():
    from deepshield.tuning.space import check_keys

    check_keys(["synthetic.mode", "synthetic.limit_per_folder"], "search space")  # "not a training-config key"


def test_a_relative_folder_is_read_from_the_working_folder_when_the_data_root_lacks_it(tmp_path, monkeypatch):
    # The README's `--set data.datasets='["data/faces"]'` beside DEEPSHIELD_DATA_ROOT=../shared/data was
    # "not found under data root".
    from deepshield.training.config import DataConfig

    shared, work = tmp_path / "shared", tmp_path / "work"
    (shared / "real-faces").mkdir(parents=True)
    (work / "data" / "faces").mkdir(parents=True)
    monkeypatch.chdir(work)
    data = DataConfig(root=shared)
    assert data.locate(Path("real-faces"), "folder") == shared / "real-faces"
    assert data.locate(Path("data/faces"), "dataset") == Path("data/faces")
    with pytest.raises(
        DeepShieldError, match=r"\(data.root or --data-dir\), nor from the working directory\): .*, or point data.root "
    ) as refused:
        data.locate(Path("elsewhere"), "dataset")
    assert "DEEPSHIELD_DATA_ROOT" not in str(refused.value)  # data.root wins over it: setting it changes nothing
    # A root from the variable is named as such, not advised to be set: it was, to another folder.
    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(shared))
    with pytest.raises(DeepShieldError, match=r"under data root .*shared \(\$DEEPSHIELD_DATA_ROOT\).* or point "):
        DataConfig().locate(Path("elsewhere"), "dataset")


def test_a_settings_file_that_is_not_utf8_is_refused_in_one_line_naming_it(tmp_path, capsys):
    # A picture (or any binary) given as a config, --params or space file ended in a UnicodeDecodeError
    # traceback; one named .png was read before its suffix was checked.
    from deepshield.cli.main import EXIT_USAGE, main
    from deepshield.tuning.space import load_space

    binary = b"\x89PNG\x00\xff"
    for name in ("bin.toml", "bin.yaml", "bin.json", "bin.png"):
        (tmp_path / name).write_bytes(binary)
    with pytest.raises(DeepShieldError, match=rf"^config file {tmp_path / 'bin.toml'} is not UTF-8 text \(byte 0x89"):
        load_config(tmp_path / "bin.toml")
    with pytest.raises(DeepShieldError, match=rf"^params file {tmp_path / 'bin.yaml'} is not UTF-8 text"):
        load_config(None, [], tmp_path / "bin.yaml")
    with pytest.raises(DeepShieldError, match=rf"^space file {tmp_path / 'bin.json'} is not UTF-8 text"):
        load_space(tmp_path / "bin.json")
    for command in (
        ["train", "--config", str(tmp_path / "bin.toml")],
        ["train", "--params", str(tmp_path / "bin.yaml")],
        ["tune", "--space", str(tmp_path / "bin.yaml"), "--out", str(tmp_path / "study"), "--no-tracking"],
        ["facebank", "pack", "--config", str(tmp_path / "bin.toml"), "--out", str(tmp_path / "bank.npz")],
    ):
        assert main(command) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not UTF-8 text" in err, err
    assert main(["train", "--config", str(tmp_path / "bin.png")]) == EXIT_USAGE
    assert "must be .toml, .yaml or .json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim.lr: 1\noptim: {lr: 2}\n", r"key optim\.lr is given twice"),  # it trained with lr 2.0
        ("optim: {lr: 2}\noptim.lr: 1\n", r"key optim\.lr is given twice"),
        ("synthetic.mode: joint\nsynthetic: null\n", r"key synthetic is given twice .*synthetic\.mode"),
    ],
)
def test_a_params_file_giving_a_key_dotted_and_in_its_section_is_refused(tmp_path, text, message):
    params = tmp_path / "best.yaml"
    params.write_text(text)
    with pytest.raises(DeepShieldError, match=rf"^params file {params}: {message}"):
        load_config(None, [], params)


@pytest.mark.parametrize(
    "override", ["optim.lr=true", "optim.epochs=true", "seed=false", "augment.jpeg_quality=[true, 90]"]
)
def test_a_boolean_where_a_number_belongs_is_refused_by_name(tmp_path, override):
    # Read as 1 or 0: lr 1.0, one epoch, seed 0.
    key = override.partition("=")[0]
    with pytest.raises(DeepShieldError, match=rf"{re.escape(key)}: Input should be a number, not a boolean"):
        load_config(None, [override])
    config = tmp_path / "c.toml"
    config.write_text("[optim]\nlr = true\n")
    with pytest.raises(DeepShieldError, match=r"optim\.lr: Input should be a number, not a boolean"):
        load_config(config)
    assert load_config(None, ["data.synthesize=false"]).data.synthesize is False  # a boolean setting still is one


def test_set_takes_a_string_settings_value_as_typed(tmp_path):
    # JSON read these as numbers: "export.version: Input should be a valid string".
    from deepshield.tuning.space import parse_assignments

    sets = ["export.version=2.0", "tracking.experiment=2024", "export.name=123", "data.root=2024"]
    config = load_config(None, [*sets, "optim.lr=0.5", "seed=3"])
    assert (config.export.version, config.tracking.experiment, config.export.name) == ("2.0", "2024", "123")
    assert config.data.root == Path("2024") and (config.optim.lr, config.seed) == (0.5, 3)
    assert load_config(None, ['export.version="2.0"', "export.name=null"]).export.name is None
    assert parse_assignments(["export.version=2.0", "optim.epochs=2"]) == {"export.version": "2.0", "optim.epochs": 2}


def test_a_bad_values_error_gives_the_value_and_where_it_came_from(tmp_path, capsys):
    # It said "optim.lr: Input should be greater than 0": not -1, nor whether --config, --params or --set gave it.
    from deepshield.cli.main import EXIT_USAGE, main

    said = "optim.lr: Input should be greater than 0 (got -1, from {})"
    with pytest.raises(DeepShieldError, match=re.escape(said.format("--set"))):
        load_config(None, ["optim.lr=-1"])
    config, params = tmp_path / "c.toml", tmp_path / "best.yaml"
    config.write_text("[optim]\nlr = -1\n")
    params.write_text("optim: {lr: -1}\n")
    with pytest.raises(DeepShieldError, match=re.escape(said.format(f"--config {config}"))):
        load_config(config)
    with pytest.raises(DeepShieldError, match=re.escape(said.format(f"--params {params}"))):
        load_config(config, [], params)  # the file that gave it last
    with pytest.raises(DeepShieldError, match=r"data\.real_dirs\.0: .* \(got 1, from --set\)$"):
        load_config(config, ["optim.lr=1", "data.real_dirs=[1]"])  # an item of a list, from the option that gave it
    with pytest.raises(DeepShieldError, match=r"unknown key optim\.lrr; did you mean optim\.lr\? \(from --set\)"):
        load_config(None, ["optim.lrr=1"])
    # An empty key was "unknown key ; did you mean seed?"; a folder or a device "does not exist".
    with pytest.raises(DeepShieldError, match=r"override '\.=1': its key '\.' is empty"):
        load_config(None, [".=1"])
    with pytest.raises(DeepShieldError, match=rf"^config file {tmp_path} is a folder: name a file$"):
        load_config(tmp_path)
    assert main(["train", "--config", "/dev/null"]) == EXIT_USAGE
    assert capsys.readouterr().err == "deepshield: error: config file /dev/null is not a regular file\n"


@pytest.mark.parametrize(("select", "warned"), [("min.val_auc", True), ("max.val_auc", False), ("min.val_loss", False)])
def test_train_says_when_export_select_picks_the_worst_epoch(tmp_path, monkeypatch, capsys, select, warned):
    # As tune says it of --select: min.val_auc exported the run's lowest-AUC epoch without a word.
    import argparse

    from deepshield.cli import train

    monkeypatch.setattr("deepshield.training.trainer.Trainer.run", lambda self, resume=False: None)
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        config=None, overrides=["tracking.enabled=false", f"export.select={select}"], data_dir=None, params=None,
        run_dir=Path("run"), tracking_uri=None, no_tracking=False, resume=False,
    )  # fmt: skip
    with pytest.raises(AttributeError):  # the stubbed run returns no TrainResult
        train.run_train(args)
    said = "deepshield train: note: min.val_auc picks the lowest val_auc, but higher is better for it"
    assert (said in capsys.readouterr().err) is warned


def test_a_synthetic_augment_key_keeps_the_synthetic_recipe_for_the_others(tmp_path):
    """One synthetic.augment key given: the others keep SYNTHETIC_AUGMENT's heavier defaults, from --set
    or from a file's [synthetic.augment] section (they fell back to the manipulation recipe's)."""
    path = tmp_path / "c.toml"
    path.write_text('[synthetic]\nmode = "joint"\n[synthetic.augment]\nflip_probability = 0.1\n')
    for config in (
        load_config(overrides=["synthetic.mode=joint", "synthetic.augment.flip_probability=0.1"]),
        load_config(path),
    ):
        assert config.synthetic is not None
        assert config.synthetic.augment == SYNTHETIC_AUGMENT.model_copy(update={"flip_probability": 0.1})


def test_a_dotted_key_in_a_yaml_file_is_told_to_be_nested(tmp_path):
    """`optim.lr: 1e-3` in a YAML file is one key named "optim.lr": its error says to nest it, not "did you
    mean optim?"."""
    path = tmp_path / "c.yaml"
    path.write_text("synthetic:\n  mode: joint\nsynthetic.augment.flip_probability: 0.1\n")
    with pytest.raises(DeepShieldError) as raised:
        load_config(path)
    assert str(raised.value) == (
        "invalid training configuration: unknown key synthetic.augment.flip_probability; dots do not nest keys in "
        f"a file: write flip_probability under synthetic.augment (from --config {path})"
    )
