"""How trials and searches end, driver side, with fake trials (fast): the collector's budgets,
interrupts and cuts, the one terminal-state decision, what survives a resume, the Optuna and
MLflow records of cut trials, run-directory lookups and ``sync-mlflow``'s saved statuses."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray.cloudpickle as cloudpickle
from optuna.trial import TrialState

from hpo.errors import HpoConfigError, MetricNotReportedError
from hpo.lifecycle import Collector
from hpo.packing import PackingSearcher, Unpacker
from hpo.rundir import OUTCOMES_FILE, STATE_FILE, find_run_dir, new_run_dir, write_json
from hpo.space import SearchSpace
from hpo.strategies import TrialOutcomes
from hpo.strategies._optuna import OptunaSearcher
from hpo.wire import DONE_KEY, END_KEY, PACK_KEY, STEP_KEY, SUB_KEY


class FakeTrial:
    """The attributes of Ray's ``Trial`` hpo reads."""

    def __init__(self, trial_id: str, status: str = "RUNNING", config: dict | None = None,
                 last_result: dict | None = None) -> None:
        self.trial_id, self.status = trial_id, status
        self.config = config if config is not None else {"x": 0.5}
        self.last_result = last_result or {}
        self.error_file = None
        self.json_invalidated = 0

    def invalidate_json_state(self) -> None:
        self.json_invalidated += 1


class Told:
    """A searcher or callback that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_trial_complete(self, *args: Any, **kwargs: Any) -> None:
        trial = args[2] if len(args) > 2 else None
        self.events.append(("complete", trial.trial_id if trial is not None else kwargs.get("trial_id", args[0])))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.append(("start", trial.trial_id))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.events.append(("result", trial.trial_id))


def _collector(**kw: Any) -> tuple[Collector, TrialOutcomes, Told, Told]:
    outcomes, searcher, callback = TrialOutcomes(), Told(), Told()
    c = Collector(["loss"], searcher, outcomes, downstream=[callback], **kw)
    return c, outcomes, searcher, callback


def _report(c: Collector, tid: str, *steps: int) -> None:
    for s in steps:
        c(tid, {"loss": 1.0 / s, STEP_KEY: s})


# -- the collector ---------------------------------------------------------------------------------


def test_a_resumed_concurrency_limit_forgets_trials_ray_does_not_run_and_suggests_again() -> None:
    """A kill -9 between Ray's save of the searcher's state and of its trial list: the restored
    ConcurrencyLimiter counted trials Ray never restored (or restored as ended), which never
    complete, and suggested nothing any more (a resume hung with no trial running)."""
    from ray.tune.search import ConcurrencyLimiter, Searcher

    class Suggests(Searcher):
        def suggest(self, trial_id: str) -> dict:
            return {"x": 0.5}

    limiter = ConcurrencyLimiter(Suggests(), max_concurrent=2)
    limiter.set_state({**limiter.get_state(), "live_trials": {"gone", "ended", "pending"},
                       "num_unfinished_live_trials": 3})  # as restore_from_dir sets it
    assert limiter.suggest("new") is None  # the search would wait for ever
    c, *_ = _collector()
    c.search_alg = limiter
    trials = [FakeTrial("ended", "TERMINATED"), FakeTrial("pending", "PENDING")]
    c.on_step_begin(0, trials)
    assert limiter.live_trials == {"pending"} and limiter.num_unfinished_live_trials == 1
    assert limiter.suggest("new") == {"x": 0.5}
    c.on_step_begin(1, trials)  # checked once, at the search's first step
    assert limiter.live_trials == {"pending", "new"}


def test_epoch_budget_cuts_running_and_pending_trials_and_leaves_finished_ones_alone() -> None:
    c, outcomes, searcher, callback = _collector(epoch_budget=10, trial_budget=4)
    done = FakeTrial("done", "TERMINATED", last_result={"loss": 0.1, STEP_KEY: 2})  # stopped on its own at 2
    running, pending = FakeTrial("run"), FakeTrial("wait", "PENDING")
    trials = [done, running]
    c.on_step_begin(1, trials)
    trials.append(pending)  # Ray adds trials to the same list later in the step
    _report(c, "done", 1, 2)
    _report(c, "run", 1, 2, 3)
    assert not c.stop_all()  # 5 of 10 epochs
    _report(c, "x", 1, 2, 3, 4, 5)
    assert c.stop_all() and c.stop_reason == "epoch budget"
    assert outcomes.cut_of("run") == (3, "epoch budget") and outcomes.cut_of("wait") == (0, "epoch budget")
    assert outcomes.cut_of("done") is None and not outcomes.is_pruned("done")  # short, but ended on its own
    assert outcomes.status_of("done", errored=False, last=done.last_result, metrics=["loss"]) == "completed"
    assert [e for e in searcher.events] == [("complete", "run"), ("complete", "wait")]
    # every callback hears each cut trial end like a finished one; a never-started one starts first
    assert callback.events == [("complete", "run"), ("start", "wait"), ("complete", "wait")]
    assert c.stop_all() and len(searcher.events) == 2  # cut once


def test_a_trial_at_its_full_budget_when_the_search_stops_completed() -> None:
    c, outcomes, _, _ = _collector(epoch_budget=4, trial_budget=4)
    c.on_step_begin(1, [FakeTrial("a")])
    _report(c, "a", 1, 2, 3, 4)
    assert c.stop_all()
    assert outcomes.cut_of("a") is None


def test_time_budget_and_interrupts_stop_the_search_with_their_reason() -> None:
    c, outcomes, _, _ = _collector(time_budget_s=3600)
    c.on_step_begin(1, [FakeTrial("a")])
    assert not c.stop_all()
    c.interrupt("SIGTERM")
    assert c.stop_all() and c.stop_reason == "SIGTERM" and outcomes.cut_of("a") == (0, "SIGTERM")
    c2, _, _, _ = _collector(time_budget_s=10)
    c2.set_state({"elapsed_s": 10.5})  # an earlier run of the search used it up
    assert c2.stop_all() and c2.stop_reason == "time budget"


def test_a_missing_metric_stops_the_search_and_names_what_was_reported() -> None:
    c, outcomes, _, _ = _collector()
    c.on_step_begin(1, [FakeTrial("a")])
    c.on_trial_result(1, [], FakeTrial("a"), {"accuracy": 0.5, "pid": 1})
    assert isinstance(c.error, MetricNotReportedError) and c.error.reported == ["accuracy"]
    assert c.stop_all() and c.stop_reason == "metric check" and outcomes.cut_of("a") is not None


def test_budgets_and_outcomes_survive_ray_state_saves_and_a_resume(tmp_path: Path) -> None:
    c, outcomes, _, _ = _collector(epoch_budget=100, run_dir=str(tmp_path))
    ended = FakeTrial("b", "TERMINATED", last_result={"loss": 0.2, STEP_KEY: 2})
    c.on_step_begin(1, [ended, FakeTrial("a")])
    _report(c, "a", 1, 2)
    _report(c, "b", 1, 2)
    outcomes.record_pruned("b", 2)
    outcomes.record_rung("b", 0, 1)
    state = pickle.loads(pickle.dumps(c.get_state()))  # what Ray saves with its experiment state
    saved = json.loads((tmp_path / OUTCOMES_FILE).read_text())
    assert saved["ended"] == {"b": "pruned"} and saved["epochs"] == {"a": 2, "b": 2}
    again, restored, _, _ = _collector(epoch_budget=100)
    again.set_state(state)
    assert again.epochs == {"a": 2, "b": 2} and restored.pruned_at("b") == 2 and restored.rung_of("b") == (0, 1)
    assert again.elapsed_s >= 0 and again.search_time() >= state["elapsed_s"]


def test_the_collector_pickles_by_reference_so_a_resume_runs_the_installed_code() -> None:
    c, _, _, _ = _collector(epoch_budget=5)
    c.epochs = {"a": 3}
    back = cloudpickle.loads(cloudpickle.dumps(c))
    assert type(back) is Collector  # a class pickled by value would be a copy of the old code
    assert back.epochs == {"a": 3} and back.stop_reason is None


def test_a_cut_pack_ends_its_unfinished_trials_and_keeps_its_record_current() -> None:
    outcomes, callback = TrialOutcomes(), Told()
    unpacker = Unpacker([callback])
    config = {PACK_KEY: [["p.00", {"x": 1}], ["p.01", {"x": 2}], ["p.02", {"x": 3}]], DONE_KEY: {}}
    pack = FakeTrial("p", config=config)
    first = {"loss": 0.5, SUB_KEY: "p.00", STEP_KEY: 2, END_KEY: True}
    second = {"loss": 0.7, SUB_KEY: "p.01", STEP_KEY: 1}
    unpacker.on_trial_result(1, [pack], pack, {**second, "hpo_history": [first]})
    assert pack.json_invalidated == 1 and set(pack.config[DONE_KEY]) == {"p.00"}  # Ray re-saves the config
    searcher = PackingSearcher(Told(), num_samples=3, size=3)
    searcher.packs["p"] = ["p.00", "p.01", "p.02"]
    searcher.ended.add("p.00")
    c = Collector(["loss"], searcher, outcomes, downstream=[unpacker], unpacker=unpacker, time_budget_s=0)
    c.on_step_begin(2, [pack])
    pack.last_result = {**second, "hpo_history": [first]}
    assert c.stop_all()
    assert outcomes.cut_of("p.01") == (1, "time budget") and outcomes.cut_of("p.02") == (0, "time budget")
    assert outcomes.cut_of("p.00") is None
    assert [e for e in searcher.inner.events] == [("complete", "p.01"), ("complete", "p.02")]
    assert callback.events[-3:] == [("complete", "p.01"), ("start", "p.02"), ("complete", "p.02")]
    assert set(pack.config[DONE_KEY]) == {"p.00", "p.01", "p.02"}


# -- one terminal state ----------------------------------------------------------------------------


@pytest.mark.parametrize(("setup", "errored", "last", "expected"), [
    (None, False, {"loss": 0.1}, "completed"),
    ("pruned", False, {"loss": 0.1}, "pruned"),
    ("cut", False, {"loss": 0.1}, "cut"),
    ("cut", True, {"loss": 0.1}, "errored"),
    (None, False, {"loss": float("nan")}, "diverged"),
    ("pruned", False, {"loss": float("inf")}, "diverged"),
])
def test_one_place_decides_a_trials_terminal_state(setup: str | None, errored: bool, last: dict,
                                                   expected: str) -> None:
    outcomes = TrialOutcomes()
    if setup == "pruned":
        outcomes.record_pruned("t", 2)
    elif setup == "cut":
        outcomes.record_cut("t", 2, "SIGINT")
    assert outcomes.status_of("t", errored=errored, last=last, metrics=["loss"]) == expected


def test_a_cut_trial_stays_cut_when_a_scheduler_removes_it_later() -> None:
    outcomes = TrialOutcomes()
    outcomes.record_cut("t", 3, "time budget")
    outcomes.record_pruned("t", 3)  # HyperBand removing the paused trial at the end
    assert outcomes.status_of("t", errored=False, last={}, metrics=["loss"]) == "cut"
    assert pickle.loads(pickle.dumps(outcomes)).cut_of("t") == (3, "time budget")


# -- Optuna ----------------------------------------------------------------------------------------


def _optuna(metrics: list[str], modes: list[str]) -> tuple[OptunaSearcher, TrialOutcomes]:
    outcomes = TrialOutcomes()
    space = SearchSpace.from_dict({"params": {"x": {"type": "float", "low": 0, "high": 1}}})
    return OptunaSearcher(space, optuna.samplers.RandomSampler(seed=0), metrics, modes, outcomes), outcomes


def test_a_cut_trial_is_pruned_in_optuna_with_its_intermediate_values() -> None:
    s, outcomes = _optuna(["loss"], ["min"])
    s.suggest("a")
    s.suggest("b")
    s.on_trial_result("a", {"loss": 0.5, STEP_KEY: 1})
    s.on_trial_result("a", {"loss": 0.4, STEP_KEY: 2})
    outcomes.record_cut("a", 2, "SIGINT")
    outcomes.record_cut("b", 0, "SIGINT")  # never started
    s.on_trial_complete("a")
    s.on_trial_complete("b")
    a, b = s.study.trials
    assert a.state == TrialState.PRUNED and a.intermediate_values == {1: 0.5, 2: 0.4}
    assert b.state == TrialState.PRUNED


def test_multi_objective_pruned_and_cut_trials_are_pruned_not_complete() -> None:
    s, outcomes = _optuna(["loss", "score"], ["min", "max"])
    for tid in ("p", "c", "ok"):
        s.suggest(tid)
        s.on_trial_result(tid, {"loss": 0.5, "score": 0.1, STEP_KEY: 1})
    outcomes.record_pruned("p", 1)
    outcomes.record_cut("c", 1, "epoch budget")
    for tid in ("p", "c", "ok"):
        s.on_trial_complete(tid, {"loss": 0.5, "score": 0.1, STEP_KEY: 1})
    assert [t.state for t in s.study.trials] == [TrialState.PRUNED, TrialState.PRUNED, TrialState.COMPLETE]


# -- run directories -------------------------------------------------------------------------------


def _run_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    write_json(d / STATE_FILE, {"experiment": {}})
    return d


def test_a_search_name_finds_its_own_runs_only(tmp_path: Path) -> None:
    _run_dir(tmp_path, "mlp-20261129-101500")
    newest = _run_dir(tmp_path, "mlp-20261129-101500.1")
    _run_dir(tmp_path, "mlp-small-20261129-111500")  # newer, but another search
    assert find_run_dir("mlp", str(tmp_path)) == newest.resolve()
    assert find_run_dir("mlp-small", str(tmp_path)).name == "mlp-small-20261129-111500"
    with pytest.raises(HpoConfigError, match="name_or_path"):
        find_run_dir("ml", str(tmp_path))


def test_a_name_with_dots_keeps_its_name_when_two_runs_start_in_one_second(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, "v1.2")
    first.mkdir()
    second = new_run_dir(tmp_path, "v1.2")
    second.mkdir()
    third = new_run_dir(tmp_path, "v1.2")
    if second.name.startswith(first.name):  # the same second
        assert second.name == first.name + ".1" and third.name == first.name + ".2"
    assert all(d.name.startswith("v1.2-") for d in (first, second, third))


def test_state_files_are_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object.__new__(type("Bad", (), {"__str__": None}))})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["s.json"]


# -- sync-mlflow's statuses ------------------------------------------------------------------------


def test_sync_takes_statuses_from_what_a_killed_search_saved(tmp_path: Path) -> None:
    from hpo.sync import _saved_ends

    outcomes = TrialOutcomes()
    outcomes.record_pruned("p", 1)
    write_json(tmp_path / OUTCOMES_FILE, {"outcomes": outcomes.state(), "ended": {"p": "pruned", "e": "errored",
                                                                                 "c": "completed"}})
    restored, ends = _saved_ends(tmp_path, {})  # no trials.json: the search was killed
    assert ends == {"p": ("pruned", None), "e": ("errored", None), "c": ("completed", None)}
    assert restored.pruned_at("p") == 1 and "running" not in ends



def test_the_stopper_ray_restores_from_its_own_state_drives_the_live_collector() -> None:
    c, outcomes, _, _ = _collector(epoch_budget=4)
    c.on_step_begin(1, [FakeTrial("a")])
    copy = cloudpickle.loads(cloudpickle.dumps(c.stopper()))  # what Ray's experiment state gives back
    copy("a", {"loss": 0.5, STEP_KEY: 2})
    assert c.epochs == {"a": 2} and not copy.stop_all()
    copy("a", {"loss": 0.4, STEP_KEY: 3})
    c.epochs["b"] = 1
    assert copy.stop_all() and c.stop_reason == "epoch budget" and outcomes.cut_of("a") == (3, "epoch budget")
    assert len(cloudpickle.dumps(c.stopper())) < 300  # the key only: no searcher, no callbacks


def test_a_start_killed_before_rays_first_state_save_starts_over_with_hpos_state_kept(tmp_path: Path) -> None:
    from hpo.rundir import has_ray_state, read_state, set_aside_ray_files, update_state

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / STATE_FILE, {"experiment": {}, "parent_run_id": "p1"})
    (run_dir / "tuner.pkl").write_bytes(b"x")
    (run_dir / "train_a" / "result.json").parent.mkdir()
    (run_dir / "train_a" / "result.json").write_text('{"trial_id": "a"}\n')
    assert not has_ray_state(run_dir)  # tuner.pkl alone: Tuner.restore would start a broken run
    moved = set_aside_ray_files(run_dir)
    assert moved is not None and sorted(p.name for p in moved.iterdir()) == ["train_a", "tuner.pkl"]
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [STATE_FILE]
    update_state(run_dir, experiment={"name": "x"})
    assert read_state(run_dir)["parent_run_id"] == "p1"  # the MLflow parent stays this search's
    (run_dir / "tuner.pkl").write_bytes(b"x")
    (run_dir / "experiment_state-2026.json").write_text("{}")
    assert has_ray_state(run_dir)
