"""`tpe`'s history cap (max_history): TPE models its whole good group plus the most recent trials.

Fast, no Ray: the sampler is driven through plain Optuna studies.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers._tpe.sampler import _split_trials, default_gamma
from optuna.trial import TrialState, create_trial

from hpo import Experiment, HpoConfigError
from hpo.strategies._builtin import TPE_MIN_HISTORY, _tpe
from hpo.strategies._optuna import CappedTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
DISTS = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(-5, 5)}


def quadratic(trial: optuna.Trial) -> float:
    x, y = trial.suggest_float("x", -5, 5), trial.suggest_float("y", -5, 5)
    return (x - 1.5) ** 2 + (y + 2) ** 2


def _fill(study: optuna.Study, values: list[float]) -> None:
    rng = random.Random(1)
    study.add_trials([create_trial(params={"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5)}, distributions=DISTS,
                                   value=v) for v in values])


def _numbers(trials: list[Any]) -> list[int]:
    return [t.number for t in trials]


class _Spy(CappedTPESampler):
    """Records, for every split TPE makes, the trial numbers of its good and bad groups."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[list[int], list[int]]] = []

    def _build_parzen_estimator(self, study: Any, search_space: Any, trials: Any, handle_below: bool) -> Any:
        if handle_below:
            self.seen.append((_numbers(trials), []))
        else:
            self.seen[-1][1].extend(_numbers(trials))
        return super()._build_parzen_estimator(study, search_space, trials, handle_below)


def _ask(sampler: Any, study: optuna.Study) -> dict[str, float]:
    """One proposal from ``sampler`` for ``study``'s trials (told back, so the study grows by one)."""
    study.sampler = sampler
    trial = study.ask()
    params = {"x": trial.suggest_float("x", -5, 5), "y": trial.suggest_float("y", -5, 5)}
    study.tell(trial, (params["x"] - 1.5) ** 2 + (params["y"] + 2) ** 2)
    return params


# -- which trials are kept ---------------------------------------------------------------------


def test_keeps_the_k_best_and_the_most_recent_in_order() -> None:
    study = optuna.create_study()
    _fill(study, [float(i) for i in range(300)])  # trial i has value i: the best are the oldest
    sampler = CappedTPESampler(max_history=100, seed=0)
    trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    kept, k = sampler.keep(study, study.ask(), trials, default_gamma)
    assert k == default_gamma(300) == 25
    assert _numbers(kept) == list(range(25)) + list(range(225, 300))
    below, _ = _split_trials(study, kept, k)
    assert _numbers(below) == list(range(25))  # TPE's good group over the kept trials: the study's best


def test_below_the_cap_nothing_is_filtered() -> None:
    study = optuna.create_study(direction="maximize")
    _fill(study, [float(i) for i in range(100)])
    trials = study._get_trials(deepcopy=False)
    kept, k = CappedTPESampler(max_history=100, seed=0).keep(study, study.ask(), trials, default_gamma)
    assert kept == trials and k == 10


def test_good_group_follows_optunas_split_with_pruned_trials_completing_out_of_order() -> None:
    """The incremental pool gives Optuna's own good group of the whole study at every ask, for
    complete trials by value and pruned ones by their last step and intermediate value."""
    for direction in ("minimize", "maximize"):
        rng = random.Random(7)
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(0))
        sampler = CappedTPESampler(max_history=100, seed=0)
        running: list[optuna.Trial] = []
        for step in range(700):
            running.append(study.ask({"x": DISTS["x"]}))
            if len(running) > 8 or step == 699:  # finish a random running trial: out of order
                while running and (len(running) > 8 or step == 699):
                    t = running.pop(rng.randrange(len(running)))
                    value, r = rng.uniform(0, 100), rng.random()
                    if r < 0.6:  # pruned at a random step, reported there (or never, for some)
                        if r > 0.05:
                            t.report(value, rng.randint(1, 3))
                        study.tell(t, state=TrialState.PRUNED)
                    else:
                        study.tell(t, value)
            finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if len(finished) > 100 and step % 7 == 0:
                probe = study.ask({"x": DISTS["x"]})
                kept, k = sampler.keep(study, probe, finished, default_gamma)
                expected, _ = _split_trials(study, finished, default_gamma(len(finished)))
                assert k == default_gamma(len(finished))
                assert _numbers(_split_trials(study, kept, k)[0]) == _numbers(expected)
                assert len(kept) == 100 and _numbers(kept) == sorted(_numbers(kept))
                assert set(_numbers(kept)) >= set(_numbers(finished[-(100 - k):]))
                running.append(probe)


# -- what TPE sees and proposes ----------------------------------------------------------------


@pytest.mark.parametrize("multivariate", [False, True])
def test_over_the_cap_tpe_models_at_most_cap_trials_with_plain_tpes_good_group(multivariate: bool) -> None:
    study = optuna.create_study()
    _fill(study, [float(i % 17) for i in range(400)])  # many ties: broken by trial number, like Optuna
    capped = _Spy(max_history=100, seed=0, multivariate=multivariate)
    plain = _Spy(max_history=None, seed=0, multivariate=multivariate)
    for _ in range(20):
        study.sampler = plain  # plain TPE first, on the same finished trials
        plain._sample(study, study.ask(), DISTS)  # the asked trial stays RUNNING
        finished = _numbers(study.get_trials(states=(TrialState.COMPLETE,)))
        running = _numbers(study.get_trials(states=(TrialState.RUNNING,)))
        capped.seen.clear()
        params = _ask(capped, study)
        assert -5 <= params["x"] <= 5 and -5 <= params["y"] <= 5
        assert len(capped.seen) == (1 if multivariate else 2)  # one split per parameter when independent
        below, above = capped.seen[-1]
        # Running trials join the bad group (Optuna's constant liar) and are not counted in the cap.
        assert [n for n in above if n in running] == running
        above = [n for n in above if n not in running]
        assert len(below) == 25 and len(below) + len(above) == 100 < len(finished)
        assert above == [n for n in finished if n not in below][-75:]  # the most recent others
        assert below == plain.seen[-1][0]  # the same good group as plain TPE's
        assert len(plain.seen[-1][1]) == len(finished) - 25 + len(running) - 1  # plain: every trial


@pytest.mark.parametrize("multivariate", [False, True])
def test_no_cap_or_a_cap_above_the_study_reproduces_plain_tpe_exactly(multivariate: bool) -> None:
    def run(sampler: Any) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=sampler)
        study.optimize(quadratic, n_trials=60)
        return [t.params for t in study.trials]

    options = {"seed": 3, "n_startup_trials": 10, "multivariate": multivariate}
    plain = run(optuna.samplers.TPESampler(**options))
    assert run(CappedTPESampler(max_history=None, **options)) == plain
    assert run(CappedTPESampler(max_history=100, **options)) == plain  # 60 trials: below the cap
    assert type(_tpe(3, multivariate=multivariate, max_history=None)) is optuna.samplers.TPESampler
    assert run(_tpe(3, multivariate=multivariate, max_history=0)) == plain
    assert run(_tpe(3, multivariate=multivariate)) == plain


def test_same_seed_same_proposals_and_a_checkpoint_resumes_identically() -> None:
    study = optuna.create_study(sampler=_tpe(5, max_history=100))
    study.optimize(quadratic, n_trials=130)
    again = optuna.create_study(sampler=_tpe(5, max_history=100))
    again.optimize(quadratic, n_trials=130)
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    restored = pickle.loads(pickle.dumps(study))  # what hpo's searcher checkpoints (caches dropped)
    assert restored.sampler._pool is None and restored.sampler._kept is None
    study.optimize(quadratic, n_trials=15)
    restored.optimize(quadratic, n_trials=15)
    assert [t.params for t in restored.trials] == [t.params for t in study.trials]


def test_multi_objective_stays_within_the_cap_and_bounds() -> None:
    def two(trial: optuna.Trial) -> tuple[float, float]:
        x, y = trial.suggest_float("x", -5, 5), trial.suggest_float("y", -5, 5)
        return x**2 + y**2, (x - 2) ** 2 + (y - 2) ** 2

    sampler = _Spy(max_history=100, seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(two, n_trials=140)
    assert all(-5 <= t.params["x"] <= 5 and -5 <= t.params["y"] <= 5 for t in study.trials)
    sizes = [len(b) + len(a) for b, a in sampler.seen]
    assert max(sizes) == 100 and sizes[-1] == 100
    assert all(len(b) <= 50 for b, _ in sampler.seen)


def test_capped_tpe_finds_about_as_good_a_minimum_as_uncapped() -> None:
    """A 300-trial search on a 2-D quadratic: capped at 100 vs. every trial, three fixed seeds."""
    best: dict[str, list[float]] = {"capped": [], "uncapped": []}
    for seed in range(3):
        for name, cap in (("capped", 100), ("uncapped", None)):
            study = optuna.create_study(sampler=_tpe(seed, max_history=cap))
            study.optimize(quadratic, n_trials=300)
            best[name].append(study.best_value)
    capped, uncapped = sorted(best["capped"])[1], sorted(best["uncapped"])[1]  # medians
    assert capped < 0.05 and uncapped < 0.05, best  # both close to the minimum (0)
    assert capped <= 10 * uncapped + 1e-3, best


# -- the option --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [TPE_MIN_HISTORY - 1, 10, -1, 1.5, "1000", True])
def test_max_history_must_be_an_integer_of_at_least_the_minimum(bad: Any) -> None:
    from hpo.strategies import get_strategy

    with pytest.raises(HpoConfigError) as err:  # the declared constraint (the factory only builds)
        get_strategy("tpe", "searcher").check_options({"max_history": bad}, "strategy.searcher_options")
    assert err.value.key == "strategy.searcher_options.max_history"
    assert f">= {TPE_MIN_HISTORY}" in str(err.value) and repr(bad) in str(err.value)
    data = {"name": "t", "trainable": "tests.trainables:quadratic", "metric": "loss", "mode": "min",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "strategy": {"searcher": {"name": "tpe", "max_history": bad}}}
    with pytest.raises(HpoConfigError) as err:  # checked when the experiment is validated, before launch
        Experiment.from_dict(data)
    assert err.value.key == "strategy.searcher_options.max_history" and err.value.value == bad


def test_max_history_options_accepted() -> None:
    data = {"name": "t", "trainable": "tests.trainables:quadratic", "metric": "loss", "mode": "min",
            "space": {"x": {"type": "float", "low": 0, "high": 1}}}
    for ok in (TPE_MIN_HISTORY, 5000, 0, None):
        Experiment.from_dict({**data, "strategy": {"searcher": {"name": "tpe", "max_history": ok}}})
    assert isinstance(_tpe(0), CappedTPESampler) and _tpe(0).max_history == 1000
    assert _tpe(0, max_history=TPE_MIN_HISTORY).max_history == TPE_MIN_HISTORY
