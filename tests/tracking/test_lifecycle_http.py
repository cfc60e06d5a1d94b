"""An interrupted packed search recorded over HTTP (a real ``mlflow server``), then resumed: the
same terminal states in trials.json, the Optuna study and MLflow, no run left RUNNING, the
parent KILLED after the interrupt and FINISHED after the resume, one run per trial."""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from hpo.rundir import find_run_dir, saved_records
from tests.conftest import hpo_cli, read_until, start_hpo
from tests.test_lifecycle_search import _MLFLOW, _OPTUNA, _study

pytestmark = pytest.mark.slow


def _check(client, run_dir: Path, parent_status: str) -> dict[str, str]:
    from mlflow.entities import ViewType

    state = json.loads((run_dir / "hpo_state.json").read_text())
    statuses = {r["trial_id"]: r["status"] for r in saved_records(run_dir)}
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == parent_status
    runs = client.search_runs([parent.info.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=5000)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    ids = Counter(r.data.tags["hpo.trial_id"] for r in children)
    assert set(ids) == set(statuses) and set(ids.values()) == {1}, ids
    for r in children:
        tid = r.data.tags["hpo.trial_id"]
        assert r.info.status == _MLFLOW[statuses[tid]] and r.data.tags["hpo.status"].startswith(statuses[tid])
    study = _study(run_dir)
    assert Counter(t.state.name for t in study.trials) == Counter(_OPTUNA[s] for s in statuses.values())
    return statuses


def test_sigint_on_a_packed_tpe_search_over_http_then_resume(tmp_path, ray_address, mlflow_server):
    from mlflow.tracking import MlflowClient

    exp = tmp_path / "http.yaml"
    exp.write_text("name: http\ntask: {dataset: digits, epochs: 6, batch_size: 4, test_best: false}\n"
                   "space:\n  lr: {type: float, low: 0.005, high: 0.1, log: true}\n"
                   "  hidden: {type: categorical, choices: [16, 32]}\nmetric: val_accuracy\nmode: max\n"
                   "strategy: {searcher: tpe, seed: 4}\nnum_samples: 24\npack: 3\nmax_concurrent: 2\n")
    proc = start_hpo(tmp_path, "run", str(exp), "--address", ray_address, "--tracking-uri", mlflow_server.uri,
                  "--json")
    runs = tmp_path / "hpo_results"
    seen = read_until(proc, " completed ")  # a first trial completed
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    err = seen + err
    assert proc.returncode == 130, err[-3000:]
    run_dir = find_run_dir("http", str(runs))
    client = MlflowClient(mlflow_server.uri)
    statuses = _check(client, run_dir, "KILLED")
    assert "cut" in statuses.values() and len(statuses) < 24
    resumed = hpo_cli("resume", str(run_dir), "--json", "--address", ray_address, cwd=tmp_path, timeout=400)
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 24, summary
    after = _check(client, run_dir, "FINISHED")
    assert {t: s for t, s in after.items() if t in statuses} == statuses
    print(json.dumps(Counter(after.values())), file=sys.stderr)
