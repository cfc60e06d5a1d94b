"""Runs a search on Ray Tune: the only module that builds a ``tune.Tuner``.

Each search gets a run directory ``<storage_path>/<name>-<timestamp>`` (see :mod:`hpo.rundir`)
holding Ray's experiment state, trial checkpoints, ``hpo_state.json`` (the validated experiment
and the MLflow parent run of each tracking store) and ``outcomes.json``, so ``hpo resume`` can
rebuild everything and continue in place. How the search ends is :mod:`hpo.lifecycle`'s.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hpo.config import Experiment
from hpo.disk_space import check_free, describe, watch
from hpo.errors import HpoConfigError, SearchInterrupted, is_disk_full
from hpo.plots import SearchFiles
from hpo.ray_env import check_cluster, ray_session, runtime_env_of, tune_settings
from hpo.results import Results
from hpo.rundir import (
    DECISIONS_FILE,
    OUTCOMES_FILE,
    OWN_FILES,
    TRIALS_FILE,
    find_run_dir,
    has_ray_state,
    new_run_dir,
    read_json,
    read_state,
    recorded_tracking_uri,
    set_aside_ray_files,
    update_state,
    write_json,
)
from hpo.study_file import export_study
from hpo.tracking.search_record import search_tracker
from hpo.train.builtin import builtin_task, load_data_meanwhile, trainable_of
from hpo.train.model_logger import ModelLogger
from hpo.validate import tracking_uri_of, validate

__all__ = ["resume", "run"]

log = logging.getLogger("hpo")


# -- public API --------------------------------------------------------------------------------


def run(
    experiment: Experiment | dict[str, Any] | None = None,
    *,
    trainable: Callable[..., Any] | str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    run_dir: str | Path | None = None,
    study_storage: str | None = None,
    study_name: str | None = None,
    trial_attrs: dict[str, str] | None = None,
    parent_tags: dict[str, str] | None = None,
    working_dir: str | Path | None = None,
    **kwargs: Any,
) -> Results:
    """Run a search and return its :class:`~hpo.results.Results`.

    Accepts an :class:`~hpo.config.Experiment`, a dict in the experiment-file format, or the
    same keys as keyword arguments. ``run_dir`` fixes the run directory (default: a new
    ``<storage_path>/<name>-<timestamp>``); ``study_storage`` and ``study_name`` keep an Optuna
    searcher's study in that storage (loaded if it exists, so the sampler sees its earlier
    trials); ``trial_attrs`` are Optuna user attributes set on every trial the search asks for
    (they need ``study_storage``); ``parent_tags`` are added to the MLflow parent run.
    ``working_dir`` (relative to the current directory) replaces the experiment's: a directory
    Ray ships to every node, from which the trials import the trainable's module.

    Example:
        >>> import hpo
        >>> def objective(config):
        ...     for step in range(1, 4):
        ...         hpo.report({"loss": (config["x"] - 0.3) ** 2 / step})
        >>> results = hpo.run(name="doc", trainable=objective, metric="loss", mode="min",
        ...                   space={"x": hpo.Float(0, 1)}, strategy="random", num_samples=4,
        ...                   tracking={"enabled": False})  # doctest: +SKIP
        >>> results.best_config  # doctest: +SKIP
    """
    if isinstance(experiment, Experiment):
        exp = experiment
    else:
        fields = dict(experiment or {}) | kwargs
        if trainable is not None:
            fields["trainable"] = trainable
        exp = Experiment.from_dict(fields)
    if working_dir is not None:
        exp = exp.model_copy(update={"working_dir": _absolute(working_dir)})
    validate(exp, tracking_uri)
    check_free(run_dir if run_dir is not None else exp.storage_path)
    if exp.tracking.enabled:
        tracking_uri = tracking_uri_of(exp, tracking_uri)
    if trial_attrs and not study_storage:
        raise HpoConfigError("trial_attrs", "need `study_storage`: the tagged study is reopened from its storage",
                             trial_attrs)
    data = load_data_meanwhile(exp)
    where = Path(run_dir).resolve() if run_dir is not None else new_run_dir(exp.storage_path, exp.name)
    return _execute(exp, where, address or exp.address, tracking_uri, restore=False,
                    fn=trainable if callable(trainable) else None, data=data,
                    study={"storage": study_storage, "name": study_name, "attrs": trial_attrs or {},
                           "parent_tags": parent_tags or {}})


def resume(name_or_path: str, *, trainable: Callable[..., Any] | None = None, storage_path: str = "hpo_results",
           address: str | None = None, tracking_uri: str | None = None, time_budget_s: float | None = None,
           working_dir: str | Path | None = None) -> Results:
    """Continue a killed or interrupted search in place: finished trials are kept, unfinished
    ones restart from their last checkpoint, MLflow runs continue without duplicates, and the
    epoch and time budgets go on from what the search had spent. The recorded ``working_dir`` is
    shipped again; a ``working_dir`` given here replaces it (and is recorded for later resumes)."""
    run_dir = find_run_dir(name_or_path, storage_path)
    state = read_state(run_dir)
    record = state["experiment"]
    tracking_uri = recorded_tracking_uri(state, tracking_uri)  # a password is given again, never stored
    if trainable is not None:
        record["trainable"] = trainable
    if working_dir is not None:
        record["working_dir"] = _absolute(working_dir)
    exp = Experiment.from_dict(record)
    if time_budget_s is not None:  # a new budget for the whole search (its earlier runs' time counts)
        exp = exp.model_copy(update={"time_budget_s": time_budget_s})
    validate(exp)
    check_free(run_dir)
    if working_dir is not None:
        update_state(run_dir, experiment={**read_state(run_dir)["experiment"], "working_dir": exp.working_dir})
    data = load_data_meanwhile(exp)
    return _execute(exp, run_dir, address or exp.address, tracking_uri, restore=True, fn=trainable, data=data)


# Ray Tune and what builds on it: imported while Ray starts (1.3-1.8 s of the driver's CPU on a
# 2-core machine, which used to come before ray.init)
_TUNE_MODULES = ("ray.tune", "hpo.lifecycle", "hpo.packing", "hpo.progress", "hpo.tracking.mlflow")


def _execute(exp: Experiment, run_dir: Path, address: str | None, tracking_uri: str | None, *, restore: bool,
             fn: Callable[..., Any] | None, data: Future, study: dict[str, Any] | None = None) -> Results:
    from hpo.strategies import TaggedStudy, TrialOutcomes, build_scheduler, build_strategy, capabilities

    num_samples = exp.resolved_num_samples()
    caps = capabilities(exp.strategy.spec(), exp.budget)
    with ray_session(address, runtime_env_of(exp, tracking_uri), meanwhile=_TUNE_MODULES) as session, \
            tune_settings() as queue_trials:
        from ray import tune  # imported while Ray started (ray_session)

        from hpo._compat.ray import atomic_uploads
        from hpo._compat.ray_start import lean_callback_telemetry
        from hpo.lifecycle import DISK_FULL, EXIT_CODES, Collector, catch_signals, resumes_as_interrupted
        from hpo.packing import PackingSearcher, Unpacker
        from hpo.progress import Progress
        from hpo.tracking.mlflow import MlflowTracker

        slots = check_cluster(exp, session.ray, exp.storage_path)  # before anything is written or queued
        queue_trials(min(slots, exp.max_concurrent or slots))  # trials waiting for a worker: one per free slot
        dataset = data.result()  # its error, if any, ends the search here: Ray is shut down, nothing written
        resuming = restore and has_ray_state(run_dir)
        # Packed ASHA: the trials ask the scheduler from their workers (as the search began, on resume)
        asks = bool(read_state(run_dir).get("asks_in_worker")) if resuming else exp.asks_in_worker
        ask = _decision_table(exp, run_dir, caps.decision_steps) if asks else None
        trainable = trainable_of(exp, fn, dataset, str(run_dir), ask=ask)
        if resuming:
            if resumes_as_interrupted((read_json(run_dir / OUTCOMES_FILE, {}) or {}).get("stop_reason")):
                from hpo._compat.ray import reopen_search

                reopen_search(run_dir)  # interrupted: go on with the trials it had not started
            tuner = tune.Tuner.restore(str(run_dir), trainable, resume_unfinished=True, resume_errored=False)
            # Every hpo callback was pickled with the searcher and scheduler in one tuner.pkl, so
            # they still share one TrialOutcomes record; the collector holds them all.
            collector: Any = next(c for c in _restored_callbacks(tuner) if isinstance(c, Collector))
            outcomes: Any = collector.outcomes
            collector.time_budget_s = exp.time_budget_s  # as recorded, or a new one given to resume()
            tracker = next((c for c in collector.downstream_callbacks() if isinstance(c, MlflowTracker)), None)
            if tracker is not None and tracking_uri:
                tracker.tracking_uri = tracking_uri  # pickled without its password
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            set_aside_ray_files(run_dir)  # a start killed before Ray's first state save: nothing to resume
            update_state(run_dir, experiment=exp.to_record(), created=time.time(),  # keeps a recorded MLflow parent
                         asks_in_worker=asks)
            outcomes = TrialOutcomes()
            study = study or {}
            searcher, scheduler = build_strategy(exp.strategy.spec(), exp.space, exp.metrics, exp.modes, exp.budget,
                                                 outcomes, storage=study.get("storage"), study_name=study.get("name"))
            if study.get("attrs") and getattr(searcher, "study", None) is not None:
                searcher.study = TaggedStudy(searcher.study.study_name, study["storage"], searcher.study.sampler,
                                             study["attrs"])
            # The best model's logger: a helper process gets ready while the trials run (built-in task)
            logger = ModelLogger() if exp.is_builtin and exp.task.get("test_best", True) else None
            tracker = search_tracker(exp, run_dir, outcomes, tracking_uri, write_files=SearchFiles(),
                                     model_logger=logger) if exp.tracking.enabled else None
            if tracker is not None:
                tracker.parent_tags.update(study.get("parent_tags", {}))
            from ray.tune.logger import JsonLoggerCallback

            # Ray's JSON logger keeps each trial's full result history on disk (params.json,
            # result.json): what a resumed search and `hpo sync-mlflow` replay into MLflow.
            downstream: list[Any] = [Progress(num_samples, exp.metrics[0], exp.modes[0], outcomes)]
            downstream += [tracker] if tracker else []
            tune_samples, unpacker = num_samples, None
            if asks:  # Ray Tune's own scheduler then decides nothing inside the (packed) Ray trials
                scheduler = build_scheduler(replace(exp.strategy.spec(), scheduler="fifo", scheduler_options={}),
                                            exp.space, exp.budget, outcomes)
            if exp.packs:
                # Short trials share Ray trials; every hpo callback sees each one as its own trial.
                searcher = PackingSearcher(searcher, num_samples, exp.pack, adaptive=caps.learns_from_results)
                unpacker = Unpacker(downstream)
                downstream, tune_samples = [unpacker], -1  # the packing searcher counts trials
            from ray.tune.search import ConcurrencyLimiter

            variants = caps.rewrites_configs  # PBT: Ray's variant generator samples the space itself
            # The limiter is hpo's to build, so the collector can tell it about trials it cuts.
            search_alg = ConcurrencyLimiter(searcher, exp.max_concurrent) if exp.max_concurrent and not variants \
                else searcher
            collector = Collector(exp.metrics, searcher, outcomes, search_alg=search_alg, epoch_budget=exp.epoch_budget,
                                  time_budget_s=exp.time_budget_s, trial_budget=exp.budget, downstream=downstream,
                                  unpacker=unpacker, run_dir=str(run_dir), trial_timeout_s=exp.trial_timeout_s)
            single = len(exp.metrics) == 1
            tuner = tune.Tuner(
                trainable,
                param_space=exp.space.to_ray() if variants else None,
                tune_config=tune.TuneConfig(
                    search_alg=search_alg,
                    scheduler=scheduler,
                    metric=exp.metrics[0] if single else None,
                    mode=exp.modes[0] if single else None,
                    num_samples=tune_samples,
                    max_concurrent_trials=exp.max_concurrent if variants else None,
                    reuse_actors=True,
                    # time_budget_s is the collector's: it ends trials as cut and counts across resumes
                ),
                run_config=tune.RunConfig(
                    name=run_dir.name,
                    storage_path=str(run_dir.parent),
                    callbacks=[collector, *downstream, JsonLoggerCallback()],
                    stop=collector.stopper(),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=exp.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=exp.keep_checkpoints or caps.keep_checkpoints,
                        # top-k by the metric; Ray always keeps the latest too, so retries resume from it
                        checkpoint_score_attribute=exp.metrics[0] if single else None,
                        checkpoint_score_order=exp.modes[0] if single else "max",
                    ),
                ),
            )
        if tracker is not None:
            tracker.start()  # the writer opens the parent run in the background
        model_logger = getattr(tracker, "model_logger", None)
        if isinstance(model_logger, ModelLogger) and tracker is not None and tracker.log_model:
            model_logger.start()  # its helper gets ready, at the lowest priority, while the trials run
        # The end-of-search writes too: a signal there still records all. A write of the search
        # that finds the disk full stops it like a signal (hpo.disk_space).

        def release_ray() -> None:
            if ask is not None:
                ask.close()  # the decision table's actor: a joined cluster would keep it otherwise
            session.release()

        try:
            with catch_signals(collector), watch(run_dir, collector.disk_is_full), \
                    atomic_uploads(keep=OWN_FILES), lean_callback_telemetry():
                results = _fit_and_record(exp, tuner, collector, outcomes, tracker, dataset, run_dir, release_ray)
        finally:
            if ask is not None:
                ask.close()
            if isinstance(model_logger, ModelLogger):
                model_logger.close()  # its helper, if the search ended with no model to log
    if collector.error is not None:
        raise collector.error
    if results.interrupted:
        message = None
        if results.interrupted == DISK_FULL:
            message = (f"disk full: no space left at {collector.disk_full}. The search stopped: running trials "
                       f"were cut, and every record that fitted was written ({describe(run_dir)} now). Free some "
                       f"space there, then continue it with:\n  hpo resume {run_dir}")
        raise SearchInterrupted(results.interrupted, EXIT_CODES.get(results.interrupted, 1), results,
                                f"hpo resume {run_dir}", message)
    return results


def _fit_and_record(exp: Experiment, tuner: Any, collector: Any, outcomes: Any, tracker: Any, dataset: Any,
                    run_dir: Path, release_ray: Callable[[], None]) -> Results:
    """Run the search, then write its records: Results, trials.json, MLflow (and the best model,
    unless the search failed or was interrupted). Ray is released as soon as the search needs it
    no more: its shutdown overlaps the records."""
    failed = True
    try:
        tuner.fit()
        failed = collector.error is not None
    finally:
        results = Results.from_trials(collector.trials, exp.name, exp.metrics, exp.modes, outcomes,
                                      str(run_dir), study=getattr(collector.searcher, "study", None))
        results.stop_reason = collector.stop_reason
        if tracker is not None:
            tracker.begin_finish(results)  # leaderboard and plots while the best trial is recovered
        if (not failed and not collector.interrupted and exp.is_builtin and exp.task.get("test_best", True)
                and results.best_trial):
            from hpo.train.best import drop_other_models, recover_best

            # The best trial's own final model (a Ray task rebuilds it only when it is missing)
            results.best_model_info = recover_best(results, builtin_task(exp), dataset,
                                                   {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu}, run_dir)
            drop_other_models(run_dir, results.best_trial.trial_id)
        release_ray()
        try:
            write_json(run_dir / TRIALS_FILE, {"trials": [asdict(t) for t in results.trials],
                                               "stop_reason": collector.stop_reason})
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            log.warning("hpo: %s not written (disk full); `hpo resume` writes it", run_dir / TRIALS_FILE)
        export_study(run_dir, exp, results.trials)  # <run_dir>/optuna.journal, for optuna-dashboard
        results.interrupted = collector.interrupted  # also a signal during these writes
        if tracker is not None:
            tracker.finish(results, failed=failed, killed=results.interrupted is not None)
            results.mlflow_experiment_id, results.parent_run_id = tracker.experiment_id, tracker.parent_run_id
    return results


def _decision_table(exp: Experiment, run_dir: Path, steps: frozenset[int] | None) -> Any:
    """The search's scheduler in a decision table the packed trials ask at ``steps`` (its decision
    steps, :mod:`hpo.decisions`); its log in the run directory brings a resumed search's table back
    to where it was."""
    from hpo.decisions import start_table
    from hpo.strategies import TrialOutcomes, build_scheduler

    scheduler = build_scheduler(exp.strategy.spec(), exp.space, exp.budget, TrialOutcomes())
    run_dir.mkdir(parents=True, exist_ok=True)  # the actor opens its log there
    return start_table(scheduler, exp.metrics[0], exp.modes[0], str(run_dir / DECISIONS_FILE), steps,
                       name=f"hpo-decisions-{run_dir.name}-{os.getpid()}")


def _absolute(path: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def _restored_callbacks(tuner: Any) -> list[Any]:
    """The callbacks a restored Tuner unpickled (Ray 2.60 exposes them only on its local tuner)."""
    from hpo._compat.ray import restored_run_config

    return list(restored_run_config(tuner).callbacks or [])
