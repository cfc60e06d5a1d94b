"""Every example runs with ``--json`` (on the session's two-node cluster) and shows what it claims."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, _env, hpo_cli

pytestmark = pytest.mark.slow


def _run(name: str, tmp_path: Path, address: str, *extra: str) -> dict:
    proc = hpo_cli("run", str(ROOT / "examples" / f"{name}.yaml"), "--json", "--address", address,
                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra, cwd=tmp_path)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_quickstart_keeps_the_best_model_tests_it_logs_registers_and_exports_it(tmp_path, ray_address):
    s = _run("quickstart", tmp_path, ray_address, "--set", "tracking.register_model=digits-mlp")
    assert s["best_metric"] >= 0.95
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        uri = s["best_model"]["mlflow_model_uri"]
        logged = mlflow.pytorch.load_model(uri)
        info = mlflow.models.get_model_info(uri)
        shape = info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]
        assert tuple(shape) == (-1, 64)
        versions = mlflow.tracking.MlflowClient().search_model_versions("name='digits-mlp'")
        assert len(versions) == 1 and versions[0].run_id == s["parent_run_id"]
        parent = mlflow.tracking.MlflowClient().get_run(s["parent_run_id"]).data
        assert parent.metrics["test_accuracy"] == pytest.approx(s["test_metrics"]["test_accuracy"])
    finally:
        mlflow.set_tracking_uri(None)
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = torch.tensor(digits.data, dtype=torch.float32)
    assert (logged(raw).argmax(1).numpy() == digits.target).mean() > 0.9
    assert s["test_metrics"]["test_accuracy"] > 0.9
    assert s["best_model"]["source"] == "trial"  # the best trial's own final model, not retrained
    out = tmp_path / "exported"
    hpo_cli("export", s["storage_path"], "--out", str(out), cwd=tmp_path)
    program = torch.export.load(out / "model.pt2")
    pred = program.module()(torch.tensor(digits.data, dtype=torch.float32)).argmax(1).numpy()
    assert (pred == digits.target).mean() > 0.9
    assert json.loads((out / "config.json").read_text())["config"] == {
        **json.loads((Path(s["storage_path"]) / "hpo_state.json").read_text())["experiment"]["task"],
        **s["best_config"]}


def test_regression_reports_r2_and_target_unit_errors(tmp_path, ray_address):
    s = _run("regression", tmp_path, ray_address)
    assert 0.3 < s["best_metric"] < 1.0
    assert s["test_metrics"]["test_r2"] > 0.2 and s["test_metrics"]["test_mae"] > 10  # diabetes: tens of points


def test_breast_cancer_cross_validates_and_scores_f1(tmp_path, ray_address):
    s = _run("breast_cancer", tmp_path, ray_address, "--set", "num_samples=8")
    assert s["metric"] == "val_f1" and s["best_metric"] > 0.9
    assert s["best_model"]["cross_validated"] is True and s["test_metrics"]["test_roc_auc"] > 0.9
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = next(r for r in client.search_runs([s["mlflow_experiment_id"]]) if "hpo.trial_id" in r.data.tags)
    assert {f"val_f1_fold{i}" for i in range(5)} | {"val_f1_std"} <= set(run.data.metrics)


def test_cnn_with_augmentation(tmp_path, ray_address):
    s = _run("cnn_digits", tmp_path, ray_address, "--set", "num_samples=4")
    assert s["best_config"]["model"] == "cnn" and "augment_rotate" in s["best_config"]
    assert s["best_metric"] > 0.85


def test_multi_objective_prints_an_accuracy_versus_size_front(tmp_path, ray_address):
    s = _run("multi_objective", tmp_path, ray_address, "--set", "num_samples=12")
    front = sorted(s["pareto_front"], key=lambda p: p["param_count"])
    assert len(front) >= 2
    accs = [p["val_accuracy"] for p in front]
    assert accs == sorted(accs) and len(set(accs)) == len(accs)  # bigger models on the front are more accurate


def test_pbt_applies_mutations_and_mlflow_records_their_schedule(tmp_path, ray_address):
    s = _run("pbt", tmp_path, ray_address)
    # the best trial's own kept model, or its last checkpoint when the kept one does not match
    # the trial's last result (seen once under PBT in session 12's 4 CI runs; the likely path, a
    # trial cloning another's final checkpoint with nothing left to train, now reports and keeps
    # that model: tests/test_best_model.py; either is a model of that trial, the summary says which)
    assert s["num_completed"] == 6 and s["best_model"]["source"] in ("trial", "checkpoint")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    changed = 0
    for run in client.search_runs([s["mlflow_experiment_id"]]):
        if "hpo.trial_id" not in run.data.tags:
            continue
        sched = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "hp.lr")}
        used = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")}
        steps = sorted(sched)
        assert steps[:2] == [1, 2] and steps[-1] == 12 and sched.keys() == used.keys()
        # A trial that copied a trial further ahead continues at that trial's epoch: the jump is tagged.
        jumps = [f"{a}->{b}" for a, b in zip(steps, steps[1:]) if b > a + 1]
        assert run.data.tags.get("hpo.pbt.jumps", "") == ",".join(jumps)
        assert all(used[k] == pytest.approx(sched[k], rel=1e-6) for k in sched)  # the optimizer used the mutation
        assert float(run.data.params["lr"]) == pytest.approx(sched[1], rel=1e-6)  # the param is the first value
        changed += len(set(sched.values())) > 1
    assert changed >= 1


def test_custom_model_script_runs_user_model_data_and_step(tmp_path, ray_address):
    env = {**_env(), "RAY_ADDRESS": ray_address}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_model.py"), "--json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["best_metric"] > 0.85 and {"width", "blocks", "mixup_alpha"} <= set(s["best_config"])
    assert s["test_metrics"]["test_accuracy"] > 0.8
