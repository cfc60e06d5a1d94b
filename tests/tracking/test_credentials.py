"""A password planted in the tracking URI (and in MLflow's credential variables) appears in no
output: stdout, stderr, the run directory (hpo's state, Ray's result and state files, logs), and
no MLflow param, tag or artifact, on a real ``mlflow server``. Continuing the search's records
needs the password given again."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hpo.rundir import find_run_dir
from tests.conftest import _env

pytestmark = pytest.mark.slow


def _hpo(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=400)


def _files_with(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file() and any(n in p.read_bytes() for n in needles):
            found.append(str(p.relative_to(root)))
    return found


def test_a_planted_password_leaks_nowhere_and_is_asked_for_again(tmp_path, mlflow_server, ray_address):
    from urllib.parse import quote

    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    secret, env_secret = f"pw{uuid.uuid4().hex}", f"tok{uuid.uuid4().hex}"
    uri = mlflow_server.uri.replace("http://", f"http://hpo:{secret}@")
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "name": "secret", "task": {"dataset": "iris", "epochs": 2}, "metric": "val_accuracy",
        "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}, "num_samples": 3,
        "strategy": {"searcher": "random", "seed": 0}, "storage_path": str(tmp_path / "runs"),
        "tracking": {"tracking_uri": uri}}))
    env = {**_env(), "MLFLOW_TRACKING_PASSWORD": env_secret, "MLFLOW_TRACKING_TOKEN": env_secret}
    env.pop("MLFLOW_TRACKING_URI", None)
    outputs = []
    run = _hpo(tmp_path, env, "run", str(exp), "--address", ray_address, "--json")
    outputs.append(run.stdout + run.stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = find_run_dir("secret", str(tmp_path / "runs"))

    # the recorded URI is masked, so continuing the records needs the password again
    sync = _hpo(tmp_path, env, "sync-mlflow", str(run_dir))
    outputs.append(sync.stdout + sync.stderr)
    assert sync.returncode == 2 and "--tracking-uri" in sync.stderr and "hpo:***@" in sync.stderr
    sync = _hpo(tmp_path, {**env, "MLFLOW_TRACKING_URI": uri}, "sync-mlflow", str(run_dir), "--json")
    outputs.append(sync.stdout + sync.stderr)
    assert sync.returncode == 0, sync.stderr[-3000:]

    needles = [s.encode() for s in (secret, env_secret, quote(secret), quote(env_secret))]
    assert not [o for o in outputs if any(n.decode() in o for n in needles)]
    # the run directory (hpo's state, Ray's result and state files, logs, reports, plots); the
    # experiment file is the user's own
    assert _files_with(tmp_path, needles) == ["exp.yaml"]
    assert "hpo:***@" in (run_dir / "hpo_state.json").read_text()
    assert _files_with(Path(mlflow_server.dir), needles) == []  # every artifact the server stored

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("secret")
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    assert len(runs) == 4  # the parent and three trials: sync added nothing
    texts = [v for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    assert texts and not [t for t in texts if any(n.decode() in t for n in needles)]
