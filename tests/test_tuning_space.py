"""Search-space files, selectors, best.yaml round trip: no training."""

from __future__ import annotations

import pytest

from deepshield.errors import DeepShieldError
from deepshield.training.config import load_config
from deepshield.tuning.selector import parse_selector
from deepshield.tuning.space import apply_values, check_against, load_space, parse_assignments, parse_space


def test_space_kinds_and_yaml_scientific_notation(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "optim.lr: {low: 1e-4, high: 3e-3, log: true}\n"  # YAML 1.1 reads 1e-4 as a string
        "optim.batch_size: [16, 32]\n"
        "model:\n  dropout: {low: 0.0, high: 0.4, step: 0.1}\n"  # nested section
        "optim.epochs: {low: 2, high: 6, step: 2}\n"
        "optim.weight_decay: {values: [1e-3, 1e-2]}\n"
        "budget:\n  optim.samples_per_epoch: 64\n  data: {limit_per_folder: 20}\n"
    )
    space = load_space(path, extra_budget={"optim.samples_per_epoch": 32})
    kinds = {p.name: (p.kind, p.log) for p in space.params}
    assert kinds == {
        "optim.lr": ("float", True),
        "optim.batch_size": ("categorical", False),
        "model.dropout": ("float", False),
        "optim.epochs": ("int", False),
        "optim.weight_decay": ("categorical", False),
    }
    assert space.param("optim.lr").low == pytest.approx(1e-4)
    assert space.param("optim.weight_decay").choices == (1e-3, 1e-2)
    assert space.budget == {"optim.samples_per_epoch": 32, "data.limit_per_folder": 20}  # --trial-set wins
    assert not space.listed  # the log range has no grid
    # A log range cannot take a step (parse_param refuses both): the hint was to add one.
    with pytest.raises(
        DeepShieldError, match=r"grid search needs a finite list for optim.lr: give a list of values \(e.g. \[0.0001, "
    ):
        space.grid()
    with pytest.raises(DeepShieldError, match=r"give a list of values or a step \(e.g. \{low: 0.0, high: 0.5, step"):
        parse_space({"model.dropout": {"low": 0.0, "high": 0.5}}).grid()
    assert space.param("model.dropout").grid_values() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert space.param("optim.epochs").grid_values() == [2, 4, 6]


def test_space_toml_and_grid(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('"optim.lr" = [1e-4, 1e-3]\n"optim.batch_size" = [8, 16, 32]\n[budget]\n"optim.epochs" = 1\n')
    space = load_space(path)
    points = [space.grid_point(i) for i in range(space.grid_size())]
    expected = [{"optim.lr": lr, "optim.batch_size": size} for lr in (1e-4, 1e-3) for size in (8, 16, 32)]
    assert sorted(points, key=lambda p: sorted(p.items())) == sorted(expected, key=lambda p: sorted(p.items()))
    assert space.budget == {"optim.epochs": 1}


def test_grid_points_follow_the_product_of_the_parameters_lists():
    import itertools

    space = parse_space({"optim.lr": [1e-4, 1e-3], "optim.batch_size": [8, 16, 32], "model.dropout": [0.0, 0.5]})
    grid = space.grid()
    expected = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    assert [space.grid_point(i) for i in range(space.grid_size())] == expected
    assert space.on_grid({"optim.lr": 0.001, "optim.batch_size": 16, "model.dropout": 0.5})
    assert not space.on_grid({"optim.lr": 0.002, "optim.batch_size": 16, "model.dropout": 0.5})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim.lrr: [1, 2]\n", "not a training-config key"),
        ("optim.lr: {low: 1, high: 0.1}\n", "low < high"),
        ("optim.lr: {low: 0, high: 1, log: true}\n", "low must be > 0"),
        ("optim.lr: []\n", "empty list"),
        ("optim.weight_decay: [0, 0.0, 0.01]\n", "lists a value twice"),  # one value: a grid ran it twice
        ("run_dir: [a, b]\n", "set by the search itself"),
        ("optim.epochs: [1, 2]\nbudget: {optim.epochs: 1}\n", "both searched and fixed"),
        ("budget: {optim.epochs: 1}\n", "no parameter to search"),
        ("optim.lr: {low: 1, high: 2, mean: 3}\n", r"optim\.lr has unknown field mean \("),
        ("optim.lr: {low: 1, high: 2, mean: 3, sd: 1}\n", r"optim\.lr has unknown fields mean, sd \("),
        ('optim.lr: {low: 1.0e-4, high: 1.0e-2, log: "false"}\n', "log must be true or false"),  # bool("false")
        ("optim.lr: {values: [1.0e-4, 1.0e-3], log: true}\n", "lists its values with other fields"),
    ],
)
def test_space_errors(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(DeepShieldError, match=message):
        load_space(path)


def test_space_values_checked_against_config():
    space = parse_space({"optim.batch_size": [1, 8]})  # batch_size >= 2
    with pytest.raises(DeepShieldError, match="invalid training configuration"):
        check_against(space, load_config())
    # A float step on an int setting: both bounds are integers, the grid between them is not.
    with pytest.raises(DeepShieldError, match=r"optim.epochs': 1.5"):
        check_against(parse_space({"optim.epochs": {"low": 1, "high": 4, "step": 0.5}}), load_config())
    # One line, with the key: not pydantic's multi-line report and its URL.
    with pytest.raises(DeepShieldError) as raised:
        check_against(parse_space({"model.backbone": ["resnet", "tiny"]}), load_config())
    assert str(raised.value) == (
        "invalid training configuration with {'model.backbone': 'resnet'}: "
        "model.backbone: Input should be 'efficientnet_lite0' or 'tiny' (got \"resnet\")"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim.lr: [0.1]\noptim: {lr: [0.2]}\n", r"^search space: key optim\.lr is given twice"),
        (
            "optim.lr: [0.1]\nbudget: {optim.epochs: 1, optim: {epochs: 2}}\n",
            r"^trial budget: key optim\.epochs is given twice",
        ),
    ],
)
def test_a_space_giving_a_key_dotted_and_in_its_section_is_refused(tmp_path, text, message):
    # The last one given was searched (or budgeted) without a word.
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(DeepShieldError, match=message):
        load_space(path)


def test_a_space_file_that_does_not_parse_is_said_in_one_line(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("optim.lr: [0.1\n")
    with pytest.raises(DeepShieldError) as raised:
        load_space(path)
    assert str(raised.value) == (
        f"space file {path} cannot be parsed: line 2, column 1: expected ',' or ']', but got '<stream end>'"
    )
    with pytest.raises(DeepShieldError, match=f"^space file {tmp_path / 'nosuch.yaml'} does not exist$"):
        load_space(tmp_path / "nosuch.yaml")  # it was called a "config file"


def test_tune_refuses_an_out_that_is_a_file_in_one_line(tmp_path, capsys):
    from deepshield.cli.main import EXIT_USAGE, main

    (tmp_path / "afile").write_text("hi")
    (tmp_path / "space.yaml").write_text("optim.lr: [0.001]\n")
    args = ["tune", "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "afile"), "--no-tracking"]
    assert main(args) == EXIT_USAGE  # a traceback from the study's database before
    assert capsys.readouterr().err == f"deepshield: error: --out {tmp_path / 'afile'} is a file: name a folder\n"


def test_selectors():
    assert (parse_selector("max.val_auc").direction, parse_selector("min.val_loss").direction) == (
        "maximize",
        "minimize",
    )
    for text in ("min.train_loss", "min.loss", "max.train_auc"):
        with pytest.raises(DeepShieldError, match="Select on a held-out metric"):
            parse_selector(text)
    for text in ("val_auc", "best.val_auc", "max.auc"):
        with pytest.raises(DeepShieldError):
            parse_selector(text)
    history = [
        {"epoch": 0, "val_auc": 0.7, "val_loss": 0.5},
        {"epoch": 1, "val_auc": 0.9, "val_loss": 0.6},
        {"epoch": 2, "val_auc": 0.8, "val_loss": float("nan")},
    ]
    assert parse_selector("max.val_auc").best_epoch(history) == (0.9, 1)
    assert parse_selector("min.val_loss").best_epoch(history) == (0.5, 0)
    assert parse_selector("min.val_eer").best_epoch(history) is None


def test_assignments_and_apply_values_match_load_config(tmp_path):
    values = parse_assignments(["optim.epochs=2", "optim.lr=1e-3", "model.backbone=tiny", "data.limit_per_folder=null"])
    assert values == {"optim.epochs": 2, "optim.lr": 1e-3, "model.backbone": "tiny", "data.limit_per_folder": None}
    params = tmp_path / "p.yaml"
    params.write_text("optim.epochs: 2\noptim.lr: 0.001\nmodel.backbone: tiny\n")
    assert apply_values(load_config(), values) == load_config(params=params).model_copy(
        update={"data": load_config().data.model_copy(update={"limit_per_folder": None})}
    )
    # A key of an optional section the config has not got (synthetic is None): it was a TypeError in tune,
    # while train's --set took it.
    assert load_config().synthetic is None
    tuned = apply_values(load_config(), {"synthetic.mode": "joint", "synthetic.threshold_fpr": 0.2})
    assert tuned == load_config(overrides=['synthetic.mode="joint"', "synthetic.threshold_fpr=0.2"])


def test_auto_takes_a_grid_only_of_lists_and_stepped_ranges():
    """An int range without a step (here log-scaled) was a grid for auto: every one of its 249 integers,
    linearly, and the search ran all 498 points by default."""
    from deepshield.tuning.samplers import resolve_sampler_name

    ranged = parse_space({"optim.batch_size": {"low": 8, "high": 256, "log": True}, "model.dropout": [0.1, 0.2]})
    assert resolve_sampler_name("auto", ranged) == "tpe"
    assert resolve_sampler_name("grid", ranged) == "grid" and ranged.grid_size() == 249 * 2  # when asked for
    stepped = parse_space({"optim.epochs": {"low": 2, "high": 6, "step": 2}, "model.dropout": [0.1, 0.2]})
    assert resolve_sampler_name("auto", stepped) == "grid"


def test_a_float_range_on_an_int_setting_is_refused_before_any_trial():
    """TOML's `{low = 8.0, high = 32.0}` is a float range: both bounds made valid batch sizes, so it passed,
    and every trial failed on a fractional batch size (each counted as done)."""
    space = parse_space({"optim.batch_size": {"low": 8.0, "high": 32.0}})
    with pytest.raises(DeepShieldError, match=r"'optim.batch_size': 8.0+2}: .*valid integer"):
        check_against(space, load_config())
    check_against(
        parse_space({"optim.batch_size": {"low": 8, "high": 32}, "optim.lr": {"low": 1, "high": 2}}), load_config()
    )


@pytest.mark.parametrize(
    ("name", "spec", "probed"),
    [
        ("model.input_size", {"low": 32, "high": 520, "step": 32}, [32, 64, 512]),  # 520 is over input_size's 512
        ("model.dropout", {"low": 0.0, "high": 1.0, "step": 0.3}, [0.0, 0.3, 0.9]),  # a dropout of 1 is refused
    ],
)
def test_a_stepped_range_is_checked_at_the_last_step_it_reaches_not_at_a_high_no_step_lands_on(name, spec, probed):
    # The check tried high itself, which no trial draws, and refused a space whose every drawn value is valid.
    space = parse_space({name: spec})
    assert space.params[0].probe_values() == probed
    check_against(space, load_config())
