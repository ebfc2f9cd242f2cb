"""deepshield.tuning.optuna_api against the installed Optuna: these fail loudly when Optuna changes
what the adapter relies on, and when private Optuna attributes are used anywhere else."""

from __future__ import annotations

import re
from pathlib import Path

import optuna

from deepshield.tuning import optuna_api

SRC = Path(__file__).resolve().parents[1] / "src" / "deepshield"
# `<something named study/trial/storage/sampler/pruner>._<attr>`: an Optuna object's private attribute.
PRIVATE_USE = re.compile(r"\b\w*(?:study|trial|storage|sampler|pruner)\w*\._[a-z]\w*")


def test_checked_against_the_installed_optuna():
    assert optuna.__version__ == optuna_api.CHECKED_VERSION, (
        f"optuna {optuna.__version__} is not {optuna_api.CHECKED_VERSION}, the version whose private API "
        "deepshield/tuning/optuna_api.py was checked against: re-check its functions, then update CHECKED_VERSION"
    )


def test_trial_id_is_the_storage_id_of_live_and_frozen_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.create_study(storage=storage, study_name="first")
    second = optuna.create_study(storage=storage, study_name="second")
    first.ask()
    live = second.ask()  # number 0 in its study, the second trial in the storage
    frozen = second.get_trials(deepcopy=False)[0]
    assert live.number == frozen.number == 0
    assert optuna_api.trial_id(live) == optuna_api.trial_id(frozen) != optuna_api.trial_id(first.get_trials()[0])


def test_set_trial_attr_writes_a_frozen_trials_attribute_to_the_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s")
    study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    optuna_api.set_trial_attr(study, frozen, "grid_id", 3)
    assert optuna.load_study(study_name="s", storage=storage).get_trials()[0].user_attrs == {
        "grid_id": 3
    }  # another process sees it


def test_no_private_optuna_attribute_outside_the_adapter():
    uses = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "optuna_api.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE_USE.search(line)
    ]
    assert not uses, "private Optuna API outside deepshield/tuning/optuna_api.py:\n" + "\n".join(uses)
