"""``trial_timeout_s``: a trial that stops reporting is ended as errored with the reason, its
worker freed, and the search goes on — recorded the same in results, trials.json, Optuna and
MLflow (Ray Tune alone would wait for it for ever: it checks budgets only when a trial reports)."""

from __future__ import annotations

import json
import time

import pytest

from hpo.config import Experiment
from hpo.lifecycle import Collector
from hpo.strategies import TrialOutcomes


class _Trial:
    def __init__(self, tid: str, status: str = "RUNNING") -> None:
        self.trial_id, self.status, self.config = tid, status, {}
        self.killed = False


def test_a_silent_running_trial_is_ended_once_with_the_reason(monkeypatch):
    import hpo._compat.ray as compat

    killed = []
    monkeypatch.setattr(compat, "kill_trial_actor", lambda t: killed.append(t.trial_id) or True)
    c = Collector(["loss"], None, TrialOutcomes(), trial_timeout_s=0.2)
    quiet, talking, pending = _Trial("a"), _Trial("b"), _Trial("c", "PENDING")
    trials = [quiet, talking, pending]
    for t in (quiet, talking):
        c.on_trial_start(0, trials, t)
    time.sleep(0.3)
    c.on_trial_result(1, trials, talking, {"loss": 1.0})
    c.on_step_begin(2, trials)
    c.on_step_begin(3, trials)  # once only
    assert killed == ["a"] and "no report for 0.2 s" in quiet.hpo_error
    assert getattr(talking, "hpo_error", None) is None and getattr(pending, "hpo_error", None) is None
    c.on_trial_recover(4, trials, quiet)  # Ray retries it (max_failures): decided afresh
    assert quiet.hpo_error is None


def test_the_timeout_must_be_positive():
    from hpo.errors import HpoConfigError

    with pytest.raises(HpoConfigError, match="trial_timeout_s"):
        Experiment.from_dict({"name": "t", "trainable": "tests.trainables:quadratic", "metric": "loss",
                              "space": {"x": {"type": "float", "low": 0, "high": 1}}, "trial_timeout_s": 0})


@pytest.mark.slow
def test_a_hung_trial_is_errored_and_the_search_goes_on(tmp_path, ray_address):
    from mlflow import MlflowClient

    from hpo.rundir import find_run_dir
    from tests.conftest import hpo_cli
    from tests.test_lifecycle_search import check_records

    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "name": "hang", "trainable": "tests.trainables:hangs_when_large", "metric": "loss", "mode": "min",
        "space": {"x": {"type": "categorical", "choices": [0.1, 0.9, 0.2, 0.3]}, "steps": 2},
        "strategy": "grid", "max_concurrent": 2, "trial_timeout_s": 3,
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}))
    t0 = time.monotonic()
    out = hpo_cli("run", str(exp), "--address", ray_address, "--json", cwd=tmp_path, timeout=300)
    assert time.monotonic() - t0 < 120  # not the trial's hour
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 4
    run_dir = find_run_dir("hang", str(tmp_path / "hpo_results"))
    statuses = check_records(run_dir, tmp_path / "mlflow.db", "loss")
    assert sorted(statuses.values()) == ["completed"] * 3 + ["errored"]
    records = json.loads((run_dir / "trials.json").read_text())["trials"]
    hung = next(r for r in records if r["status"] == "errored")
    assert hung["config"]["x"] == 0.9 and "timed out: no report for 3 s" in hung["error"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("hang").experiment_id],
                              filter_string=f"tags.`hpo.trial_id` = '{hung['trial_id']}'")
    assert runs[0].info.status == "FAILED" and "timed out" in runs[0].data.tags["hpo.status"]
