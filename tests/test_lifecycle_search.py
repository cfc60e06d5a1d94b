"""Every way a search ends, on the real two-node Ray cluster with MLflow on SQLite: all trials
done, ``time_budget_s``, ``epoch_budget``, SIGINT, SIGTERM, and ``kill -9`` at three moments
followed by ``hpo resume``; Optuna samplers, grid and random; FIFO and ASHA; packed and not.

After each, :func:`check_records` holds every record to the same story: each trial's terminal
state is the same in ``Results``, ``trials.json``, the Optuna study and its MLflow child run; no
trial is RUNNING anywhere; one child run per trial with every step Ray's result files hold,
once; the best trial is a completed one.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import hpo
from hpo.results import Results, TrialRecord
from hpo.rundir import TRIALS_FILE, find_run_dir, read_state, saved_records, trial_histories
from hpo.wire import STEP_KEY
from tests.conftest import hpo_cli, read_until, start_hpo, wait_for

pytestmark = pytest.mark.slow

_MLFLOW = {"completed": "FINISHED", "pruned": "KILLED", "cut": "KILLED", "errored": "FAILED", "diverged": "FAILED"}
_OPTUNA = {"completed": "COMPLETE", "pruned": "PRUNED", "cut": "PRUNED", "errored": "FAIL", "diverged": "FAIL"}


def _study(run_dir: Path) -> Any:
    """The Optuna study as the search saved it last (None for searchers without one)."""
    paths = sorted(run_dir.glob("searcher-state-*.pkl"))
    if not paths:
        return None
    state = pickle.loads(paths[-1].read_bytes())
    if "inner" in state:  # packing's searcher keeps the wrapped searcher's file inside its own
        state = pickle.loads(state["inner"])
    return state.get("study") if isinstance(state, dict) else None


def _children(db_path: Path, parent: str) -> dict[str, list[dict[str, Any]]]:
    db = sqlite3.connect(db_path)
    out: dict[str, list[dict[str, Any]]] = {}
    for run_id, status in db.execute(
            "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid=r.run_uuid WHERE "
            "t.key='mlflow.parentRunId' AND t.value=? AND r.lifecycle_stage='active'", (parent,)):
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid=?", (run_id,)))
        metrics = db.execute("SELECT key, step FROM metrics WHERE run_uuid=?", (run_id,)).fetchall()
        out.setdefault(tags["hpo.trial_id"], []).append({"status": status, "tags": tags, "metrics": metrics})
    return out


def check_records(run_dir: Path, db_path: Path | None, metric: str, *, total: int | None = None,
                  results: Results | None = None, parent_status: str = "FINISHED") -> dict[str, str]:
    """Assert that every record tells the same story; returns trial id -> terminal state."""
    state = read_state(run_dir)
    records = [TrialRecord(**r) for r in saved_records(run_dir)]
    statuses = {r.trial_id: r.status for r in records}
    assert records, "trials.json holds no trial"
    if total is not None:
        assert len(records) == total, statuses
    if results is not None:
        assert {t.trial_id: t.status for t in results.trials} == statuses
    exp = state["experiment"]
    modes = exp["mode"] if isinstance(exp["mode"], list) else [exp["mode"]]
    metrics = exp["metric"] if isinstance(exp["metric"], list) else [exp["metric"]]
    best = Results(exp["name"], metrics, modes, records, str(run_dir)).best_trial
    assert best is None or best.status == "completed"
    for r in records:
        if r.status == "cut":
            assert r.cut_at is not None and r.cut_reason, r
        if r.status == "pruned":
            assert r.pruned_at is not None, r
    study = _study(run_dir)
    if study is not None:
        states = Counter(t.state.name for t in study.trials)
        assert states == Counter(_OPTUNA[s] for s in statuses.values()), (states, Counter(statuses.values()))
    if db_path is not None:
        parent = state["parent_run_id"]
        db = sqlite3.connect(db_path)
        assert db.execute("SELECT status FROM runs WHERE run_uuid=?", (parent,)).fetchone()[0] == parent_status
        children = _children(db_path, parent)
        assert set(children) == set(statuses), (set(children) ^ set(statuses))
        histories = trial_histories(run_dir)
        for tid, runs in children.items():
            assert len(runs) == 1, f"trial {tid} has {len(runs)} runs"
            run = runs[0]
            assert run["status"] == _MLFLOW[statuses[tid]], (tid, statuses[tid], run["status"])
            assert run["tags"]["hpo.status"].startswith(statuses[tid]), (tid, run["tags"]["hpo.status"])
            steps = [s for k, s in run["metrics"] if k == metric]
            assert len(steps) == len(set(steps)), f"trial {tid}: a step logged twice: {sorted(steps)}"
            ray_steps = {int(r.get(STEP_KEY, r.get("training_iteration", 0)))
                         for r in histories.get(tid, ({}, []))[1] if metric in r}
            ray_steps |= {int(h[STEP_KEY]) for r in histories.get(tid, ({}, []))[1]
                          for h in r.get("hpo_history", []) if metric in h}
            assert set(steps) == ray_steps, (tid, sorted(steps), sorted(ray_steps))
        running = db.execute("SELECT r.run_uuid, r.lifecycle_stage, t.key, t.value FROM runs r LEFT JOIN tags t "
                             "ON t.run_uuid=r.run_uuid AND t.key IN ('hpo.trial_id', 'mlflow.parentRunId') "
                             "WHERE r.status='RUNNING'").fetchall()
        assert not running, running
    return statuses


def _api(tmp_path: Path, address: str, **kw: Any) -> Results:
    args: dict[str, Any] = dict(
        name="life", trainable="tests.trainables:quadratic", metric="loss", mode="min", max_concurrent=2,
        space={"x": {"type": "float", "low": 0, "high": 1}, "steps": 4, "sleep": 0.2},
        storage_path=str(tmp_path / "runs"), address=address,
        tracking={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    args.update(kw)
    return hpo.run(**args)


_ASHA = {"searcher": "tpe", "scheduler": "asha", "max_t": 4, "seed": 1,
         "scheduler_options": {"grace_period": 1, "reduction_factor": 2}}


def test_all_trials_done_tpe_with_asha(tmp_path, ray_address):
    results = _api(tmp_path, ray_address, strategy=_ASHA, num_samples=10)
    statuses = check_records(Path(results.storage_path), tmp_path / "mlflow.db", "loss", total=10, results=results)
    assert "pruned" in statuses.values() and "cut" not in statuses.values() and results.stop_reason is None


def test_time_budget_random_with_asha(tmp_path, ray_address):
    results = _api(tmp_path, ray_address, strategy={**_ASHA, "searcher": "random"}, num_samples=200,
                   time_budget_s=6)
    statuses = check_records(Path(results.storage_path), tmp_path / "mlflow.db", "loss", results=results)
    assert results.stop_reason == "time budget" and len(statuses) < 200
    assert "cut" in statuses.values()  # two trials were running when the time was up
    assert all(t.cut_reason == "time budget" for t in results.trials if t.status == "cut")


def test_epoch_budget_grid_with_asha_keeps_short_finished_trials_as_they_ended(tmp_path, ray_address):
    space = {"x": {"type": "grid", "values": [i / 20 for i in range(20)]}, "steps": 4, "sleep": 0.2}
    results = _api(tmp_path, ray_address, space=space, num_samples=None, epoch_budget=24,
                   strategy={**_ASHA, "searcher": "grid"})
    statuses = check_records(Path(results.storage_path), tmp_path / "mlflow.db", "loss", results=results)
    assert results.stop_reason == "epoch budget" and len(statuses) < 20
    # pruned trials stopped at a rung keep "pruned", never relabelled by the budget
    assert all(t.pruned_at is not None for t in results.trials if t.status == "pruned")
    assert all(t.steps == 4 for t in results.trials if t.status == "completed")


def test_epoch_budget_packed_builtin_task_random(tmp_path, ray_address):
    results = hpo.run(name="lifepack", task={"dataset": "iris", "epochs": 3, "test_best": False},
                      space={"lr": {"type": "float", "low": 0.01, "high": 0.1}}, metric="val_accuracy", mode="max",
                      strategy="random", num_samples=60, pack=4, epoch_budget=30, max_concurrent=2,
                      address=ray_address, storage_path=str(tmp_path / "runs"),
                      tracking={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    statuses = check_records(Path(results.storage_path), tmp_path / "mlflow.db", "val_accuracy", results=results)
    assert results.stop_reason == "epoch budget" and len(statuses) < 60
    spent = sum(t.steps for t in results.trials)
    assert 30 <= spent <= 30 + 2 * 4 * 3
    assert all(t.steps == 3 for t in results.trials if t.status == "completed")


# -- signals and kills: the ``hpo`` command in a subprocess ---------------------------------------


def _yaml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(body)
    return path


def _past_step_2(marks: Path) -> int:
    """Trials that reported step 2 (``tests.trainables.quadratic``'s mark files: they appear at
    once, while MLflow's records may lag on a loaded machine and Ray syncs ``result.json`` late)."""
    return len(list(marks.glob("*-2")))


_SLOW_TPE = ("name: sig\ntrainable: tests.trainables:quadratic\nspace:\n  x: {type: float, low: 0, high: 1}\n"
             "  steps: 4\n  sleep: 0.4\nmetric: loss\nmode: min\nnum_samples: 16\nmax_concurrent: 2\n"
             "strategy: {searcher: tpe, scheduler: asha, max_t: 4, seed: 2, "
             "scheduler_options: {grace_period: 2, reduction_factor: 2}}\n")


def test_sigint_cuts_running_trials_marks_the_search_killed_and_resume_finishes_it(tmp_path, ray_address):
    marks = tmp_path / "marks"
    marks.mkdir()
    exp = _yaml(tmp_path, _SLOW_TPE.replace("  steps: 4\n", f"  steps: 4\n  mark_dir: {marks}\n"))
    db = tmp_path / "mlflow.db"
    proc = start_hpo(tmp_path, "run", str(exp), "--address", ray_address, "--json")
    wait_for(lambda: _past_step_2(marks) >= 2, proc, what="two trials past step 2")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "hpo resume " in err and "SIGINT" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] == "SIGINT" and summary["num_trials"] < 16
    run_dir = find_run_dir("sig", str(tmp_path / "hpo_results"))
    statuses = check_records(run_dir, db, "loss", parent_status="KILLED")
    assert "cut" in statuses.values()
    assert not (run_dir / "best_model").exists()  # no best-model recovery after an interrupt
    out = hpo_cli("resume", "sig", "--json", "--address", ray_address, cwd=tmp_path)
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["num_trials"] == 16 and resumed["parent_run_id"] == summary["parent_run_id"]
    after = check_records(run_dir, db, "loss", total=16)
    assert {t: s for t, s in after.items() if t in statuses} == statuses  # cut trials stay cut


def test_sigterm_on_a_packed_grid_search_exits_143_with_every_record_written(tmp_path, ray_address):
    lrs = [round(0.005 * i, 3) for i in range(1, 13)]
    exp = _yaml(tmp_path, "name: term\ntask: {dataset: digits, epochs: 4, batch_size: 4, test_best: false}\n"
                          f"space:\n  lr: {{type: grid, values: {lrs}}}\n"
                          "  hidden: {type: grid, values: [16, 32]}\nmetric: val_accuracy\nmode: max\n"
                          "strategy: grid\npack: 3\nmax_concurrent: 2\n")
    db = tmp_path / "mlflow.db"
    proc = start_hpo(tmp_path, "run", str(exp), "--address", ray_address)
    seen = read_until(proc, " completed ")  # a first trial completed
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    err = seen + err
    assert proc.returncode == 143, err[-3000:]
    run_dir = find_run_dir("term", str(tmp_path / "hpo_results"))
    statuses = check_records(run_dir, db, "val_accuracy", parent_status="KILLED")
    # Ray may have created every packed trial before the signal (pending ones end cut, unstarted
    # configurations too), so the count of records says nothing; that some were cut does.
    assert "cut" in statuses.values()
    assert list(statuses.values()).count("completed") < 24


def test_kill_9_at_three_moments_then_resume_loses_and_duplicates_nothing(tmp_path, ray_address):
    marks = tmp_path / "marks"
    marks.mkdir()
    exp = _yaml(tmp_path, "name: k9\ntrainable: tests.trainables:quadratic\nspace:\n"
                          f"  x: {{type: float, low: 0, high: 1}}\n  mark_dir: {marks}\n"
                          "  steps: 3\n  sleep: 0.3\nmetric: loss\nmode: min\n"
                          "strategy: {searcher: random, seed: 5}\nnum_samples: 12\nmax_concurrent: 2\n")
    db, runs = tmp_path / "mlflow.db", tmp_path / "hpo_results"

    def kill(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # 1. during start-up: the run directory exists, Ray's state does not yet
    proc = start_hpo(tmp_path, "run", str(exp), "--address", ray_address)
    wait_for(lambda: any(runs.glob("k9-*/hpo_state.json")), proc, what="the run directory")
    kill(proc)
    run_dir = find_run_dir("k9", str(runs))
    # 2. mid-search
    proc = start_hpo(tmp_path, "resume", "k9", "--address", ray_address)
    wait_for(lambda: _past_step_2(marks) >= 3, proc, what="three trials past step 2")
    kill(proc)
    # 3. during the end-of-search writes: trials.json is written, MLflow's summary is not
    proc = start_hpo(tmp_path, "resume", "k9", "--address", ray_address)
    wait_for(lambda: (run_dir / TRIALS_FILE).exists(), proc, what="trials.json")
    kill(proc)
    out = hpo_cli("resume", "k9", "--json", "--address", ray_address, cwd=tmp_path)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 12 and summary["num_completed"] == 12, summary
    check_records(run_dir, db, "loss", total=12)
    parents = sqlite3.connect(db).execute(
        "SELECT count(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid=r.run_uuid "
        "AND t.key='mlflow.parentRunId')").fetchone()[0]
    assert parents == 1


def test_kill_9_then_resume_keeps_pruned_records_and_the_epoch_budget_spent(tmp_path, ray_address):
    exp = _yaml(tmp_path, "name: kb\ntrainable: tests.trainables:quadratic\nspace:\n"
                          "  x: {type: float, low: 0, high: 1}\n  steps: 4\n  sleep: 0.5\nmetric: loss\nmode: min\n"
                          "strategy: {searcher: random, scheduler: asha, max_t: 4, seed: 7, "
                          "scheduler_options: {grace_period: 1, reduction_factor: 2}}\n"
                          "num_samples: 200\nmax_concurrent: 2\nepoch_budget: 80\n")
    db, runs = tmp_path / "mlflow.db", tmp_path / "hpo_results"

    def pruned_in_mlflow() -> set[str]:
        if not db.exists():
            return set()
        return {tid for (tid,) in sqlite3.connect(db).execute(
            "SELECT t.value FROM tags t JOIN tags s ON s.run_uuid=t.run_uuid WHERE t.key='hpo.trial_id' "
            "AND s.key='hpo.status' AND s.value LIKE 'pruned%'")}

    def spent() -> int:
        saved = runs.glob("kb-*/outcomes.json")
        return max((sum(json.loads(p.read_text())["epochs"].values()) for p in saved), default=0)

    proc = start_hpo(tmp_path, "run", str(exp), "--address", ray_address)
    # Ray saves its experiment state (and the collector's with it) at least every 10 s
    wait_for(lambda: len(pruned_in_mlflow()) >= 2 and spent() >= 10, proc, what="pruned trials and a state save")
    before, spent_before = pruned_in_mlflow(), spent()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = hpo_cli("resume", "kb", "--json", "--address", ray_address, cwd=tmp_path)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    run_dir = find_run_dir("kb", str(runs))
    statuses = check_records(run_dir, db, "loss")
    # trials ASHA pruned before the kill come back pruned (random search keeps no Optuna record of them)
    kept = {tid for tid in before if tid in statuses}
    assert kept and all(statuses[tid] == "pruned" for tid in kept), {tid: statuses.get(tid) for tid in before}
    # the budget goes on from what was spent: about 80 epochs in all, not 80 more. Epochs a trial
    # ran before the kill count (compute spent) even when it restarted from scratch afterwards,
    # so its record can show fewer steps than the budget counted for it.
    spent_total = sum(json.loads((run_dir / "outcomes.json").read_text())["epochs"].values())
    recorded = sum(r["steps"] for r in saved_records(run_dir))
    assert summary["stop_reason"] == "epoch budget" and spent_before < 80
    assert 80 <= spent_total <= 80 + 2 * 4 and recorded <= spent_total, (spent_total, recorded, spent_before)


def test_sigint_on_a_packed_asha_search_then_resume_goes_on_with_the_same_rungs(tmp_path, ray_address):
    from tests.test_decisions import _rays_asha, _replay_through_ray

    exp = _yaml(tmp_path, "name: pasha\ntask: {dataset: digits, epochs: 9, batch_size: 8, test_best: false}\n"
                          "space:\n  lr: {type: float, low: 0.001, high: 0.3, log: true}\n"
                          "  hidden: {type: int, low: 4, high: 64}\nmetric: val_accuracy\nmode: max\n"
                          "strategy: {searcher: random, seed: 2, scheduler: {name: asha, grace_period: 1, "
                          "reduction_factor: 3}}\nnum_samples: 18\npack: 3\nmax_concurrent: 2\n")
    db = tmp_path / "mlflow.db"
    proc = start_hpo(tmp_path, "run", str(exp), "--address", ray_address)
    seen = read_until(proc, " pruned at step ")  # the table has stopped a configuration
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + err)[-3000:]
    run_dir = find_run_dir("pasha", str(tmp_path / "hpo_results"))
    log = run_dir / "decisions.jsonl"
    asked_before = len(log.read_text().splitlines())
    out = hpo_cli("resume", "pasha", "--json", "--address", ray_address, cwd=tmp_path)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    statuses = check_records(run_dir, db, "val_accuracy", total=18)
    assert summary["num_trials"] == 18, summary
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) > asked_before  # the resumed search asked the same table's log
    # one sequence across the interrupt, decided as Ray's ASHA decides it: the resumed table
    # started from every value recorded before (an empty one would let worse trials through)
    asha = _rays_asha({"grace_period": 1, "reduction_factor": 3}, 9, "val_accuracy", "max")
    assert _replay_through_ray(lines, asha) == [q["stop"] for q in lines]
    pruned = {q["trial"]: q["step"] for q in lines if q["stop"] and q["step"] < 9}
    recorded = {t for t, s in statuses.items() if s == "pruned"}
    # a stop answered just as the interrupt cut its pack never reached the driver: that one is cut
    assert recorded <= set(pruned) and all(statuses[t] == "cut" for t in set(pruned) - recorded), (statuses, pruned)
    assert len(recorded) >= 3
