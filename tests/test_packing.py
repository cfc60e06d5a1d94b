"""Packing short trials into shared Ray trials (hpo/packing.py).

Unit tests drive ``PackingSearcher`` and ``split_result`` directly; the searches run on the
real two-node Ray cluster and check that every packed configuration is a trial of its own in
the results, the searcher and MLflow.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import Searcher

import hpo
from hpo import Float, Grid
from hpo.errors import HpoConfigError
from hpo.packing import PackingSearcher
from hpo.wire import (
    END_KEY,
    ERROR_KEY,
    GPU_KEY,
    HISTORY_KEY,
    NODE_KEY,
    PACK_KEY,
    STARTED_KEY,
    STEP_KEY,
    SUB_KEY,
    TIME_KEY,
    split_result,
)


class Recorder(Searcher):
    """A searcher that hands out x = 0, 1, 2, ... and records what it is told."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(metric="loss", mode="min")
        self.limit, self.n = limit, 0
        self.results: list[tuple[str, dict]] = []
        self.completed: list[tuple[str, dict | None, bool]] = []

    def suggest(self, trial_id: str) -> dict | None:
        if self.limit is not None and self.n >= self.limit:
            return Searcher.FINISHED  # type: ignore[return-value]
        self.n += 1
        return {"x": self.n - 1}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.results.append((trial_id, result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append((trial_id, result, error))


def _step(sid: str, step: int, t: float, started: float, end: bool = False, **metrics: Any) -> dict:
    e = {**metrics, SUB_KEY: sid, STEP_KEY: step, TIME_KEY: t, STARTED_KEY: started}
    if end:
        e[END_KEY] = True
    return e


def _report(*steps: dict) -> dict:
    *earlier, last = steps
    return {**last, HISTORY_KEY: list(earlier), NODE_KEY: "n1", GPU_KEY: "none", "training_iteration": 3,
            "time_total_s": 9.0, "done": True, "trial_id": "ray1"}


def _finish(s: PackingSearcher, trial_id: str, config: dict, seconds: float) -> None:
    """Complete a suggested Ray trial whose trials each took ``seconds``."""
    if PACK_KEY not in config:
        s.on_trial_complete(trial_id, {STARTED_KEY: 0.0, TIME_KEY: seconds, "loss": 1.0})
        return
    steps = [_step(sid, 1, seconds * (i + 1), seconds * i, end=True, loss=1.0)
             for i, (sid, _) in enumerate(config[PACK_KEY])]
    s.on_trial_complete(trial_id, _report(*steps))


def test_split_result_gives_each_packed_trial_its_own_steps_node_and_no_ray_fields():
    res = _report(_step("a.00", 1, 1.0, 0.5, loss=3.0), _step("a.00", 2, 2.0, 0.5, end=True, loss=2.0),
                  _step("a.01", 1, 3.0, 2.1, loss=5.0))
    (a, ra), (b, rb) = split_result(res)
    assert (a, b) == ("a.00", "a.01")
    assert ra["loss"] == 2.0 and ra[END_KEY] and [e["loss"] for e in ra[HISTORY_KEY]] == [3.0]
    assert rb["loss"] == 5.0 and HISTORY_KEY not in rb and END_KEY not in rb
    for r in (ra, rb):
        assert r[NODE_KEY] == "n1" and r[GPU_KEY] == "none" and r["trial_id"] in ("a.00", "a.01")
        assert not {"training_iteration", "time_total_s", "done"} & set(r)


def test_auto_packs_only_after_seeing_short_trials_and_stays_single_for_long_ones():
    s = PackingSearcher(Recorder(), num_samples=1000)
    first = [s.suggest(f"t{i}") for i in range(2)]
    assert all(PACK_KEY not in c for c in first)  # nothing measured yet
    for i, c in enumerate(first):
        _finish(s, f"t{i}", c, 2.0)  # 2-second trials
    assert s.pack_size() == 1
    long = PackingSearcher(Recorder(), num_samples=1000)
    for i in range(2):
        _finish(long, f"t{i}", long.suggest(f"t{i}"), 0.1)  # 0.1-second trials
    assert long.pack_size() == 8  # 1 s / 0.1 s = 10, capped at 8
    packed = long.suggest("t9")
    assert [sid for sid, _ in packed[PACK_KEY]] == [f"t9.{i:02d}" for i in range(8)]
    assert [c["x"] for _, c in packed[PACK_KEY]] == list(range(2, 10))


def test_packs_shrink_at_the_end_and_never_exceed_num_samples():
    s = PackingSearcher(Recorder(), num_samples=40, adaptive=False)
    live = [("t0", s.suggest("t0")), ("t1", s.suggest("t1"))]  # two workers
    for tid, c in live:
        _finish(s, tid, c, 0.05)
    sizes, i = [], 2
    while True:
        c = s.suggest(f"t{i}")
        if c == Searcher.FINISHED:
            break
        sizes.append(len(c.get(PACK_KEY, [c])))
        _finish(s, f"t{i}", c, 0.05)
        i += 1
    assert sum(sizes) == 38 and s.inner.n == 40
    assert max(sizes) == 8 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True), sizes


def test_fixed_pack_size_and_a_finishing_searcher_end_the_search():
    s = PackingSearcher(Recorder(limit=5), num_samples=None, size=3)
    a, b = s.suggest("a"), s.suggest("b")
    assert len(a[PACK_KEY]) == 3 and len(b[PACK_KEY]) == 2  # the searcher ran out mid-pack
    assert s.suggest("c") == Searcher.FINISHED


def test_each_packed_trial_is_told_to_the_searcher_as_it_ends_failures_as_errors():
    inner = Recorder()
    s = PackingSearcher(inner, num_samples=10, size=3)
    s.suggest("r")
    s.on_trial_result("r", _report(_step("r.00", 1, 1.0, 0.0, loss=4.0), _step("r.00", 2, 2.0, 0.0, end=True,
                                                                               loss=3.0)))
    assert [(t, r["loss"], e) for t, r, e in inner.completed] == [("r.00", 3.0, False)]
    failed = _step("r.01", 0, 2.5, 2.0, end=True)
    failed[ERROR_KEY] = "ValueError: boom"
    s.on_trial_result("r", _report(failed, _step("r.02", 1, 3.0, 2.6, loss=9.0)))
    assert inner.completed[-1] == ("r.01", None, True)
    assert inner.results[-1][0] == "r.02"  # still running: an intermediate result
    s.on_trial_complete("r", None, error=True)  # its worker died: r.02 failed with it
    assert inner.completed[-1] == ("r.02", None, True) and len(inner.completed) == 3


def test_pack_settings_are_checked_before_launch():
    base = dict(name="p", metric="val_accuracy", space={"params": {"lr": {"type": "float", "low": 1e-3,
                                                                          "high": 0.1}}},
                task={"dataset": "iris", "epochs": 3})
    for bad, rule in ((0, "must be 'auto' or a whole number >= 1"), ("big", "whole number"),
                      (True, "whole number")):
        with pytest.raises(HpoConfigError, match=rule) as err:
            hpo.Experiment.from_dict({**base, "pack": bad})
        assert err.value.key == "pack"
    with pytest.raises(HpoConfigError, match="packing needs `scheduler: fifo`") as err:
        hpo.Experiment.from_dict({**base, "pack": 4, "strategy": "random+hyperband"})
    assert err.value.key == "pack" and "4" in str(err.value)
    with pytest.raises(HpoConfigError, match="checkpoint_freq"):
        hpo.Experiment.from_dict({**base, "pack": 2, "task": {"dataset": "iris", "checkpoint_freq": 1}})
    with pytest.raises(HpoConfigError, match="only the built-in task"):
        hpo.Experiment.from_dict({**base, "pack": 2, "trainable": "tests.trainables:quadratic", "metric": "loss"})
    assert not hpo.Experiment.from_dict({**base, "strategy": "random+hyperband"}).packs  # auto: just not packed
    median = hpo.Experiment.from_dict({**base, "pack": 4, "strategy": "random+median"})
    assert median.packs and median.asks_in_worker  # asked from the worker at every epoch


# -- searches on the two-node cluster ---------------------------------------------------------------


def _children(db_path: Path, parent: str) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(db_path)
    out = {}
    for (run_id,) in db.execute("SELECT t.run_uuid FROM tags t JOIN runs r ON r.run_uuid=t.run_uuid WHERE "
                                "t.key='mlflow.parentRunId' AND t.value=? AND r.lifecycle_stage='active'", (parent,)):
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid=?", (run_id,)))
        out[tags["hpo.trial_id"]] = {
            "tags": tags,
            "status": db.execute("SELECT status FROM runs WHERE run_uuid=?", (run_id,)).fetchone()[0],
            "params": dict(db.execute("SELECT key, value FROM params WHERE run_uuid=?", (run_id,))),
            "steps": sorted(s for (s,) in db.execute(
                "SELECT step FROM metrics WHERE run_uuid=? AND key='val_accuracy'", (run_id,))),
        }
    return out


@pytest.mark.slow
def test_packed_search_keeps_every_configuration_a_trial_and_an_mlflow_run(in_tmp, ray_address):
    import os

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    grid = {"lr": Grid([0.01, 0.03, 0.1]), "hidden": Grid([8, 16, 32, 64])}
    results = hpo.run(name="packed", task={"dataset": "iris", "epochs": 3}, space=grid, metric="val_accuracy",
                      mode="max", strategy="grid", pack=4, address=ray_address, max_concurrent=2)
    assert len(results.trials) == 12 and results.count("completed") == 12
    ids = [t.trial_id for t in results.trials]
    assert len(set(ids)) == 12 and all("." in i for i in ids)  # packs of 4: <ray id>.<k>
    assert sorted((t.config["lr"], t.config["hidden"]) for t in results.trials) == sorted(
        (lr, h) for lr in (0.01, 0.03, 0.1) for h in (8, 16, 32, 64))
    assert all(t.steps == 3 and "val_accuracy" in t.metrics for t in results.trials)
    assert results.best_model_info and results.test_metrics  # the best packed trial's own model, tested
    # logging the best model leaves MLflow's URI as it was: the next search in this process
    # goes to its own store
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    children = _children(in_tmp / "mlflow.db", results.parent_run_id)
    assert set(children) == set(ids)
    for tid, run in children.items():
        trial = next(t for t in results.trials if t.trial_id == tid)
        assert run["status"] == "FINISHED" and run["tags"]["hpo.status"] == "completed"
        assert run["steps"] == [1, 2, 3]  # every epoch once
        assert float(run["params"]["lr"]) == trial.config["lr"] and int(run["params"]["hidden"]) == trial.config[
            "hidden"]
    trials = json.loads((Path(results.storage_path) / "trials.json").read_text())["trials"]
    assert len(trials) == 12


@pytest.mark.slow
def test_a_failing_configuration_fails_alone_in_its_pack(tmp_path, ray_address):
    results = hpo.run(name="packfail", task={"dataset": "iris", "epochs": 2, "model": "tests.user_code:picky_model"},
                      space={"width": Grid([8, 13, 16, 32])}, metric="val_accuracy", mode="max", strategy="grid",
                      pack=4, max_concurrent=1, address=ray_address, storage_path=str(tmp_path / "runs"),
                      tracking={"enabled": False})
    by_width = {t.config["width"]: t for t in results.trials}
    assert by_width[13].status == "errored" and "ValueError: width 13 is unlucky" in by_width[13].error
    assert all(by_width[w].status == "completed" and by_width[w].steps == 2 for w in (8, 16, 32))


@pytest.mark.slow
def test_epoch_budget_counts_each_packed_trial(tmp_path, ray_address):
    results = hpo.run(name="packbudget", task={"dataset": "iris", "epochs": 3}, space={"lr": Float(0.01, 0.1)},
                      metric="val_accuracy", mode="max", strategy="random", num_samples=60, pack=4,
                      epoch_budget=30, max_concurrent=2, address=ray_address, storage_path=str(tmp_path / "runs"),
                      tracking={"enabled": False})
    seen = [(t.trial_id, t.status, t.steps) for t in results.trials]
    spent = sum(t.steps for t in results.trials)
    assert 30 <= spent <= 30 + 2 * 4 * 3, seen  # at most the two running packs' remainder
    assert len(results.trials) < 60, seen
    assert all(t.status == "cut" for t in results.trials if t.steps < 3), seen
    assert all(t.steps == 3 for t in results.trials if t.status == "completed"), seen


@pytest.mark.slow
def test_sync_mlflow_replays_each_packed_trial(tmp_path, ray_address):
    from hpo.sync import sync_mlflow

    results = hpo.run(name="packsync", task={"dataset": "iris", "epochs": 2},
                      space={"lr": Grid([0.01, 0.02, 0.05, 0.1, 0.2])}, metric="val_accuracy", mode="max",
                      strategy="grid", pack=3, max_concurrent=2, address=ray_address,
                      storage_path=str(tmp_path / "runs"), tracking={"enabled": False})
    db = tmp_path / "sync.db"
    synced = sync_mlflow(results.storage_path, tracking_uri=f"sqlite:///{db}")
    children = _children(db, synced.parent_run_id)
    assert set(children) == {t.trial_id for t in results.trials} and len(children) == 5
    assert all(r["steps"] == [1, 2] and r["tags"]["hpo.status"] == "completed" for r in children.values())
    lrs = sorted(float(r["params"]["lr"]) for r in children.values())
    assert lrs == [0.01, 0.02, 0.05, 0.1, 0.2]


@pytest.mark.slow
def test_killed_packed_search_resumes_without_losing_or_duplicating_trials(tmp_path, ray_address):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import _env, hpo_cli

    exp = tmp_path / "packs.yaml"
    exp.write_text(
        "name: packs\ntask: {dataset: digits, epochs: 3, batch_size: 2}\nspace:\n"
        "  lr: {type: grid, values: [0.01, 0.02, 0.03, 0.04]}\n  hidden: {type: grid, values: [16, 32]}\n"
        "metric: val_accuracy\nmode: max\nstrategy: grid\npack: 4\nmax_concurrent: 2\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "run", str(exp), "--address", ray_address],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    db_path, deadline = tmp_path / "mlflow.db", time.time() + 180
    while time.time() < deadline:  # kill once a packed trial is on record and others are in flight
        time.sleep(0.3)
        try:
            done = sqlite3.connect(db_path).execute(
                "SELECT count(*) FROM tags WHERE key='hpo.status' AND value='completed'").fetchone()[0]
        except sqlite3.Error:
            continue
        if done >= 1:
            break
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = hpo_cli("resume", "packs", "--json", "--address", ray_address, cwd=tmp_path)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 8 and summary["num_completed"] == 8, summary
    children = _children(db_path, summary["parent_run_id"])
    assert len(children) == 8
    rows = sqlite3.connect(db_path).execute(
        "SELECT t.value FROM tags t JOIN runs r ON r.run_uuid=t.run_uuid "
        "WHERE t.key='hpo.trial_id' AND r.lifecycle_stage='active'").fetchall()
    assert len(rows) == 8  # one run per trial: none created twice
    seen = {t: (r["status"], r["steps"]) for t, r in children.items()}
    # every step at most once and the last one there; steps the killed writer had not written
    # come back only as far as Ray kept them (the trial's last report)
    assert all(r["status"] == "FINISHED" and r["steps"][-1:] == [3] and r["steps"] == sorted(set(r["steps"]))
               for r in children.values()), seen


def test_auto_keeps_a_learning_searcher_fed_with_results():
    s = PackingSearcher(Recorder(), num_samples=64, adaptive=True)
    a, b = s.suggest("a"), s.suggest("b")
    _finish(s, "a", a, 0.05)
    _finish(s, "b", b, 0.05)
    assert s.pack_size() == 3  # 62 left // (8 rounds x 2 workers), not 8
    assert PackingSearcher(Recorder(), num_samples=64, adaptive=False).pack_size() == 1  # nothing seen yet


def test_packing_searcher_state_survives_save_and_restore(tmp_path):
    from hpo.space import SearchSpace
    from hpo.strategies._grid import GridSearcher

    space = SearchSpace.from_dict({"params": {"x": {"type": "grid", "values": list(range(10))}}})
    s = PackingSearcher(GridSearcher(space), num_samples=10, size=3)
    first = s.suggest("a")
    path = str(tmp_path / "searcher.pkl")
    s.save(path)  # Ray keeps this one file and nothing beside it
    assert [p.name for p in tmp_path.iterdir()] == ["searcher.pkl"]
    again = PackingSearcher(GridSearcher(space), num_samples=10, size=3)
    again.restore(path)
    nxt = again.suggest("b")
    assert [c["x"] for _, c in first[PACK_KEY]] == [0, 1, 2] and [c["x"] for _, c in nxt[PACK_KEY]] == [3, 4, 5]
    assert again.suggested == 6 and again.packs.keys() == {"a", "b"}
