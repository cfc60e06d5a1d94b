"""The ``hpo`` command end to end, in subprocesses, against the session's Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, _env, hpo_cli

QUICKSTART = str(ROOT / "examples" / "quickstart.yaml")
JSON_KEYS = {"name", "best_config", "best_metric", "num_trials", "num_errored", "num_pruned", "nodes",
             "mlflow_experiment_id", "parent_run_id", "storage_path"}


def test_help_is_fast_and_imports_no_heavy_modules():
    code = ("import sys, hpo.cli; hpo.cli._parser(); "
            "print(sorted(m for m in ('ray','torch','mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "[]"


def test_strategies_lists_every_builtin_with_a_description(tmp_path):
    out = hpo_cli("strategies", cwd=tmp_path).stdout
    for name in ("grid", "random", "sobol", "tpe", "cmaes", "gp", "nsga2", "asha", "hyperband", "median"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10


def test_validate_reports_bad_key_with_exit_code_2_and_writes_nothing(tmp_path):
    proc = hpo_cli("validate", QUICKSTART, "--set", "strategy.shceduler=asha", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "strategy.shceduler" in proc.stderr and "valid keys" in proc.stderr
    assert "Did you mean 'scheduler'" in proc.stderr
    proc = hpo_cli("run", QUICKSTART, "--set", "num_samples=0", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "num_samples" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing launched, nothing written


@pytest.mark.slow
def test_run_json_on_cluster_prints_summary_line_and_uses_both_nodes(tmp_path, ray_address):
    # batch size 4: trials long enough (~1 s) that the second node's worker starts before the
    # first node has run them all
    proc = hpo_cli("run", QUICKSTART, "--json", "--address", ray_address, "--set", "num_samples=6",
                   "--set", "task.epochs=6", "--set", "space.params.batch_size=4",
                   "--set", "task.test_best=false", cwd=tmp_path)  # the best model: tests/test_examples.py
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert JSON_KEYS <= set(summary)
    assert summary["num_trials"] == 6 and summary["nodes"] == 2
    assert summary["best_metric"] > 0.8 and set(summary["best_config"]) >= {"lr", "hidden", "optimizer"}
    assert Path(summary["storage_path"]).is_dir()
    # not a terminal: plain progress lines on stderr, no Ray tables
    assert "[hpo" in proc.stderr and "Trial status" not in proc.stderr + proc.stdout
    # MLflow: parent run with exactly num_trials children, each complete
    db = sqlite3.connect(tmp_path / "mlflow.db")
    children = [r[0] for r in db.execute(
        "SELECT run_uuid FROM tags WHERE key='mlflow.parentRunId' AND value=?", (summary["parent_run_id"],))]
    assert len(children) == 6
    for run_id in children:
        params = {k for (k,) in db.execute("SELECT key FROM params WHERE run_uuid=?", (run_id,))}
        trial = next(t for t in db.execute("SELECT value FROM tags WHERE run_uuid=? AND key='hpo.trial_id'",
                                           (run_id,)))
        assert trial and {"lr", "hidden", "optimizer", "activation"} <= params
        steps = [s for (s,) in db.execute("SELECT step FROM metrics WHERE run_uuid=? AND key='val_accuracy'",
                                          (run_id,))]
        assert steps and sorted(steps) == list(range(1, max(steps) + 1))
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid=?", (run_id,)))
        status = tags["hpo.status"]
        assert status == "completed" or status.startswith("pruned at epoch")
        # ASHA (grace 2, factor 3, 6 epochs): rungs at epochs 2 and 6; a pruned trial stopped at its rung
        assert tags["hpo.rung_epoch"] == ("6" if status == "completed" else status.rsplit(" ", 1)[1])
        assert tags["hpo.rung"] == {"2": "0", "6": "1"}[tags["hpo.rung_epoch"]]
        assert tags["hpo.gpu"] == "none" and tags["hpo.node"]
        bookkeeping = {k for (k,) in db.execute("SELECT DISTINCT key FROM metrics WHERE run_uuid=?", (run_id,))}
        assert not bookkeeping & {"pid", "timestamp", "time_total_s", "training_iteration", "node_ip"}


@pytest.mark.slow
def test_progress_bar_on_a_terminal(tmp_path, ray_address):
    cmd = (f"{sys.executable} -m hpo.cli run {QUICKSTART} --address {ray_address} --set num_samples=2 "
           "--set task.epochs=2 --set tracking.enabled=false")
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], cwd=tmp_path, env={**_env(), "COLUMNS": "160"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2/2" in proc.stdout and "best val_accuracy" in proc.stdout and "[hpo " not in proc.stdout
    # the end: a table of the top completed trials instead of the raw JSON configuration
    assert "completed trials by val_accuracy (max):" in proc.stdout and "best config:" not in proc.stdout


@pytest.mark.slow
def test_killed_search_resumes_without_losing_or_duplicating_trials(tmp_path, ray_address):
    exp = tmp_path / "slow.yaml"
    exp.write_text(
        "name: slow\ntrainable: tests.trainables:quadratic\nspace:\n  x: {type: float, low: 0, high: 1}\n"
        "  steps: 4\n  sleep: 0.5\nmetric: loss\nmode: min\nstrategy: {searcher: tpe, seed: 3}\nnum_samples: 8\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "run", str(exp), "--address", ray_address],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 120
    db_path = tmp_path / "mlflow.db"
    # kill once some trials finished and some are in flight
    while time.time() < deadline:
        time.sleep(0.5)
        if db_path.exists():
            try:
                done = sqlite3.connect(db_path).execute(
                    "SELECT count(*) FROM runs WHERE status='FINISHED'").fetchone()[0]
            except sqlite3.Error:
                continue
            if done >= 3:
                break
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = hpo_cli("resume", "slow", "--json", "--address", ray_address, cwd=tmp_path)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 8 and summary["num_errored"] == 0
    db = sqlite3.connect(db_path)
    children = db.execute(
        "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid=r.run_uuid "
        "WHERE t.key='mlflow.parentRunId' AND t.value=? AND r.lifecycle_stage='active'",
        (summary["parent_run_id"],)).fetchall()
    assert len(children) == 8 and {s for _, s in children} == {"FINISHED"}
    for run_id, _ in children:  # every step once: nothing duplicated by the restart
        steps = [s for (s,) in db.execute("SELECT step FROM metrics WHERE run_uuid=? AND key='loss'", (run_id,))]
        assert sorted(steps) == [1, 2, 3, 4]
    parents = db.execute("SELECT count(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE "
                         "t.run_uuid=r.run_uuid AND t.key='mlflow.parentRunId')").fetchone()[0]
    assert parents == 1
    other = hpo_cli("resume", "slow", "--tracking-uri", f"sqlite:///{tmp_path}/other.db", cwd=tmp_path, check=False)
    assert other.returncode == 2 and "sync-mlflow" in other.stderr
