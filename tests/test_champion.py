"""Champion / challenger: the decision rule, the settings, and scoring both models by one code path."""

from __future__ import annotations

import math

import pytest

from hpo.champion import compared_on, decide, model_name, promotes, record_decision, scores_of
from hpo.config import Experiment
from hpo.errors import HpoConfigError


def _exp(**over):
    d = {"name": "champ", "task": {"dataset": "iris", "epochs": 2},
         "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1}}, "metric": "val_accuracy", "mode": "max"}
    d.update(over)
    return Experiment.from_dict(d)


@pytest.mark.parametrize("challenger,champion,mode,margin,alert,decision,code", [
    (0.90, None, "max", (0.0, False), None, "promoted", 0),  # the first champion
    (0.95, 0.93, "max", (0.01, False), None, "promoted", 0),
    (0.935, 0.93, "max", (0.01, False), None, "kept", 0),  # better, but not by the margin
    (0.93, 0.93, "max", (0.0, False), None, "kept", 0),  # a tie never moves the alias
    (0.92, 0.93, "max", (0.0, False), None, "no_improvement", 4),
    (0.92, 0.93, "max", (0.0, False), (0.05, False), "no_improvement", 4),  # within the alert
    (0.80, 0.93, "max", (0.0, False), (0.05, False), "regressed", 5),
    (0.80, 0.93, "max", (0.0, False), (20.0, True), "no_improvement", 4),  # 14% worse, alert at 20%
    (0.30, 0.40, "min", (0.0, False), None, "promoted", 0),  # lower loss wins
    (0.40, 0.38, "min", (5.0, True), None, "no_improvement", 4),
    (0.39, 0.40, "min", (5.0, True), None, "kept", 0),  # 2.5% better, margin 5%
    (0.37, 0.40, "min", (5.0, True), None, "promoted", 0),  # 7.5% better
    (math.nan, 0.40, "min", (0.0, False), None, "no_improvement", 4),  # a diverged model
    (math.nan, 0.40, "min", (0.0, False), (1.0, False), "regressed", 5),
    (None, 0.9, "max", (0.0, False), None, "no_improvement", 4),  # no completed trial
    (None, None, "max", (0.0, False), None, "no_improvement", 4),
])
def test_the_decision_rule(challenger, champion, mode, margin, alert, decision, code):
    margin = (margin[0] / 100, True) if margin[1] else margin
    alert = None if alert is None else ((alert[0] / 100, True) if alert[1] else alert)
    v = decide(challenger, champion, mode, margin, alert)
    assert (v.decision, v.exit_code) == (decision, code)


@pytest.mark.parametrize("key,value", [("promote_margin", -0.1), ("promote_margin", "x%"), ("promote_margin", True),
                                       ("alert_regression", "-5%"), ("alert_regression", [1])])
def test_a_bad_margin_is_an_error_naming_its_key(key, value):
    with pytest.raises(HpoConfigError) as e:
        _exp(nightly={key: value})
    assert f"nightly.{key}" in str(e.value) and repr(value) in str(e.value)


def test_promotion_is_automatic_for_the_builtin_task_and_explains_itself_where_impossible():
    assert promotes(_exp()) and compared_on(_exp()) == "test_accuracy"
    assert not promotes(_exp(trainable="tests.trainables:quadratic", task={}, metric="loss", mode="min"))
    assert not promotes(_exp(nightly={"promote": False}))
    with pytest.raises(HpoConfigError) as e:
        promotes(_exp(trainable="tests.trainables:quadratic", task={}, metric="loss", mode="min",
                      nightly={"promote": True}))
    assert "nightly.promote" in str(e.value) and "custom trainable" in str(e.value)
    with pytest.raises(HpoConfigError) as e:
        promotes(_exp(tracking={"log_model": False}, nightly={"promote": True}))
    assert "tracking.log_model" in str(e.value)
    with pytest.raises(HpoConfigError) as e:
        promotes(_exp(metric="train_loss", mode="min"))
    assert "metric" in str(e.value) and "'train_loss'" in str(e.value)


def test_the_registered_model_name_comes_from_nightly_then_tracking_then_the_name():
    assert model_name(_exp()) == "champ"
    assert model_name(_exp(tracking={"register_model": "reg"})) == "reg"
    assert model_name(_exp(tracking={"register_model": "reg"}, nightly={"model_name": "own"})) == "own"


def test_scoring_a_saved_model_reproduces_the_test_scores_the_search_measured(tmp_path):
    """scores_of (raw test rows through the saved predictor) gives what the trial's own scaled
    evaluation gave: the champion and the challenger are scored by one code path that agrees with
    the search's numbers."""
    import torch

    from hpo.train.builtin import load_data
    from hpo.train.loop import TaskRun
    from hpo.train.model_file import load_model, model_payload

    exp = _exp(task={"dataset": "wine", "epochs": 3})
    ds = load_data(exp)
    run = TaskRun({**exp.task, "lr": 0.05}, ds, 1)
    list(run.epochs())
    measured = run.trainers[0].evaluate_test()
    torch.save(model_payload(run), tmp_path / "model.pt")
    scores = scores_of(load_model(tmp_path / "model.pt"), ds)
    assert scores["test_accuracy"] == pytest.approx(measured["accuracy"], abs=1e-6)
    assert scores["test_f1"] == pytest.approx(measured["f1"], abs=1e-6)


def test_the_decision_is_tagged_on_the_parent_run_and_the_version_and_moves_the_alias(tmp_path):
    """On a real MLflow SQLite store: a promotion moves ``champion`` and tags both records; a dry
    run records the decision without moving the alias."""
    import mlflow
    from mlflow import MlflowClient

    from hpo.champion import Verdict, champion_version

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("m")
    exp_id = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    runs = [client.create_run(exp_id).info.run_id for _ in range(3)]
    for r in runs:
        client.create_model_version("m", f"runs:/{r}/model", run_id=r)
    assert champion_version(uri, "m") is None and champion_version(uri, "never-registered") is None
    after = record_decision(uri, "m", Verdict("promoted", 0.9, None, None, 0.0), key="test_accuracy",
                            challenger_version="1", champion_version=None, parent_run_id=runs[0], night="2026-11-01",
                            fingerprint="abc", dry_run=False)
    assert after == "1" == champion_version(uri, "m")
    after = record_decision(uri, "m", Verdict("promoted", 0.95, 0.9, 0.05, 0.0), key="test_accuracy",
                            challenger_version="2", champion_version="1", parent_run_id=runs[1], night="2026-11-02",
                            fingerprint="abc", dry_run=True)
    assert after == "1" == champion_version(uri, "m")  # a dry run moves nothing
    record_decision(uri, "m", Verdict("no_improvement", 0.85, 0.9, -0.05, 0.0), key="test_accuracy",
                    challenger_version="3", champion_version="1", parent_run_id=runs[2], night="2026-11-03",
                    fingerprint="def", dry_run=False)
    assert champion_version(uri, "m") == "1"
    v3 = client.get_model_version("m", "3").tags
    assert v3["hpo.decision"] == "no_improvement" and float(v3["hpo.challenger_score"]) == 0.85
    assert v3["hpo.champion_version_before"] == "1" and v3["hpo.data_fingerprint"] == "def"
    run = client.get_run(runs[2]).data
    assert run.tags["hpo.decision"] == "no_improvement" and run.tags["hpo.champion_version_after"] == "1"
    assert run.metrics == {"challenger_test_accuracy": 0.85, "champion_test_accuracy": 0.9}
    assert client.get_run(runs[1]).data.tags["hpo.dry_run"] == "true"
    del mlflow
