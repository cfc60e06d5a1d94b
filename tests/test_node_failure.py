"""A worker node dies mid-search: a head (no CPUs) and two worker nodes of one CPU each, as
``ray start`` processes on this machine, storage in one directory every node sees. Once a trial
has checkpointed on one worker node, that node's raylet and every process under it get
``kill -9``; with ``max_failures`` Ray restarts its trial on the other node from its last
checkpoint, and the search ends with every trial accounted for, one MLflow run each, and the
loss on record (``retries`` in trials.json; ``hpo.retries`` and the node history ``hpo.nodes``
on the trial's MLflow run)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from hpo.rundir import find_run_dir, read_state, trial_histories
from hpo.wire import NODE_KEY
from tests.conftest import ray_cluster, start_hpo, wait_for
from tests.test_lifecycle_search import _children, check_records

STEPS = 10
# The GCS declares a node dead after failed health checks (by default ~15 s of them): check often.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
               "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}


def _running_on(run_dir: Path, nodes: dict[str, int]) -> tuple[str, int] | None:
    """(trial id, node-manager port) of a trial that has checkpointed at least twice on one worker
    node and has steps left, once trials have reported from both worker nodes; else None."""
    seen: set[str] = set()
    candidates = []
    for tid, (_, results) in trial_histories(run_dir).items():
        seen |= {r.get(NODE_KEY) for r in results}
        last = results[-1]
        if last.get(NODE_KEY) in nodes and 2 <= last["training_iteration"] <= STEPS - 4:
            candidates.append((tid, nodes[last[NODE_KEY]]))
    return candidates[0] if candidates and set(nodes) <= seen else None


@pytest.mark.slow
def test_a_lost_worker_node_s_trials_go_on_from_their_checkpoints_on_the_other(tmp_path):
    with ray_cluster(head_cpus=0, worker_cpus=[1, 1], env=FAST_HEALTH) as cluster:
        ids = {port: cluster.node_id(port) for port in cluster.worker_ports}
        assert all(ids.values()), ids
        nodes = {node: port for port, node in ids.items()}
        exp = tmp_path / "exp.yaml"
        exp.write_text(json.dumps({
            "name": "nodes", "trainable": "tests.trainables:checkpointed", "metric": "loss", "mode": "min",
            "space": {"x": {"type": "categorical", "choices": [0.1, 0.3, 0.5, 0.7]}, "steps": STEPS, "sleep": 0.3},
            "strategy": "grid", "resources": {"cpu": 1}, "max_concurrent": 2, "max_failures": 2,
            "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}))
        proc = start_hpo(tmp_path, "run", str(exp), "--address", cluster.address, "--json")
        try:
            found: list[tuple[str, int]] = []

            def victim() -> bool:
                try:
                    run_dir = find_run_dir("nodes", str(tmp_path / "hpo_results"))
                except Exception:  # not created yet
                    return False
                hit = _running_on(run_dir, nodes)
                found[:] = [hit] if hit else []
                return bool(hit)

            wait_for(victim, proc, timeout=120, what="a checkpointed trial on each worker node")
            trial, port = found[0]
            assert cluster.kill_node(port), "no process of the worker node found"
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    lost, kept = ids[port], next(n for n in nodes if n != ids[port])

    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["num_trials"] == 4 and summary["num_completed"] == 4, summary
    run_dir = find_run_dir("nodes", str(tmp_path / "hpo_results"))
    statuses = check_records(run_dir, tmp_path / "mlflow.db", "loss", total=4)
    assert set(statuses.values()) == {"completed"}

    # The lost node's trial went on from its last checkpoint on the other node, and says so.
    records = {r["trial_id"]: r for r in json.loads((run_dir / "trials.json").read_text())["trials"]}
    assert records[trial]["retries"] == 1 and records[trial]["node"] == kept, records[trial]
    assert records[trial]["steps"] == STEPS and records[trial]["metrics"]["resumed_after"] >= 2
    steps = [r["training_iteration"] for r in trial_histories(run_dir)[trial][1]]
    assert steps == list(range(1, STEPS + 1)), steps  # from the checkpoint: no step done twice
    parent = read_state(run_dir)["parent_run_id"]
    tags = _children(tmp_path / "mlflow.db", parent)[trial][0]["tags"]
    assert tags["hpo.retries"] == "1" and tags["hpo.nodes"] == f"{lost},{kept}" and tags["hpo.node"] == kept, tags
    # No other trial was retried; every trial that ran only on one node says nothing of nodes.
    others = [t for t in statuses if t != trial]
    assert all(records[t]["retries"] == 0 and records[t]["node"] in nodes for t in others), records
    db = sqlite3.connect(tmp_path / "mlflow.db")
    assert [db.execute("SELECT count(*) FROM tags WHERE key=?", (k,)).fetchone()[0]
            for k in ("hpo.retries", "hpo.nodes")] == [1, 1]
