"""Experiment files: strict keys, clear errors before launch, overrides, shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import hpo
from hpo import Experiment, HpoConfigError, load_experiment
from hpo.train.builtin import check_before_launch as _check_before_launch

ROOT = Path(__file__).resolve().parent.parent


def base(**over):
    data = {
        "name": "t", "task": {"dataset": "iris", "epochs": 3},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        "metric": "val_accuracy", "mode": "max", "num_samples": 2,
    }
    data.update(over)
    return data


def test_valid_experiment_maps_onto_api_objects():
    exp = Experiment.from_dict(base(strategy="tpe+asha"))
    assert (exp.strategy.searcher, exp.strategy.scheduler) == ("tpe", "asha")
    assert exp.budget == 3 and exp.metrics == ["val_accuracy"]


def test_misspelled_top_level_key_names_path_and_valid_keys():
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(num_sample=3))
    msg = str(err.value)
    assert err.value.key == "num_sample" and "valid keys" in msg and "num_samples" in msg
    assert "Did you mean 'num_samples'" in msg


def test_unknown_nested_key_is_rejected_with_its_path():
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(resources={"cpu": 1, "gpus": 1}))
    assert err.value.key == "resources.gpus" and "'gpu'" in str(err.value)


@pytest.mark.parametrize("value", [0, -3])
def test_num_samples_must_be_positive(value):
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(num_samples=value))
    assert err.value.key == "num_samples" and "greater than 0" in str(err.value)


def test_unknown_searcher_lists_valid_ones():
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(strategy={"searcher": "bayes"}))
    msg = str(err.value)
    assert err.value.key == "strategy.searcher" and "'bayes'" in msg
    for name in ("tpe", "random", "grid", "cmaes", "gp", "nsga2", "sobol"):
        assert name in msg


def test_unknown_scheduler_lists_valid_ones():
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(strategy={"scheduler": "ashaa"}))
    assert err.value.key == "strategy.scheduler"
    for name in ("asha", "hyperband", "median", "fifo"):
        assert name in str(err.value)


def test_unknown_strategy_option_is_rejected():
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(strategy={"searcher": {"name": "tpe", "n_startup": 3}}))
    assert err.value.key == "strategy.searcher_options.n_startup" and "n_startup_trials" in str(err.value)


def test_grid_searcher_rejects_continuous_ranges():
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(strategy="grid"))
    assert err.value.key == "space.lr" and "grid" in str(err.value)


def test_grid_searcher_defaults_num_samples_to_grid_size():
    exp = Experiment.from_dict(base(strategy="grid", num_samples=None,
                                    space={"lr": {"type": "grid", "values": [0.1, 0.01]},
                                           "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]}}))
    assert exp.resolved_num_samples() == 4


def test_multi_objective_needs_capable_strategy():
    with pytest.raises(HpoConfigError, match="several objectives"):
        Experiment.from_dict(base(metric=["val_accuracy", "train_loss"], mode=["max", "min"], strategy="cmaes"))
    with pytest.raises(HpoConfigError, match="single metric"):
        Experiment.from_dict(base(metric=["val_accuracy", "train_loss"], mode=["max", "min"], strategy="tpe+asha"))
    with pytest.raises(HpoConfigError, match="one mode per metric"):
        Experiment.from_dict(base(metric=["val_accuracy", "train_loss"], mode=["max"]))


def test_asha_without_budget_is_rejected():
    with pytest.raises(HpoConfigError) as err:
        Experiment.from_dict(base(task={}, trainable="tests.trainables:quadratic", strategy="tpe+asha",
                                  metric="loss", mode="min"))
    assert err.value.key == "strategy.max_t"


def test_builtin_task_rejects_unknown_names_before_launch():
    with pytest.raises(HpoConfigError) as err:
        _check_before_launch(Experiment.from_dict(base(task={"dataset": "digitz", "epochs": 2})))
    assert err.value.key == "task.dataset" and "'digits'" in str(err.value)
    with pytest.raises(HpoConfigError) as err:
        _check_before_launch(Experiment.from_dict(base(space={"optimizer": {"type": "categorical",
                                                                            "choices": ["adam", "lbfgs"]}})))
    assert err.value.key == "space.optimizer" and "lbfgs" in str(err.value)
    with pytest.raises(HpoConfigError) as err:
        _check_before_launch(Experiment.from_dict(base(space={"learning_rate": {"type": "float", "low": 0.1,
                                                                                "high": 0.2}})))
    assert err.value.key == "space.learning_rate"


def test_builtin_task_rejects_metric_it_never_reports():
    with pytest.raises(HpoConfigError) as err:
        _check_before_launch(Experiment.from_dict(base(metric="val_roc_auc")))
    assert err.value.key == "metric" and "val_accuracy" in str(err.value) and "val_f1" in str(err.value)


def test_unresolvable_trainable_import_path_is_rejected():
    with pytest.raises(HpoConfigError, match="importable module"):
        _check_before_launch(Experiment.from_dict(base(trainable="no_such_module:fn", task={})))


def test_overrides_apply_before_validation(tmp_path: Path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(base()))
    exp = load_experiment(path, ["num_samples=7", "strategy.searcher=random", "task.epochs=4"])
    assert (exp.num_samples, exp.strategy.searcher, exp.budget) == (7, "random", 4)
    with pytest.raises(HpoConfigError) as err:
        load_experiment(path, ["strategy.sercher=random"])
    assert err.value.key == "strategy.sercher"


def test_quickstart_example_validates():
    exp = load_experiment(ROOT / "examples" / "quickstart.yaml")
    _check_before_launch(exp)
    assert exp.strategy.searcher == "tpe" and exp.strategy.scheduler == "asha"
    assert {"lr", "optimizer", "hidden", "momentum"} <= set(exp.space.names)


def test_grid_values_under_a_searcher_that_cannot_search_them_are_rejected():
    from hpo.strategies import StrategyInfo, register
    from hpo.strategies._registry import _REGISTRY

    register(StrategyInfo("continuous-only", "sampler", "test", lambda seed: None, grid_values=False))
    try:
        with pytest.raises(HpoConfigError) as err:
            Experiment.from_dict(base(strategy="continuous-only",
                                      space={"lr": {"type": "grid", "values": [0.1, 0.01]}}))
        assert err.value.key == "space.lr" and "cannot search grid values" in str(err.value)
        # the built-in samplers treat grid values as categorical
        Experiment.from_dict(base(strategy="cmaes", space={"lr": {"type": "grid", "values": [0.1, 0.01]}}))
    finally:
        _REGISTRY.pop("continuous-only")


def test_tracking_uri_is_checked_before_launch_and_credentials_are_masked(tmp_path, monkeypatch):
    from tests import trainables

    exp = dict(name="u", trainable=trainables.quadratic, space={"x": hpo.Float(0.0, 1.0)}, metric="loss", mode="min",
               storage_path=str(tmp_path / "runs"))
    with pytest.raises(HpoConfigError, match=r"tracking\.tracking_uri: .*plain file store"):
        hpo.run(exp, tracking={"tracking_uri": "./mlruns"})
    with pytest.raises(HpoConfigError, match=r"--tracking-uri: must name an SQLite file in an existing directory"):
        hpo.run(exp, tracking_uri=f"sqlite:///{tmp_path}/missing/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://user:secret@host/x")
    with pytest.raises(HpoConfigError, match="MLFLOW_TRACKING_URI") as err:
        hpo.run(exp)
    assert "secret" not in str(err.value) and "***@host" in str(err.value)
    assert not (tmp_path / "runs").exists()  # nothing launched or written


def test_exponents_without_a_dot_are_numbers_in_files_and_overrides(tmp_path):
    """PyYAML reads YAML 1.1, where ``1e-4`` is a string; hpo reads it as the number users mean."""
    from hpo.config import load_experiment

    p = tmp_path / "e.yaml"
    p.write_text("name: e\nspace:\n  lr: {type: float, low: 1e-4, high: 1E-1, log: true}\nmetric: val_accuracy\n")
    exp = load_experiment(p, ["space.lr.high=5e-2"])
    assert exp.space.params["lr"].low == 1e-4 and exp.space.params["lr"].high == 5e-2
