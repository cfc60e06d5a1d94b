"""`hpo validate`'s one pass: every bad setting is an HpoConfigError naming key, rule and value,
before Ray starts or anything is written (fast: no Ray, no data loading)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo import Experiment, HpoConfigError, load_experiment
from hpo.train.task import TaskConfig
from hpo.validate import tracking_uri_of, validate
from tests.conftest import ROOT, _env


def _data(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "v", "task": {"dataset": "iris", "epochs": 3},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        "metric": "val_accuracy", "mode": "max", "num_samples": 2,
    }
    data.update(over)
    return data


def _rejects(tmp_path: Path, data: Any = None, text: bytes | None = None) -> HpoConfigError:
    """What `hpo validate FILE` does: load the file, then the validation pass."""
    path = tmp_path / "e.yaml"
    path.write_bytes(text if text is not None else yaml.safe_dump(data).encode())
    with pytest.raises(HpoConfigError) as err:
        validate(load_experiment(path))
    return err.value


def test_empty_metric_list(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(metric=[], mode=[]))
    assert err.key == "metric" and "at least one metric" in str(err) and err.value == []


def test_asha_grace_period_zero(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(strategy={"searcher": "tpe", "scheduler": {"name": "asha", "grace_period": 0}}))
    assert err.key == "strategy.scheduler_options.grace_period" and "integer >= 1" in str(err) and err.value == 0


def test_asha_reduction_factor_one(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(strategy={"scheduler": {"name": "asha", "reduction_factor": 1}}))
    assert err.key == "strategy.scheduler_options.reduction_factor" and "number > 1" in str(err) and err.value == 1


def test_asha_grace_period_beyond_the_budget(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(strategy={"scheduler": {"name": "asha", "grace_period": 50}}))
    assert err.key == "strategy.scheduler_options.grace_period" and "max_t (3)" in str(err) and err.value == 50
    assert "task.epochs" in str(err)  # the fix


def test_pbt_mutate_names_a_parameter_the_space_lacks(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(strategy={"searcher": "random", "scheduler": {"name": "pbt", "mutate": ["nope"]}}))
    assert err.key == "strategy.scheduler_options.mutate" and err.value == "nope" and "['lr']" in str(err)


def test_pbt_constructor_only_stores_its_arguments() -> None:
    # The check moved into the validation pass: the factory no longer raises HpoConfigError.
    from hpo.space import Float, SearchSpace
    from hpo.strategies._builtin import _pbt

    pbt = _pbt(SearchSpace({"lr": Float(0.1, 0.2)}), mutate=["lr"])
    assert list(pbt._hyperparam_mutations) == ["lr"]


def test_step_given_as_a_string(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(space={"lr": {"type": "float", "low": 0.1, "high": 0.5, "step": "0.1"}}))
    assert err.key == "space.params.lr.step" and "finite number" in str(err) and err.value == "0.1"


def test_log_given_as_a_string(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(space={"lr": {"type": "float", "low": 0.1, "high": 0.5, "log": "false"}}))
    assert err.key == "space.params.lr.log" and "true or false" in str(err) and err.value == "false"


def test_when_on_a_continuous_parent(tmp_path: Path) -> None:
    space = {"lr": {"type": "float", "low": 0.01, "high": 0.1},
             "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"lr": 0.05}}}
    err = _rejects(tmp_path, _data(space=space))
    assert err.key == "space.momentum.when.lr" and "listed values" in str(err) and "float range" in str(err)
    space["momentum"]["when"] = {"hidden": 64}
    space["hidden"] = {"type": "int", "low": 16, "high": 128}
    err = _rejects(tmp_path, _data(space=space))
    assert err.key == "space.momentum.when.hidden" and "int range" in str(err)


@pytest.mark.parametrize("where", ["task", "space"])
@pytest.mark.parametrize("name, bad, rule", [
    ("batch_size", 0, "an integer >= 1"),
    ("lr", -1, "a number > 0"),
    ("dropout", 1.5, "a number in [0, 1)"),
])
def test_builtin_task_numbers(tmp_path: Path, where: str, name: str, bad: Any, rule: str) -> None:
    if where == "task":
        data = _data(task={"dataset": "iris", "epochs": 3, name: bad})
    else:  # a fixed value in the space
        data = _data(space={"hidden": {"type": "int", "low": 8, "high": 16}, name: bad})
    err = _rejects(tmp_path, data)
    assert err.key == f"{where}.{name}" and rule in str(err) and err.value == bad


def test_builtin_task_numbers_in_a_range_and_a_categorical(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(space={"dropout": {"type": "float", "low": 0.0, "high": 1.5}}))
    assert err.key == "space.dropout.high" and err.value == 1.5
    err = _rejects(tmp_path, _data(space={"batch_size": {"type": "categorical", "choices": [32, 0]}}))
    assert err.key == "space.batch_size" and err.value == 0


def test_typo_in_a_builtin_task_key(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(task={"dataset": "iris", "epoch": 20}, strategy="tpe+asha"))
    assert err.key == "task.epoch" and "Did you mean 'epochs'" in str(err) and "max_t" not in str(err)


def test_epochs_given_as_a_string(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(task={"dataset": "iris", "epochs": "20"}, strategy="tpe+asha"))
    assert err.key == "task.epochs" and "integer >= 1" in str(err) and err.value == "20"
    assert "without quotes" in str(err)


def test_top_level_typo_names_the_unknown_key(tmp_path: Path) -> None:
    data = _data()
    data["metrics"] = data.pop("metric")
    err = _rejects(tmp_path, data)
    assert err.key == "metrics" and "Did you mean 'metric'" in str(err)


def test_step_larger_than_the_range(tmp_path: Path) -> None:
    err = _rejects(tmp_path, _data(space={"hidden": {"type": "int", "low": 1, "high": 3, "step": 5}}))
    assert err.key == "space.params.hidden.step" and "high - low (2)" in str(err) and err.value == 5


def test_duplicate_keys_in_a_mapping(tmp_path: Path) -> None:
    text = b"name: v\nmetric: val_accuracy\nspace:\n  lr: {type: float, low: 0.1, high: 0.2}\n  lr: 0.1\n"
    err = _rejects(tmp_path, text=text)
    assert err.key == "space.lr" and "appear once" in str(err) and "Line 5" in str(err)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    err = _rejects(tmp_path, text="name: caf\xe9\nmetric: val_accuracy\nspace: {lr: 0.1}\n".encode("latin-1"))
    assert err.key == "experiment" and "UTF-8" in str(err) and "0xe9" in str(err)


def test_yaml_nested_a_thousand_levels_deep(tmp_path: Path) -> None:
    err = _rejects(tmp_path, text=b"name: v\nmetric: [" + b"[" * 1000 + b"]" * 1000 + b"]\n")
    assert err.key == "metric[0]" and "nest deeper" in str(err)  # the key path where it starts
    deep = "".join("  " * i + f"k{i}:\n" for i in range(1000)) + "  " * 1000 + "v\n"
    err = _rejects(tmp_path, text=deep.encode())
    assert err.key == "k0.k1.k2.k3.k4.k5" and "nest deeper" in str(err)


def test_included_space_file_is_read_strictly(tmp_path: Path) -> None:
    (tmp_path / "inc.yaml").write_text("params:\n  lr: 0.1\n  lr: 0.2\n")
    err = _rejects(tmp_path, _data(space={"include": ["inc.yaml"], "params": {}}))
    assert err.key == "space.include[0].params.lr"


def test_tracking_uri_is_part_of_the_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://user:secret@host/x")
    err = _rejects(tmp_path, _data())
    assert err.key == "MLFLOW_TRACKING_URI" and "secret" not in str(err)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    exp = Experiment.from_dict(_data(tracking={"enabled": False, "tracking_uri": "./mlruns"}))
    validate(exp)  # tracking off: the URI is not used
    assert tracking_uri_of(exp, f"sqlite:///{tmp_path}/m.db") == f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(HpoConfigError, match="existing directory"):
        validate(Experiment.from_dict(_data()), tracking_uri=f"sqlite:///{tmp_path}/missing/m.db")


def test_custom_trainable_import_path_is_checked() -> None:
    with pytest.raises(HpoConfigError, match="importable module") as err:
        validate(Experiment.from_dict(_data(trainable="no_such_module:fn", task={})))
    assert err.value.key == "trainable"


def test_valid_experiments_and_shipped_examples_pass() -> None:
    validate(Experiment.from_dict(_data(strategy="tpe+asha")))
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        validate(load_experiment(path))


def test_builtin_epochs_default_matches_the_task() -> None:
    from hpo.config import BUILTIN_EPOCHS

    assert TaskConfig.epochs == BUILTIN_EPOCHS
    exp = Experiment.from_dict(_data(task={"dataset": "iris"}, strategy="tpe+asha"))
    assert exp.budget == BUILTIN_EPOCHS  # the task runs its default epochs: that is the budget


def test_validation_starts_no_ray_torch_or_mlflow(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(_data(task={"dataset": "iris", "batch_size": 0},
                                                            strategy="tpe+asha")))
    code = (
        "import sys\nfrom hpo import load_experiment, HpoConfigError\nfrom hpo.validate import validate\n"
        "for f in ['bad.yaml', r'%s']:\n"
        "    try:\n        validate(load_experiment(f))\n    except HpoConfigError as e:\n        print(e.key)\n"
        "print(sorted(m for m in ('ray', 'torch', 'mlflow', 'optuna') if m in sys.modules))\n"
    ) % (ROOT / "examples" / "quickstart.yaml")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["task.batch_size", "[]"], out.stdout


@pytest.mark.parametrize("where", ["/proc/hpo-runs", "{file}/runs"])
def test_an_unwritable_storage_path_is_refused_before_launch_and_nothing_is_left(tmp_path, where):
    from hpo.validate import check_storage_path

    (tmp_path / "file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(HpoConfigError, match="storage_path") as e:
        check_storage_path(where.format(file=tmp_path / "file"))
    assert "must be" in str(e.value)
    check_storage_path(str(tmp_path / "new" / "runs"))  # creatable: fine, and not created by the probe
    assert sorted(p.name for p in tmp_path.iterdir()) == before
