"""The conformance suite every strategy passes; third-party strategies subclass it too.

Subclass :class:`SearcherConformance` (set ``searcher``) or :class:`SchedulerConformance`
(set ``scheduler``) in a pytest module. Searcher checks drive the searcher directly, scheduler
checks drive the scheduler through :func:`simulate` (fake trials on a fake controller): both
fast, no Ray cluster, nothing to set up. Only the checks marked ``slow`` need a ``ray_address``
fixture and run a real search.

Example::

    class TestMySearcher(SearcherConformance):
        searcher = "my-searcher"

    class TestMyScheduler(SchedulerConformance):
        scheduler = "my-scheduler"
"""

from __future__ import annotations

import math
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from hpo.space import Categorical, Float, Grid, Int, SearchSpace
from hpo.strategies import StrategySpec, TrialOutcomes, build_strategy, get_strategy

DECISIONS = ("CONTINUE", "PAUSE", "STOP", "NOOP")  # ray.tune.schedulers.TrialScheduler's

MIXED_SPACE = SearchSpace({
    "optimizer": Categorical(["sgd", "adam"]),
    "lr": Float(1e-4, 1e-1, log=True),
    "layers": Int(1, 4),
    "width": Int(8, 64, step=8),
    "dropout": Float(0.0, 0.5),
    "momentum": Float(0.5, 0.99, when={"optimizer": "sgd"}),
})
GRID_SPACE = SearchSpace({
    "optimizer": Categorical(["sgd", "adam"]),
    "lr": Grid([1e-3, 1e-2, 1e-1]),
    "momentum": Grid([0.5, 0.9], when={"optimizer": "sgd"}),
})


def objective(config: dict[str, Any]) -> float:
    """A deterministic toy loss over the conformance spaces."""
    lr = config.get("lr", 0.01)
    return (math.log10(lr) + 2) ** 2 + 0.1 * config.get("layers", 2) + config.get("dropout", 0.0)


def conformance_trainable(config: dict[str, Any]) -> None:
    """Three reports of :func:`objective`; the first trial to run fails (marker file), once."""
    from hpo.session import report

    marker = config.get("fail_marker")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            raise RuntimeError("conformance: deliberate failure of one trial")
        except FileExistsError:
            pass
    start = time.time()
    loss = objective(config)
    for step in range(1, 4):
        time.sleep(0.05)
        report({"loss": loss * (1 + 1 / step), "start": start, "end": time.time()})


class _Base:
    searcher: str = "random"
    scheduler: str = "fifo"
    space: SearchSpace = MIXED_SPACE

    def _space(self) -> SearchSpace:
        return GRID_SPACE if self.searcher == "grid" else self.space

    def make(self, seed: int = 0) -> Any:
        spec = StrategySpec(self.searcher, self.scheduler, seed=seed)
        searcher, _ = build_strategy(spec, self._space(), ["loss"], ["min"], 3, TrialOutcomes())
        return searcher

    def run_search(self, tmp_path: Path, ray_address: str, num_samples: int = 6, max_concurrent: int = 1) -> Any:
        from hpo.runner import run

        fixed = {"fail_marker": str(tmp_path / "fail-once")}
        space = self._space().merge(SearchSpace(fixed))
        return run(
            name=f"conformance-{self.searcher}-{self.scheduler}", trainable=conformance_trainable, space=space,
            metric="loss", mode="min", strategy={"searcher": self.searcher, "scheduler": self.scheduler, "max_t": 3},
            num_samples=num_samples, max_concurrent=max_concurrent, storage_path=str(tmp_path / "runs"),
            tracking={"enabled": False}, address=ray_address,
        )


def _drive(searcher: Any, n: int, fail_every: int = 0) -> list[dict[str, Any]]:
    configs = []
    for i in range(n):
        cfg = searcher.suggest(f"t{i}")
        if cfg is None or cfg == "FINISHED":
            break
        configs.append(cfg)
        failed = bool(fail_every) and i % fail_every == fail_every - 1
        result = None if failed else {"loss": objective(cfg), "training_iteration": 3}
        searcher.on_trial_complete(f"t{i}", result=result, error=failed)
    return configs


class SearcherConformance(_Base):
    """Checks on a searcher: bounds, seeding, failures, sample counts and concurrency."""

    def test_configs_stay_within_bounds_and_conditions(self) -> None:
        space = self._space()
        for cfg in _drive(self.make(), 20):
            assert space.contains(cfg), cfg

    def test_same_seed_gives_same_first_configs(self) -> None:
        assert _drive(self.make(seed=7), 5) == _drive(self.make(seed=7), 5)

    def test_failed_trials_do_not_stop_the_search(self) -> None:
        configs = _drive(self.make(), 9, fail_every=3)
        assert len(configs) == min(9, len(GRID_SPACE.grid()) if self.searcher == "grid" else 9)

    @pytest.mark.slow
    def test_num_samples_max_concurrency_and_a_failed_trial(self, tmp_path: Path, ray_address: str) -> None:
        results = self.run_search(tmp_path, ray_address)
        assert len(results.trials) == 6
        assert results.count("errored") == 1
        assert "deliberate failure" in next(t.error for t in results.trials if t.status == "errored")
        spans = sorted((t.metrics["start"], t.metrics["end"]) for t in results.trials if "start" in t.metrics)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "trials overlapped"


class FakeTrial:
    """What Ray's schedulers read from a ``ray.tune.experiment.Trial``, without a cluster."""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config, self.evaluated_params = trial_id, config, dict(config)
        self.status = "PENDING"
        self.last_result: dict[str, Any] = {}
        self.is_saving = False
        self.step = 0

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")

    def set_status(self, status: str) -> None:
        self.status = status

    def __repr__(self) -> str:
        return f"FakeTrial({self.trial_id}, {self.status}, step {self.step})"


class FakeController:
    """The calls Ray's schedulers make on the ``TuneController`` (Ray 2.60)."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler, self.search_alg = scheduler, None
        self.trials: list[FakeTrial] = []

    def get_trials(self) -> list[FakeTrial]:
        return list(self.trials)

    def get_live_trials(self) -> list[FakeTrial]:
        return [t for t in self.trials if not t.is_finished()]

    def stop_trial(self, trial: FakeTrial) -> None:
        if trial.status in ("PAUSED", "PENDING"):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == "RUNNING":
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        trial.status = "TERMINATED"

    def pause_trial(self, trial: FakeTrial, should_checkpoint: bool = True) -> None:
        trial.status = "PAUSED"


def simulate(scheduler: Any, n_trials: int, budget: int, loss: Any = None) -> tuple[list[FakeTrial], list[tuple]]:
    """Run ``n_trials`` fake trials of ``budget`` steps through ``scheduler``, one at a time, the
    way Ray's controller calls it; trial ``i`` reports ``loss(i, step)`` (default: trials with
    higher ``i`` are worse). Returns the trials and every ``(trial id, step, decision)``."""
    loss = loss or (lambda i, step: (1 + i) / step)
    ctrl = FakeController(scheduler)
    scheduler.set_search_properties("loss", "min")
    for i in range(n_trials):
        trial = FakeTrial(f"t{i}", {"i": i})
        ctrl.trials.append(trial)
        scheduler.on_trial_add(ctrl, trial)
    decisions: list[tuple] = []
    for _ in range(4 * n_trials * budget):
        trial = scheduler.choose_trial_to_run(ctrl)
        if trial is None:
            break
        trial.status = "RUNNING"
        while trial.status == "RUNNING":
            trial.step += 1
            result = {"loss": loss(trial.config["i"], trial.step), "training_iteration": trial.step}
            trial.last_result = result
            decision = scheduler.on_trial_result(ctrl, trial, result)
            decisions.append((trial.trial_id, trial.step, decision))
            if trial.status != "RUNNING":
                break
            if decision == "STOP" or trial.step >= budget:
                scheduler.on_trial_complete(ctrl, trial, result)
                trial.status = "TERMINATED"
            elif decision == "PAUSE":
                trial.status = "PAUSED"
    return ctrl.trials, decisions


class SchedulerConformance(_Base):
    """Checks on a scheduler: fast ones through :func:`simulate` (wrapping, pickling, decisions,
    recorded early stops), and a real search (counts, concurrency, failures, outcomes)."""

    budget: int = 9
    n_trials: int = 9
    options: dict[str, Any] = {}

    def build(self, outcomes: TrialOutcomes | None = None) -> Any:
        spec = StrategySpec(self.searcher, self.scheduler, scheduler_options=dict(self.options))
        _, scheduler = build_strategy(spec, self._space(), ["loss"], ["min"], self.budget, outcomes or TrialOutcomes())
        return scheduler

    def _simulated(self) -> bool:
        info = get_strategy(self.scheduler, "scheduler")
        if info.rewrites_configs:
            pytest.skip("a scheduler that rewrites configs needs Ray's checkpoints: see the slow check")
        return True

    def test_build_wraps_it_in_the_recording_scheduler(self) -> None:
        from hpo.strategies._schedulers import RecordingScheduler

        scheduler = self.build()
        assert isinstance(scheduler, RecordingScheduler) and not isinstance(scheduler.inner, RecordingScheduler)

    def test_it_pickles_with_its_outcomes(self) -> None:
        from ray import cloudpickle  # what Ray saves a Tuner's scheduler with (tuner.pkl)

        outcomes = TrialOutcomes()
        outcomes.record_pruned("earlier", 1)
        scheduler = self.build(outcomes)
        # The wrapper itself is a module-level class: plain pickle takes it by reference.
        assert pickle.loads(pickle.dumps(type(scheduler))) is type(scheduler)
        again = cloudpickle.loads(cloudpickle.dumps(scheduler))
        assert again.outcomes.pruned_at("earlier") == 1 and again.budget == self.budget
        again.set_search_properties("loss", "min")  # a working scheduler, not a shell
        assert isinstance(again.debug_string(), str)

    def test_simulated_search_ends_every_trial_and_records_early_stops(self) -> None:
        self._simulated()
        outcomes = TrialOutcomes()
        trials, decisions = simulate(self.build(outcomes), self.n_trials, self.budget)
        assert all(d in DECISIONS for _, _, d in decisions), decisions
        assert all(t.status == "TERMINATED" for t in trials), trials
        for t in trials:
            assert t.step <= self.budget
            # a trial ended before its budget is pruned, at the step it reached; one that ran it all is not
            assert outcomes.pruned_at(t.trial_id) == (t.step if t.step < self.budget else None), (t, decisions)

    def test_decisions_match_declared_capabilities(self) -> None:
        self._simulated()
        info = get_strategy(self.scheduler, "scheduler")
        trials, decisions = simulate(self.build(), self.n_trials, self.budget)
        early = [(tid, step, d) for tid, step, d in decisions if d in ("STOP", "PAUSE") and step < self.budget]
        if not info.decides_in_trial:
            assert not early, early
        steps = info.decision_steps(self.budget, self.options)
        if steps is not None:
            assert {step for _, step, _ in early} <= steps, (early, steps)

    @pytest.mark.slow
    def test_num_samples_max_concurrency_and_a_failed_trial(self, tmp_path: Path, ray_address: str) -> None:
        results = self.run_search(tmp_path, ray_address, num_samples=8, max_concurrent=2)
        assert len(results.trials) == 8
        assert results.count("errored") == 1
        assert results.count("completed") + results.count("pruned") == 7
        for t in results.trials:
            if t.status == "pruned":
                assert t.pruned_at is not None and t.pruned_at < 3
            if t.status == "completed":
                assert t.steps == 3
