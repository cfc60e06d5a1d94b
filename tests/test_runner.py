"""Searches through the Python API on a real two-node Ray cluster."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import hpo
from hpo import Float, Grid, MetricNotReportedError
from tests import trainables

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, address: str, **kw):
    args = dict(name="t", trainable=trainables.quadratic, space={"x": Float(0.0, 1.0)}, metric="loss", mode="min",
                strategy="random", num_samples=4, storage_path=str(tmp_path / "runs"), tracking={"enabled": False},
                address=address)
    args.update(kw)
    return hpo.run(**args)


def test_python_api_search_returns_best_config_and_table(tmp_path, ray_address):
    results = _run(tmp_path, ray_address, num_samples=6, strategy="tpe")
    assert len(results.trials) == 6 and results.count("completed") == 6
    best = min(results.trials, key=lambda t: t.metrics["loss"])
    assert results.best_config == best.config and math.isclose(results.best_metric, best.metrics["loss"])
    table = results.table()
    assert len(table) == 6 and {"config/x", "loss", "status"} <= set(table.columns)
    assert "training_iteration" not in table.columns and "pid" not in table.columns


def test_trainable_that_raises_becomes_errored_trial_and_search_goes_on(tmp_path, ray_address):
    results = _run(tmp_path, ray_address, trainable=trainables.fails_when_large, num_samples=8, strategy="sobol")
    errored = [t for t in results.trials if t.status == "errored"]
    assert errored and results.count("completed") >= 1
    assert all(t.config["x"] > 0.5 for t in errored)
    assert all("ValueError: x too large" in t.error for t in errored)
    assert results.summary()["num_errored"] == len(errored)
    assert set(results.summary()["errors"]) == {t.trial_id for t in errored}


def test_metric_never_reported_names_the_metrics_that_were(tmp_path, ray_address):
    with pytest.raises(MetricNotReportedError) as err:
        _run(tmp_path, ray_address, trainable=trainables.reports_wrong_metric, num_samples=3)
    msg = str(err.value)
    assert "'loss'" in msg and "accuracy" in msg and "val_loss" in msg
    assert "pid" not in msg


def test_grid_strategy_runs_every_grid_point_once(tmp_path, ray_address):
    results = _run(tmp_path, ray_address, space={"x": Grid([0.1, 0.3, 0.5]), "steps": Grid([1, 2])},
                   strategy="grid", num_samples=None)
    pts = sorted((t.config["x"], t.config["steps"]) for t in results.trials)
    assert pts == sorted((x, s) for x in (0.1, 0.3, 0.5) for s in (1, 2))


def test_multi_objective_search_returns_pareto_front(tmp_path, ray_address):
    results = _run(tmp_path, ray_address, metric=["loss", "score"], mode=["min", "max"], strategy="nsga2",
                   num_samples=8)
    front = results.pareto_front()
    assert front
    done = [t for t in results.trials if t.status == "completed"]
    for f in front:  # nobody strictly better on both objectives
        assert not any(t.metrics["loss"] < f.metrics["loss"] and t.metrics["score"] > f.metrics["score"]
                       for t in done)
    assert len(results.summary()["pareto_front"]) == len(front)


def test_optuna_with_asha_tells_pruned_trials_as_pruned_with_intermediate_values(tmp_path, ray_address):
    from optuna.trial import TrialState

    results = _run(tmp_path, ray_address, strategy={"searcher": "tpe", "scheduler": "asha", "max_t": 9},
                   space={"x": Float(0.0, 1.0), "steps": 9}, num_samples=14, max_concurrent=2)
    study = results.study
    by_state = {s: [t for t in study.trials if t.state == s] for s in TrialState}
    pruned = by_state[TrialState.PRUNED]
    assert pruned, "ASHA pruned nothing; the test needs early stops"
    assert len(pruned) == results.count("pruned")
    for t in pruned:
        last_step = max(t.intermediate_values)
        assert last_step < 9
        assert t.value is None or t.value == t.intermediate_values[last_step]
    for t in by_state[TrialState.COMPLETE]:
        assert max(t.intermediate_values) == 9  # only full-budget trials are COMPLETE
    assert len(by_state[TrialState.COMPLETE]) == results.count("completed")
    # best pick ignores low-budget values of pruned trials
    assert results.best_trial.steps == 9


def test_ray_optuna_search_records_early_stopped_trials_as_complete(tmp_path, ray_address):
    """The defect hpo avoids, shown on Ray's own wiring: ASHA-stopped trials end up COMPLETE."""
    import optuna
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0))
    tuner = tune.Tuner(
        trainables.quadratic,
        param_space={"x": tune.uniform(0.0, 1.0), "steps": 9},
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=searcher, num_samples=10,
                                    scheduler=ASHAScheduler(max_t=9, grace_period=1), max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0),
    )
    grid = tuner.fit()
    stopped_early = [r for r in grid if r.metrics.get("training_iteration", 9) < 9]
    assert stopped_early
    states = {t.state for t in searcher._ot_study.trials}
    assert TrialState.PRUNED not in states and TrialState.COMPLETE in states


def test_builtin_task_trains_and_reports_per_epoch(tmp_path, ray_address):
    results = hpo.run(
        name="iris", task={"dataset": "iris", "epochs": 3, "model": "mlp"},
        space={"lr": Float(1e-2, 5e-2, log=True), "hidden": hpo.Int(8, 32)},
        metric="val_accuracy", mode="max", strategy="random", num_samples=2,
        storage_path=str(tmp_path / "runs"), tracking={"enabled": False}, address=ray_address,
    )
    assert results.count("completed") == 2
    for t in results.trials:
        assert t.steps == 3 and {"train_loss", "val_loss", "val_accuracy", "epoch_time_s"} <= set(t.metrics)
        assert 0.0 <= t.metrics["val_accuracy"] <= 1.0


def test_resume_continues_a_finished_search_without_new_trials(tmp_path, ray_address):
    first = _run(tmp_path, ray_address, num_samples=3)
    again = hpo.resume(first.storage_path, trainable=trainables.quadratic, address=ray_address)
    assert sorted(t.trial_id for t in again.trials) == sorted(t.trial_id for t in first.trials)
    assert again.storage_path == first.storage_path


def test_time_budget_ends_the_search_early(tmp_path, ray_address):
    import time

    t0 = time.monotonic()
    results = _run(tmp_path, ray_address, space={"x": Float(0.0, 1.0), "sleep": 0.5}, num_samples=200,
                   time_budget_s=4)
    assert len(results.trials) < 200 and time.monotonic() - t0 < 60


def test_epoch_budget_ends_the_search_once_the_trials_ran_that_many_epochs(tmp_path, ray_address):
    results = _run(tmp_path, ray_address, num_samples=50, max_concurrent=1, epoch_budget=9)
    spent = sum(t.steps for t in results.trials)
    assert 3 <= len(results.trials) <= 5 and 9 <= spent <= 15, [(t.trial_id, t.steps) for t in results.trials]


def test_trials_the_epoch_budget_cuts_short_are_cut_not_completed(tmp_path, ray_address):
    results = _run(tmp_path, ray_address, space={"x": Float(0.0, 1.0), "sleep": 0.3}, num_samples=50,
                   max_concurrent=2, epoch_budget=10, strategy={"searcher": "random", "max_t": 4})
    seen = [(t.trial_id, t.status, t.steps) for t in results.trials]
    assert any(t.steps < 4 for t in results.trials), seen  # two at a time: one is mid-way when the budget runs out
    assert all(t.status == "cut" and t.cut_at == t.steps and t.cut_reason == "epoch budget"
               for t in results.trials if t.steps < 4), seen
    assert all(t.steps == 4 for t in results.trials if t.status == "completed"), seen
    assert results.best_trial is not None and results.best_trial.steps == 4


def test_readme_python_example_runs(in_tmp, ray_address):
    """The Python API block in README.md, executed as written."""
    import re

    from tests.conftest import ROOT

    block = re.search(r"## Python API\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    results = namespace["results"]
    assert len(results.trials) == 12 and results.best_config is not None
    assert results.parent_run_id and (in_tmp / "mlflow.db").exists()


def test_keep_checkpoints_keeps_the_best_and_always_the_latest(tmp_path, ray_address):
    results = _run(tmp_path, ray_address, trainable="hpo.train:train", space={"lr": Float(1e-3, 0.3, log=True)},
                   task={"dataset": "iris", "epochs": 6, "hidden": 8, "checkpoint_freq": 1, "test_best": False},
                   metric="val_loss", num_samples=2, keep_checkpoints=1)
    for t in results.trials:
        kept = sorted(Path(t.checkpoint).parent.glob("checkpoint_*"))
        assert Path(t.checkpoint) in kept and kept[-1].name == "checkpoint_000005"  # the latest: epoch 6
        assert 1 <= len(kept) <= 2  # plus the best by val_loss when that is an earlier epoch
