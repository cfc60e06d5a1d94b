"""Strategies declare what the runner needs (capabilities, option constraints, decision steps);
names are canonicalised once; every scheduler is wrapped by one recorder. Fast: no Ray cluster."""

from __future__ import annotations

import math
from typing import Any

import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler, TrialScheduler

from hpo import Experiment, HpoConfigError
from hpo.space import Categorical, Fixed, Float, SearchSpace
from hpo.strategies import (
    StrategyInfo,
    StrategySpec,
    TrialOutcomes,
    build_strategy,
    capabilities,
    get_strategy,
    list_strategies,
    register,
)
from hpo.strategies._constraints import check_option_values
from hpo.strategies._registry import _REGISTRY
from hpo.strategies._schedulers import RecordingScheduler
from hpo.testing.conformance import FakeTrial, SchedulerConformance, simulate

SPACE = SearchSpace({"lr": Float(0.01, 0.1)})


def _exp(**over: Any) -> Experiment:
    data = {"name": "c", "task": {"dataset": "iris", "epochs": 9},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
            "metric": "val_accuracy", "mode": "max"}
    data.update(over)
    return Experiment.from_dict(data)


@pytest.mark.parametrize("name, learns", [("tpe", True), ("gp", True), ("cmaes", True), ("nsga2", True),
                                          ("random", False), ("grid", False), ("sobol", False), ("qmc", False)])
def test_searchers_declare_whether_they_learn_from_results(name: str, learns: bool) -> None:
    assert get_strategy(name, "searcher").learns_from_results is learns


@pytest.mark.parametrize("name, decides, checkpoints, rewrites", [
    ("fifo", False, False, False), ("none", False, False, False), ("asha", True, False, False),
    ("median", True, False, False), ("hyperband", True, True, False), ("pbt", True, True, True),
])
def test_schedulers_declare_what_the_runner_needs(name: str, decides: bool, checkpoints: bool,
                                                   rewrites: bool) -> None:
    info = get_strategy(name, "scheduler")
    assert (info.decides_in_trial, info.needs_checkpoints, info.rewrites_configs) == (decides, checkpoints, rewrites)


def test_capabilities_summarise_a_strategy_for_the_runner() -> None:
    caps = capabilities(StrategySpec("random", "pbt", scheduler_options={"perturbation_interval": 3}), budget=9)
    assert (caps.searcher, caps.scheduler, caps.checkpoint_interval, caps.keep_checkpoints) == ("random", "pbt", 3, 4)
    assert caps.decision_steps is None  # every step
    fifo = capabilities(StrategySpec("sobol", "none"), budget=9)
    assert (fifo.scheduler, fifo.decides_in_trial, fifo.decision_steps, fifo.learns_from_results) == \
        ("fifo", False, frozenset(), False)
    assert capabilities(StrategySpec("tpe", "hyperband"), 9).checkpoint_interval == 1


def test_plugin_scheduler_defaults_to_deciding_in_trials_and_plugin_searcher_to_learning() -> None:
    register(StrategyInfo("plain-sched", "scheduler", "test", lambda: None))
    register(StrategyInfo("plain-sampler", "sampler", "test", lambda seed: None))
    try:
        sched, sampler = get_strategy("plain-sched", "scheduler"), get_strategy("plain-sampler", "searcher")
        assert sched.decides_in_trial and sched.decision_steps(9, {}) is None and sampler.learns_from_results
    finally:
        _REGISTRY.pop("plain-sched")
        _REGISTRY.pop("plain-sampler")


def test_aliases_are_resolved_once_in_the_config() -> None:
    exp = _exp(strategy={"searcher": "qmc", "scheduler": "none"}, pack=4)  # `none` packs exactly as `fifo`
    assert (exp.strategy.searcher, exp.strategy.scheduler) == ("sobol", "fifo")
    assert exp.unpackable is None and exp.to_record()["strategy"]["scheduler"] == "fifo"
    assert _exp(strategy="optuna+none").strategy.spec() == _exp(strategy="tpe+fifo").strategy.spec()


def test_a_scheduler_that_pauses_or_copies_running_trials_cannot_pack() -> None:
    for scheduler in ("hyperband", "pbt"):
        strategy = f"{'random' if scheduler == 'pbt' else 'tpe'}+{scheduler}"
        with pytest.raises(HpoConfigError) as err:
            _exp(strategy=strategy, pack=4)
        assert err.value.key == "pack" and "pauses, resumes or changes running trials" in str(err.value)
        assert _exp(strategy=strategy).unpackable and not _exp(strategy=strategy).packs


@pytest.mark.parametrize("scheduler", ["asha", "median"])
def test_asha_and_median_pack_and_are_asked_from_the_workers(scheduler: str) -> None:
    exp = _exp(strategy=f"tpe+{scheduler}", pack=4)
    assert exp.unpackable is None and exp.packs and exp.asks_in_worker
    assert not _exp(strategy=f"tpe+{scheduler}", pack=1).asks_in_worker  # unpacked: Ray Tune's scheduler decides
    assert not _exp(strategy="tpe+fifo").asks_in_worker  # nothing to ask
    assert capabilities(StrategySpec("tpe", scheduler), 9).decides_in_worker
    assert not capabilities(StrategySpec("tpe", "hyperband"), 9).decides_in_worker


def test_a_checkpoint_freq_in_the_space_makes_the_search_unpackable() -> None:
    space = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1}, "checkpoint_freq": {"type": "categorical",
                                                                                    "choices": [0, 2]}}
    assert "checkpoint_freq" in (_exp(space=space).unpackable or "")
    with pytest.raises(HpoConfigError, match="checkpoint_freq"):
        _exp(space=space, pack=4)
    assert _exp(space={**space, "checkpoint_freq": 0}).unpackable is None  # a fixed 0: no checkpoints
    assert "checkpoint_freq" in (_exp(task={"dataset": "iris", "checkpoint_freq": 1}).unpackable or "")


@pytest.mark.parametrize("grace, rf, brackets, max_t", [
    (1, 3, 1, 9), (2, 3, 1, 6), (1, 2, 1, 10), (1, 2.5, 1, 20), (3, 3, 1, 81), (1, 3, 3, 27), (2, 4, 2, 64),
    (1, 3, 1, 1), (5, 2, 1, 7), (1, 3, 4, 9),
])
def test_asha_decision_steps_match_rays_own_rungs(grace: int, rf: float, brackets: int, max_t: int) -> None:
    ray = AsyncHyperBandScheduler(max_t=max_t, grace_period=grace, reduction_factor=rf, brackets=brackets)
    expected = {math.ceil(m) for b in ray._brackets for m, _ in b._rungs}
    options = {"grace_period": grace, "reduction_factor": rf, "brackets": brackets}
    assert get_strategy("asha", "scheduler").decision_steps(max_t, options) == expected
    assert capabilities(StrategySpec("tpe", "asha", scheduler_options=options), max_t).decision_steps == expected


def test_hyperband_reduction_factor_that_leaves_a_bracket_no_step_is_rejected() -> None:
    # Ray's own layout for max_t=2, reduction_factor=3: its smallest bracket starts trials at 0 steps
    assert HyperBandScheduler(max_t=2, reduction_factor=3)._get_r0(1) == 0
    with pytest.raises(HpoConfigError) as err:
        _exp(task={"dataset": "iris", "epochs": 2}, strategy={"scheduler": {"name": "hyperband",
                                                                           "reduction_factor": 3}})
    assert err.value.key == "strategy.scheduler_options.reduction_factor"
    _exp(task={"dataset": "iris", "epochs": 9}, strategy="tpe+hyperband")


def test_every_declared_default_satisfies_its_constraints_and_names_a_real_option() -> None:
    for info in list_strategies():
        defaults = info.options()
        assert set(info.constraints) <= set(defaults), info.name
        check_option_values(defaults, info.constraints, f"{info.name}")


@pytest.mark.parametrize("role, name, option, bad", [
    ("scheduler", "asha", "brackets", 0), ("scheduler", "asha", "grace_period", 1.5),
    ("scheduler", "hyperband", "reduction_factor", 0.5), ("scheduler", "median", "min_samples_required", 0),
    ("scheduler", "median", "grace_period", -1), ("scheduler", "pbt", "quantile_fraction", 0.6),
    ("scheduler", "pbt", "resample_probability", 1.5), ("scheduler", "pbt", "perturbation_interval", 0),
    ("scheduler", "pbt", "mutate", "lr"), ("searcher", "tpe", "n_startup_trials", -1),
    ("searcher", "tpe", "multivariate", "yes"), ("searcher", "gp", "deterministic_objective", "false"),
    ("searcher", "cmaes", "sigma0", 0), ("searcher", "cmaes", "restart_strategy", "ipopp"),
    ("searcher", "nsga2", "population_size", 1), ("searcher", "nsga2", "crossover_prob", 2),
    ("searcher", "sobol", "scramble", 1),
])
def test_bad_option_values_are_rejected_naming_key_rule_and_value(role: str, name: str, option: str, bad: Any) -> None:
    searcher = "random" if role == "scheduler" else name
    block = {"name": name, option: bad}
    strategy = {"searcher": block, "scheduler": "fifo"} if role == "searcher" else {"searcher": searcher,
                                                                                   "scheduler": block}
    with pytest.raises(HpoConfigError) as err:
        _exp(strategy=strategy)
    assert err.value.key == f"strategy.{role}_options.{option}" and err.value.value == bad
    assert "must be" in str(err.value) and "default" in str(err.value)


def test_unknown_option_suggests_the_closest() -> None:
    with pytest.raises(HpoConfigError, match="Did you mean 'grace_period'"):
        _exp(strategy={"scheduler": {"name": "asha", "grace_periods": 2}})


# -- the recording wrapper ----------------------------------------------------------------------


class _StopAtTwo(TrialScheduler):
    """A plug-in scheduler: plain Ray decisions, no knowledge of hpo's outcomes."""

    def __init__(self) -> None:
        self._metric = None

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        self._metric = metric
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        pass

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        pass

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self.seen = result["training_iteration"]
        odd = int(str(trial.trial_id)[-1], 36) % 2  # Ray's ids end in a trial counter, the fake ones too
        return self.STOP if odd and result["training_iteration"] >= 2 else self.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        pass

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        pass

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        return next((t for t in tune_controller.get_trials() if t.status in ("PENDING", "PAUSED")), None)

    def debug_string(self) -> str:
        return "stop odd trials at 2"


def _stop_at_two() -> Any:
    return _StopAtTwo()


register(StrategyInfo("stop-at-two", "scheduler", "test plug-in: stops odd trials at step 2", _stop_at_two))


class TestPluginScheduler(SchedulerConformance):
    scheduler = "stop-at-two"


def test_plugin_scheduler_stops_are_recorded_as_pruned_without_any_hpo_code() -> None:
    outcomes = TrialOutcomes()
    _, scheduler = build_strategy(StrategySpec("random", "stop-at-two"), SPACE, ["loss"], ["min"], 5, outcomes)
    trials, _ = simulate(scheduler, 4, 5)
    assert outcomes.as_dict() == {"t1": 2, "t3": 2}
    assert all(t.step == 5 for t in trials if t.trial_id in ("t0", "t2"))


def test_stop_at_the_budget_is_a_completion_and_the_trials_own_step_is_used() -> None:
    outcomes = TrialOutcomes()
    wrapped = RecordingScheduler(_StopAtTwo(), outcomes, budget=2)
    trial = FakeTrial("t1", {"i": 1})
    # the built-in task sends its own epoch under hpo_step; Ray's count of reports differs
    assert wrapped.on_trial_result(None, trial, {"training_iteration": 1, "hpo_step": 2, "loss": 1.0}) == "STOP"
    assert wrapped.inner.seen == 2 and outcomes.pruned_at("t1") is None
    wrapped.budget = 3
    wrapped.on_trial_result(None, trial, {"training_iteration": 1, "hpo_step": 2, "loss": 1.0})
    assert outcomes.pruned_at("t1") == 2


def test_removing_a_paused_trial_before_its_budget_records_it_pruned() -> None:
    outcomes = TrialOutcomes()
    wrapped = RecordingScheduler(_StopAtTwo(), outcomes, budget=9)
    paused, pending = FakeTrial("p", {"i": 0}), FakeTrial("q", {"i": 0})
    paused.status, paused.last_result = "PAUSED", {"training_iteration": 3}
    wrapped.on_trial_remove(None, paused)
    wrapped.on_trial_remove(None, pending)
    assert outcomes.as_dict() == {"p": 3}


def test_wrapper_delegates_every_scheduler_method_and_what_ray_reads() -> None:
    methods = [n for n, v in vars(TrialScheduler).items() if callable(v) and not n.startswith("__")]
    assert set(methods) <= set(vars(RecordingScheduler)), set(methods) - set(vars(RecordingScheduler))
    _, hb = build_strategy(StrategySpec("random", "hyperband"), SPACE, ["loss"], ["min"], 9, TrialOutcomes())
    assert hb.supports_buffered_results is False  # tune.run reads it: HyperBand needs unbuffered results
    hb.set_search_properties("loss", "min")
    assert hb.metric == "loss" and hb._metric == "loss" and hb._time_attr == "training_iteration"


def test_inactive_conditional_parameters_never_reach_a_trial_as_none() -> None:
    from ray.tune.search.variant_generator import generate_variants

    from hpo.train.task import TaskConfig

    space = SearchSpace({"model": Categorical(["mlp", "cnn"]), "dropout": Float(0.1, 0.5, when={"model": "mlp"}),
                         "lr": Float(0.01, 0.1), "epochs": Fixed(2)})
    _, wrapped = build_strategy(StrategySpec("random", "pbt"), space, ["loss"], ["min"], 9, TrialOutcomes())
    task = {"dropout": 0.05}
    seen = set()
    for _ in range(30):
        _, config = next(generate_variants(space.to_ray()))
        trial = FakeTrial("t", config)
        wrapped.inner.on_trial_add = lambda tc, t: None  # PBT's own bookkeeping needs a real Trial
        wrapped.on_trial_add(None, trial)
        assert None not in trial.config.values() and space.contains(trial.config)
        cfg = TaskConfig.from_config({**task, **trial.config})  # the built-in task's merge
        assert cfg.dropout == (trial.config["dropout"] if trial.config["model"] == "mlp" else 0.05)
        seen.add(trial.config["model"])
    assert seen == {"mlp", "cnn"}
