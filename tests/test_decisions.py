"""ASHA and the median stopping rule asked from inside packed trials' workers (hpo/decisions.py).

Unit tests drive the decision table with the questions a worker asks (its scheduler's decision
steps and its last step only) and Ray's own ``AsyncHyperBandScheduler`` (or
``MedianStoppingRule``) the way Ray Tune's controller drives it for an unpacked trial that
reports every step: the decisions must be the same. The searches run on the real two-node Ray
cluster, with the table in a real Ray actor, and their decisions logs are replayed through Ray's
scheduler.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule, TrialScheduler

import hpo
from hpo import Float, Int
from hpo.decisions import DecisionTable
from hpo.lifecycle import Collector
from hpo.strategies import StrategySpec, TrialOutcomes, build_scheduler, capabilities
from hpo.wire import HISTORY_KEY, PRUNED_KEY, RUNG_KEY, STEP_KEY, SUB_KEY
from tests.conftest import _env


class _RayTrial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.status = "RUNNING"


def _rays_asha(options: dict[str, Any], max_t: int, metric: str, mode: str) -> AsyncHyperBandScheduler:
    ray = AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t, **options)
    ray.set_search_properties(metric, mode)
    return ray


def _trials(rng: random.Random, n: int, max_t: int) -> list[tuple[str, list[float]]]:
    """Learning curves: each trial's values per step, some cut short (diverged, patience)."""
    out = []
    for i in range(n):
        level, speed = rng.uniform(0.2, 0.9), rng.uniform(0.05, 0.5)
        length = max_t if rng.random() > 0.15 else rng.randint(1, max_t)
        out.append((f"t{i:03d}", [level + (1 - level) * (1 - (1 - speed) ** s) + rng.gauss(0, 0.02)
                                  for s in range(1, length + 1)]))
    return out


class _Controller:
    """What Ray's median rule reads of Ray Tune's controller: the live trials (the running ones;
    hpo's concurrency limit creates a trial only when a place is free, so none waits)."""

    def __init__(self) -> None:
        self.running: dict[str, Any] = {}

    def get_live_trials(self) -> list[Any]:
        return list(self.running.values())


def _run_both(trials: list[tuple[str, list[float]]], spec: StrategySpec, ray: Any, max_t: int, mode: str,
              seed: int, workers: int = 3
              ) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]], DecisionTable, Any]:
    """Run the trials on ``workers`` simulated workers in a random interleaving, both ways.

    Ray's way (``ray``: Ray's own scheduler, its metric and mode set): every step is a result
    (``on_trial_result``), ``on_trial_complete`` after a STOP or at the trial's last step, as Ray
    Tune's controller does. hpo's way: the worker asks the table (built from ``spec``) only at the
    scheduler's decision steps and its last step. Returns each way's (trial, step, decision) list.
    """
    rng = random.Random(seed)
    steps = capabilities(spec, max_t).decision_steps  # None: every step
    table = DecisionTable(build_scheduler(spec, None, max_t, TrialOutcomes()), "acc", mode)
    controller = _Controller()
    queue = list(trials)
    running: list[list[Any]] = []  # [trial id, values, next step index]
    ray_says: list[tuple[str, int, str]] = []
    table_says: list[tuple[str, int, str]] = []
    while queue or running:
        while queue and len(running) < workers:
            tid, values = queue.pop(0)
            controller.running[tid] = _RayTrial(tid)  # one object per trial, as Ray Tune's
            ray.on_trial_add(controller, controller.running[tid])
            running.append([tid, values, 0])
        w = running[rng.randrange(len(running))]
        tid, values, i = w
        step, value, last = i + 1, values[i], i + 1 == len(values)
        trial = controller.running[tid]
        decision = ray.on_trial_result(controller, trial, {"training_iteration": step, "acc": value})
        if decision == TrialScheduler.STOP or last:
            del controller.running[tid]
            ray.on_trial_complete(controller, trial, {"training_iteration": step, "acc": value})
        # at its last step a trial ends whatever the scheduler says (Ray's ASHA says STOP at max_t)
        ray_says.append((tid, step, "END" if last else str(decision)))
        decide = steps is None or step in steps
        if decide or last:
            answer = table.ask(tid, step, value, decide=decide, last=last)
            table_says.append((tid, step, "END" if last else "STOP" if answer["stop"] else "CONTINUE"))
        else:
            table_says.append((tid, step, "CONTINUE"))  # not asked: the trial goes on
        if decision == TrialScheduler.STOP or last:
            running.remove(w)
        else:
            w[2] += 1
    return ray_says, table_says, table, ray


@pytest.mark.parametrize("options, max_t", [
    ({"grace_period": 1, "reduction_factor": 3}, 9),
    ({"grace_period": 2, "reduction_factor": 3}, 20),  # the quickstart's rungs 2, 6, 18 (20 epochs)
    ({"grace_period": 1, "reduction_factor": 2}, 10),
    ({"grace_period": 1, "reduction_factor": 2.5}, 20),  # fractional rungs, decided at the next whole step
    ({"grace_period": 1, "reduction_factor": 4}, 16),
])
@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_table_decides_exactly_as_rays_asha_driven_by_ray_tune(options: dict[str, Any], max_t: int,
                                                                    mode: str, seed: int) -> None:
    trials = _trials(random.Random(seed), 60, max_t)
    spec = StrategySpec("random", "asha", scheduler_options=options)
    ray_says, table_says, table, ray = _run_both(trials, spec, _rays_asha(options, max_t, "acc", mode), max_t,
                                                 mode, seed)
    assert table_says == ray_says
    stops = [(t, s) for t, s, d in ray_says if d == "STOP"]
    assert len(stops) >= 10  # the sequence really prunes
    assert [[dict(r) for _, r in b._rungs] for b in ray._brackets] == \
        [[dict(r) for _, r in b._rungs] for b in table.scheduler.inner._brackets]  # the same rung tables
    outcomes = table.scheduler.outcomes
    # pruned: exactly Ray's early stops (and a trial ending early at a rung where Ray says STOP)
    assert set(stops) <= set(outcomes.as_dict().items())
    assert all(s < max_t for s in outcomes.as_dict().values())


def _rays_median(options: dict[str, Any], mode: str) -> MedianStoppingRule:
    ray = MedianStoppingRule(time_attr="training_iteration", **options)
    ray.set_search_properties("acc", mode)
    return ray


@pytest.mark.parametrize("options", [
    {"grace_period": 1, "min_samples_required": 3},  # hpo's defaults
    {"grace_period": 3, "min_samples_required": 2},
    {"grace_period": 0, "min_samples_required": 5},
])
@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_table_decides_exactly_as_rays_median_rule_driven_by_ray_tune(options: dict[str, Any], mode: str,
                                                                          seed: int) -> None:
    max_t = 9
    trials = _trials(random.Random(seed), 60, max_t)
    spec = StrategySpec("random", "median", scheduler_options=options)
    assert capabilities(spec, max_t).decision_steps is None  # asked at every step
    ray_says, table_says, table, _ = _run_both(trials, spec, _rays_median(options, mode), max_t, mode, seed)
    assert table_says == ray_says
    stops = [(t, s) for t, s, d in ray_says if d == "STOP"]
    assert len(stops) >= 5  # the sequence really prunes
    assert {(t, s) for t, s, d in ray_says if d == "STOP" and s < max_t} <= set(
        table.scheduler.outcomes.as_dict().items())
    assert all(s < max_t for s in table.scheduler.outcomes.as_dict().values())


def test_the_median_rule_never_pauses_a_trial_even_with_trials_waiting() -> None:
    """Too few samples with a trial waiting: Ray's rule yields the place (PAUSE), and a median
    trial keeps no checkpoint, so it would start again from its first step. hpo's goes on, driven
    by Ray Tune or asked in the table."""
    controller = _Controller()
    waiting = _RayTrial("w")
    waiting.status = "PENDING"
    controller.running = {"a": _RayTrial("a"), "w": waiting}
    rays, hpos = _rays_median({"grace_period": 1, "min_samples_required": 3}, "max"), \
        build_scheduler(StrategySpec("random", "median"), None, 9, TrialOutcomes())
    hpos.set_search_properties("acc", "max")
    for scheduler, expected in ((rays, TrialScheduler.PAUSE), (hpos, TrialScheduler.CONTINUE)):
        scheduler.on_trial_add(controller, controller.running["a"])
        assert scheduler.on_trial_result(controller, controller.running["a"],
                                         {"training_iteration": 1, "acc": 0.5}) == expected
    table = DecisionTable(build_scheduler(StrategySpec("random", "median"), None, 9, TrialOutcomes()), "acc", "max")
    assert table.ask("a", 1, 0.5, decide=True, last=False)["stop"] is False


@pytest.mark.slow
def test_an_unpacked_median_search_with_trials_waiting_runs_each_step_of_each_trial_once(tmp_path: Path,
                                                                                         ray_address: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    results = hpo.run(name="medianwait", trainable="tests.trainables:quadratic", metric="loss", mode="min",
                      space={"x": Float(0, 1), "steps": 6, "sleep": 0.1, "mark_dir": str(marks)},
                      strategy={"searcher": "random", "seed": 1, "scheduler": {
                          "name": "median", "grace_period": 1, "min_samples_required": 3}},
                      num_samples=10, address=ray_address, storage_path=str(tmp_path / "runs"),
                      tracking={"enabled": False})  # no max_concurrent: Ray Tune holds trials waiting
    assert len(results.trials) == 10 and results.count("pruned") >= 1, [(t.status, t.steps) for t in results.trials]
    runs = {p.name: p.read_text().count("reported") for p in marks.iterdir()}
    assert runs and set(runs.values()) == {1}, runs  # no step run twice: no trial paused and started over
    # every step reported is marked, but a pruned trial's last (it is stopped in that report)
    assert sum(t.steps for t in results.trials) - results.count("pruned") <= len(runs) <= sum(
        t.steps for t in results.trials)


def test_a_table_started_from_its_log_goes_on_exactly_where_the_last_one_stopped(tmp_path: Path) -> None:
    spec = StrategySpec("random", "asha", scheduler_options={"grace_period": 1, "reduction_factor": 3})
    log = tmp_path / "decisions.jsonl"
    rng = random.Random(5)
    per_trial = [[(tid, step, value, step in (1, 3, 9), step == len(values))
                  for step, value in enumerate(values, 1) if step in (1, 3, 9) or step == len(values)]
                 for tid, values in _trials(rng, 40, 9)]
    questions = []
    while any(per_trial):  # the trials' questions interleaved at random, each trial's in order
        q = rng.choice([q for q in per_trial if q])
        questions.append(q.pop(0))

    def table(path: Path | None) -> DecisionTable:
        return DecisionTable(build_scheduler(spec, None, 9, TrialOutcomes()), "acc", "max",
                             None if path is None else str(path))

    whole = table(None)
    expected = [whole.ask(t, s, v, decide=d, last=last) for t, s, v, d, last in questions]
    first = table(log)
    half = len(questions) // 2
    answers = [first.ask(t, s, v, decide=d, last=last) for t, s, v, d, last in questions[:half]]
    first.close()
    with open(log, "a") as f:
        f.write('{"trial": "t0')  # a line cut short by a kill: skipped
    second = table(log)  # a resumed search's table (or a restarted actor)
    answers += [second.ask(t, s, v, decide=d, last=last) for t, s, v, d, last in questions[half:]]
    assert answers == expected
    assert any(a["stop"] for a in answers[half:]) and any(a["pruned"] for a in answers[half:])
    lines = log.read_text().splitlines()
    assert sum(1 for line in lines if line.startswith("{") and line.endswith("}")) == len(questions)


def test_a_configuration_run_again_after_its_stop_is_stopped_again_and_the_table_unchanged() -> None:
    spec = StrategySpec("random", "asha", scheduler_options={"grace_period": 1, "reduction_factor": 3})
    table = DecisionTable(build_scheduler(spec, None, 9, TrialOutcomes()), "acc", "max")
    table.ask("a", 1, 0.9, decide=True, last=False)
    assert table.ask("b", 1, 0.1, decide=True, last=False)["stop"]
    rungs = [dict(r) for _, r in table.scheduler.inner._brackets[0]._rungs]
    # b's pack failed before the driver heard of its stop: the retry runs b again from its start
    again = table.ask("b", 1, 0.95, decide=True, last=False)
    assert again == {"stop": True, "pruned": 1, "rung": [0, 1]}
    assert [dict(r) for _, r in table.scheduler.inner._brackets[0]._rungs] == rungs


def test_the_collector_records_a_stop_told_in_the_worker_before_anything_sees_the_result() -> None:
    outcomes = TrialOutcomes()
    collector = Collector(["acc"], None, outcomes)
    packed = {SUB_KEY: "r.01", STEP_KEY: 1, "acc": 0.4, PRUNED_KEY: 1, RUNG_KEY: [0, 1],
              HISTORY_KEY: [{SUB_KEY: "r.00", STEP_KEY: 3, "acc": 0.9, RUNG_KEY: [1, 3]}]}
    assert collector("r", packed) is False
    assert outcomes.pruned_at("r.01") == 1 and outcomes.rung_of("r.01") == (0, 1)
    assert outcomes.pruned_at("r.00") is None and outcomes.rung_of("r.00") == (1, 3)
    collector("u", {STEP_KEY: 2, "acc": 0.1, PRUNED_KEY: 2})  # an unpacked trial: its own id
    assert outcomes.pruned_at("u") == 2


def _replay_through_ray(lines: list[dict[str, Any]], ray: Any) -> list[bool]:
    """Ray's scheduler driven by the logged questions as Ray Tune drives it: its STOP decisions."""
    controller = _Controller()
    stops = []
    for q in lines:
        if q["trial"] not in controller.running:
            controller.running[q["trial"]] = _RayTrial(q["trial"])
            ray.on_trial_add(controller, controller.running[q["trial"]])
        trial = controller.running[q["trial"]]
        result = {"training_iteration": q["step"], "val_accuracy": q["value"]}
        stop = q["decide"] and ray.on_trial_result(controller, trial, result) == TrialScheduler.STOP
        if stop or q["last"]:
            ray.on_trial_complete(controller, trial, result)
            trial.status = "TERMINATED"
        stops.append(stop)
    return stops


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["asha", "median"])
def test_a_packed_search_prunes_each_configuration_as_rays_scheduler_would(in_tmp: Path, ray_address: str,
                                                                           scheduler: str) -> None:
    options = {"grace_period": 1, "reduction_factor": 3} if scheduler == "asha" else \
        {"grace_period": 1, "min_samples_required": 3}
    results = hpo.run(name=f"packed{scheduler}", task={"dataset": "iris", "epochs": 9},
                      space={"lr": Float(1e-3, 0.3, log=True), "hidden": Int(4, 64)}, metric="val_accuracy",
                      mode="max", strategy={"searcher": "random", "seed": 3, "scheduler": {
                          "name": scheduler, **options}},
                      num_samples=24, pack=4, max_concurrent=2, address=ray_address)
    ids = [t.trial_id for t in results.trials]
    assert len(ids) == 24 and all("." in i for i in ids)  # packs of 4, each configuration its own trial
    code = (f"import ray; ray.init(address={ray_address!r}, logging_level='ERROR'); "
            "print([a['name'] for a in ray.util.list_named_actors(all_namespaces=True)])")
    named = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                           env=_env())
    assert "hpo-decisions-" not in named.stdout, named.stdout  # the table's actor ended with its search
    lines = [json.loads(line) for line in (Path(results.storage_path) / "decisions.jsonl").read_text().splitlines()]
    ray = _rays_asha(options, 9, "val_accuracy", "max") if scheduler == "asha" else \
        MedianStoppingRule(time_attr="training_iteration", metric="val_accuracy", mode="max", **options)
    assert _replay_through_ray(lines, ray) == [q["stop"] for q in lines]  # the same sequence, the same decisions
    if scheduler == "median":  # asked at every epoch a configuration ran
        assert all(sorted(q["step"] for q in lines if q["trial"] == tid) == list(range(1, 1 + max(
            q["step"] for q in lines if q["trial"] == tid))) for tid in {q["trial"] for q in lines})
    pruned = {q["trial"]: q["step"] for q in lines if q["stop"] and q["step"] < 9}
    assert len(pruned) >= 4, lines
    by_id = {t.trial_id: t for t in results.trials}
    for tid, trial in by_id.items():
        if tid in pruned:
            assert trial.status == "pruned" and trial.pruned_at == pruned[tid] and trial.steps == pruned[tid]
        else:
            assert trial.status == "completed" and trial.steps == 9, (tid, trial)
    # Optuna holds each pruned configuration as PRUNED, with its value at every step it reached
    study = {t.user_attrs.get("ray_trial_id", t.number): t for t in results.study.trials}
    states = sorted(str(t.state).split(".")[-1] for t in study.values())
    assert states.count("PRUNED") == len(pruned) and states.count("COMPLETE") == 24 - len(pruned), states
    for t in results.study.trials:
        if str(t.state).endswith("PRUNED"):
            assert max(t.intermediate_values) in pruned.values() and 1 in t.intermediate_values
    db = sqlite3.connect(in_tmp / "mlflow.db")
    rows = db.execute("SELECT t.value, s.value FROM tags t JOIN tags s ON s.run_uuid=t.run_uuid "
                      "WHERE t.key='hpo.trial_id' AND s.key='hpo.status'").fetchall()
    assert sorted((tid, status.split(" ")[0]) for tid, status in rows) == sorted(
        (tid, t.status) for tid, t in by_id.items())  # one MLflow run each, the same status ("pruned at epoch N")
    for tid, step in pruned.items():
        (run_id,) = db.execute("SELECT run_uuid FROM tags WHERE key='hpo.trial_id' AND value=?", (tid,)).fetchone()
        steps = sorted(s for (s,) in db.execute(
            "SELECT step FROM metrics WHERE run_uuid=? AND key='val_accuracy'", (run_id,)))
        assert steps == list(range(1, step + 1))  # every epoch it ran, none after its stop


def test_a_scheduler_that_pauses_inside_a_packed_trial_is_refused_by_name() -> None:
    from ray.tune.schedulers import FIFOScheduler

    class Pausing(FIFOScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            return TrialScheduler.PAUSE

    from hpo.strategies import wrap_scheduler

    table = DecisionTable(wrap_scheduler(Pausing(), TrialOutcomes(), 9), "acc", "max")
    with pytest.raises(RuntimeError, match="Pausing declares decides_in_worker but decided 'PAUSE'"):
        table.ask("a", 1, 0.5, decide=True, last=False)


@pytest.mark.slow
def test_an_epoch_budget_cuts_a_packed_asha_search_and_every_record_says_how_each_ended(tmp_path: Path,
                                                                                        ray_address: str) -> None:
    results = hpo.run(name="packedbudget", task={"dataset": "iris", "epochs": 9},
                      space={"lr": Float(1e-3, 0.3, log=True), "hidden": Int(4, 64)}, metric="val_accuracy",
                      mode="max", strategy={"searcher": "random", "seed": 4, "scheduler": {
                          "name": "asha", "grace_period": 1, "reduction_factor": 3}},
                      num_samples=200, pack=4, epoch_budget=60, max_concurrent=2, address=ray_address,
                      storage_path=str(tmp_path / "runs"), tracking={"enabled": False})
    seen = [(t.trial_id, t.status, t.steps) for t in results.trials]
    spent = sum(t.steps for t in results.trials)
    assert 60 <= spent <= 60 + 2 * 4 * 9, seen  # at most the two running packs' remainder
    assert len(results.trials) < 200 and results.stop_reason == "epoch budget", seen
    lines = [json.loads(line) for line in (Path(results.storage_path) / "decisions.jsonl").read_text().splitlines()]
    asha = _rays_asha({"grace_period": 1, "reduction_factor": 3}, 9, "val_accuracy", "max")
    assert _replay_through_ray(lines, asha) == [q["stop"] for q in lines]
    pruned = {q["trial"]: q["step"] for q in lines if q["stop"] and q["step"] < 9}
    for t in results.trials:
        if t.status == "pruned":
            assert pruned[t.trial_id] == t.pruned_at == t.steps, (t, seen)
        elif t.status == "completed":
            assert t.steps == 9, (t, seen)
        else:  # the budget cut it before its budget (a stop answered as the budget cut its pack never
            # reached the driver: that one is cut too)
            assert t.status == "cut" and t.steps < 9 and pruned.get(t.trial_id, t.steps) >= t.steps, (t, seen)
    assert {t.status for t in results.trials} >= {"pruned", "completed", "cut"}, seen
