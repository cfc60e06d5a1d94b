"""Runs a search on Ray Tune: the only module that builds a ``tune.Tuner``.

Each search gets a run directory ``<storage_path>/<name>-<timestamp>`` holding Ray's
experiment state, trial checkpoints and ``hpo_state.json`` (the validated experiment and the
MLflow parent run id), so ``hpo resume`` can rebuild everything and continue in place.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from hpo._imports import import_callable
from hpo._trials import NOT_METRICS, result_steps
from hpo.config import Experiment
from hpo.errors import HpoConfigError, MetricNotReportedError
from hpo.results import Results
from hpo.session import SUB_KEY

__all__ = ["resume", "run"]

STATE_FILE = "hpo_state.json"
TRIALS_FILE = "trials.json"  # every trial's outcome, written when a search ends
log = logging.getLogger("hpo")


# -- trainables ------------------------------------------------------------------------------


def _check_before_launch(exp: Experiment) -> Any:
    """Everything that can be checked without Ray: nothing is launched or written on failure.

    For the built-in task this loads the data set (once, on the driver) and returns it.
    """
    _check_settings(exp)
    return _load_data(exp)


def _check_settings(exp: Experiment) -> None:
    """The checks that need no data (milliseconds): names, keys, import paths."""
    if exp.is_builtin:
        from hpo.train.task import check_task_settings

        check_task_settings(exp.task, _space_values(exp), exp.resources.gpu)
    elif isinstance(exp.trainable, str):
        import_callable(exp.trainable)


def _load_data(exp: Experiment) -> Any:
    """The built-in task's data set, loaded and checked against the task (losses, models, metrics)."""
    if not exp.is_builtin:
        return None
    from hpo.train.task import load_task_data

    return load_task_data(exp.task, _space_values(exp), exp.metrics)


def _space_values(exp: Experiment) -> dict[str, list[Any] | None]:
    return {n: p.values() for n, p in exp.space.params.items()}


def _load_data_meanwhile(exp: Experiment) -> Future:
    """Load the data in a thread while Ray starts (about a second of imports and parsing off
    the start-up path). A data error still comes before any trial, run directory or MLflow
    run exists; Ray, started meanwhile, is shut down again."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="hpo-data")
    try:
        return pool.submit(_load_data, exp)
    finally:
        pool.shutdown(wait=False)


def builtin_task(exp: Experiment) -> dict[str, Any]:
    """The built-in task's fixed settings, with what the chosen scheduler needs."""
    task = dict(exp.task)
    if exp.strategy.scheduler in ("hyperband", "pbt") and not task.get("checkpoint_freq"):
        # HyperBand pauses trials and PBT copies them: both resume from checkpoints.
        task["checkpoint_freq"] = int(exp.strategy.scheduler_options.get("perturbation_interval", 1))
    return task


def report_plan(exp: Experiment) -> Any:
    """The epochs the scheduler decides at, so the built-in task reports just those (and the
    others along with them): FIFO none, ASHA its rungs, every other scheduler every epoch."""
    from hpo.session import ReportPlan
    from hpo.strategies import TrialOutcomes, get_strategy

    info = get_strategy(exp.strategy.scheduler, "scheduler", "strategy.scheduler")
    interval = exp.tracking.flush_interval_s / 2  # live enough for the MLflow writer's window
    if info.name == "fifo":
        return ReportPlan(frozenset(), interval)
    if info.name == "asha":
        asha = info.factory(TrialOutcomes(), exp.budget, **exp.strategy.scheduler_options)
        # a rung at a fractional epoch (reduction factor 2.5) is decided at the next whole one
        return ReportPlan(frozenset(math.ceil(m) for b in asha._brackets for m, _ in b._rungs), interval)
    return ReportPlan(None)


def _trainable(exp: Experiment, fn: Callable[..., Any] | None, data: Any) -> Any:
    from ray import tune

    resources = {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu}
    if exp.is_builtin:
        from hpo.train import train

        task = builtin_task(exp)
        # Split once here (every fold too), put in Ray's object store once, read by every trial on every node.
        data.splits(int(task.get("cv_folds", 0)))
        threads = max(1, int(exp.resources.cpu))
        return tune.with_resources(tune.with_parameters(train, data=data, threads=threads, task=task,
                                                        plan=report_plan(exp)), resources)
    if fn is None:
        fn = exp.trainable if callable(exp.trainable) else import_callable(exp.trainable)
    return tune.with_resources(fn, resources)


# -- driver-side callbacks --------------------------------------------------------------------


def _collector_class() -> type:
    from ray.tune import Callback
    from ray.tune.stopper import Stopper

    class Collector(Callback, Stopper):
        """Checks that every result carries the metrics; keeps the final trial list; ends the
        search once the trials together have run ``epoch_budget`` epochs."""

        # defaults for a collector unpickled from a search started by an earlier hpo version
        epoch_budget: int | None = None
        outcomes: Any = None
        trial_budget: int | None = None
        spent = False

        def __init__(self, metrics: list[str], searcher: Any, epoch_budget: int | None = None,
                     outcomes: Any = None, trial_budget: int | None = None) -> None:
            self.metrics = metrics
            self.searcher = searcher  # pickled with the callbacks, so a resumed search keeps it
            self.error: MetricNotReportedError | None = None
            self.trials: list[Any] = []
            self.epoch_budget = epoch_budget
            self.epochs: dict[str, int] = {}  # trial id -> epochs it has run
            self.running: set[str] = set()
            self.outcomes = outcomes
            self.trial_budget = trial_budget  # a trial's own full budget (epochs), when known
            self.spent = False

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.__dict__.setdefault("running", set()).add(trial.trial_id)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.__dict__.setdefault("running", set()).discard(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.__dict__.setdefault("running", set()).discard(trial.trial_id)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            for m in self.metrics:
                if m not in result and self.error is None:
                    self.error = MetricNotReportedError(m, [k for k in result if k not in NOT_METRICS])

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.trials = list(trials)
            if self.spent and self.outcomes is not None:
                # Trials the budget stopped before they reported (or before their full budget)
                # did not complete either.
                for t in trials:
                    steps = self.epochs.get(t.trial_id, 0)
                    short = steps == 0 or (self.trial_budget is not None and steps < self.trial_budget)
                    if short and t.status != "ERROR" and not self.outcomes.is_pruned(t.trial_id):
                        self.outcomes.record_pruned(t.trial_id, steps)

        def __call__(self, trial_id: str, result: dict) -> bool:
            if self.epoch_budget is not None:
                for step, entry in result_steps(result):  # a packed trial's steps carry their own trial's id
                    key = entry.get(SUB_KEY, trial_id)
                    self.epochs[key] = max(self.epochs.get(key, 0), step)
            return False

        def stop_all(self) -> bool:
            if not self.spent and self.epoch_budget is not None and sum(self.epochs.values()) >= self.epoch_budget:
                self.spent = True
                # Trials the budget cuts short are pruned at their last epoch (told to Optuna as
                # PRUNED, never the best with a partial value), not completed.
                for tid in self.running:
                    if self.outcomes is not None and (self.trial_budget is None
                                                      or self.epochs.get(tid, 0) < self.trial_budget):
                        self.outcomes.record_pruned(tid, self.epochs.get(tid, 0))
            return self.error is not None or self.spent

    return Collector


# -- Ray --------------------------------------------------------------------------------------


@contextmanager
def _ray(address: str | None):
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=True,
        )
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _tune_env():
    # Ray's per-trial JSON/CSV loggers are off (results reach hpo through callbacks), so its
    # end-of-run ExperimentAnalysis finds no result files: that warning is expected noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # hpo checks metrics itself (with a clearer error); Ray's own tables are replaced by Progress.
    env = {
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("hpo", "ray", "optuna", "torch", "mlflow"):
        try:
            out[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


_URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def tracking_uri_of(exp: Experiment, override: str | None) -> str:
    """The MLflow store a search writes to: ``--tracking-uri``, the experiment file, the
    environment, else ``sqlite:///<cwd>/mlflow.db``. Checked here, before anything is launched."""
    from hpo.tracking.mlflow import default_tracking_uri

    for key, uri in (("--tracking-uri", override), ("tracking.tracking_uri", exp.tracking.tracking_uri),
                     ("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI"))):
        if not uri:
            continue
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()  # "databricks" alone is a URI too
        shown = re.sub(r"//[^/@]*@", "//***@", uri)  # credentials never reach a message
        if scheme not in _URI_SCHEMES:
            raise HpoConfigError(key, f"must be an MLflow tracking URI starting with one of "
                                 f"{', '.join(s + ':' for s in _URI_SCHEMES)}", shown,
                                 "MLflow 3 refuses its plain file store: use sqlite:///path/mlflow.db"
                                 if scheme == "file" or ":" not in uri else None)
        if scheme == "sqlite":
            path = uri.split(":///", 1)[1] if ":///" in uri else ""
            if path and not Path(path).parent.is_dir():
                raise HpoConfigError(key, "must name an SQLite file in an existing directory", shown)
        return uri
    return default_tracking_uri()


def _tracker(exp: Experiment, run_dir: Path, outcomes: Any, tracking_uri: str | None) -> Any:
    import yaml

    from hpo.tracking.mlflow import MlflowTracker

    uri = tracking_uri_of(exp, tracking_uri)
    spec = exp.strategy.spec()
    tags = {"hpo.search": exp.name, "hpo.storage_path": str(run_dir), **_versions()}
    commit = _git_commit()
    if commit:
        tags["git.commit"] = commit
    params = {"searcher": spec.searcher, "scheduler": spec.scheduler, "seed": spec.seed,
              "num_samples": exp.resolved_num_samples(), "metric": ",".join(exp.metrics),
              "mode": ",".join(exp.modes), "space_hash": _space_hash(exp),
              **{f"searcher.{k}": v for k, v in spec.searcher_options.items()},
              **{f"scheduler.{k}": v for k, v in spec.scheduler_options.items()}}
    record = exp.to_record()
    artifacts = {"experiment.yaml": yaml.safe_dump(record, sort_keys=False),
                 "space.yaml": yaml.safe_dump(record["space"], sort_keys=False)}
    return MlflowTracker(uri, exp.tracking.experiment_name or exp.name, run_dir.name, str(run_dir / STATE_FILE),
                         outcomes, parent_params=params, parent_tags=tags, artifacts=artifacts,
                         flush_interval_s=exp.tracking.flush_interval_s, flush_timeout_s=exp.tracking.flush_timeout_s,
                         hparam_schedule=spec.scheduler == "pbt", log_model=exp.tracking.log_model,
                         register_model=exp.tracking.register_model)


def _space_hash(exp: Experiment) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(exp.space.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)


# -- public API --------------------------------------------------------------------------------


def run(
    experiment: Experiment | dict[str, Any] | None = None,
    *,
    trainable: Callable[..., Any] | str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    **kwargs: Any,
) -> Results:
    """Run a search and return its :class:`~hpo.results.Results`.

    Accepts an :class:`~hpo.config.Experiment`, a dict in the experiment-file format, or the
    same keys as keyword arguments.

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
    _check_settings(exp)
    if exp.tracking.enabled:
        tracking_uri = tracking_uri_of(exp, tracking_uri)
    data = _load_data_meanwhile(exp)
    run_dir = Path(exp.storage_path).resolve() / f"{exp.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while run_dir.exists():
        run_dir = run_dir.with_name(f"{run_dir.name.rsplit('.', 1)[0]}.{suffix}")
        suffix += 1
    return _execute(exp, run_dir, address or exp.address, tracking_uri, restore=False,
                    fn=trainable if callable(trainable) else None, data=data)


def find_run_dir(name_or_path: str, storage_path: str = "hpo_results") -> Path:
    """A run directory from its path, or the newest run of a search name under ``storage_path``."""
    p = Path(name_or_path)
    if (p / STATE_FILE).exists():
        return p.resolve()
    root = Path(storage_path)
    candidates = sorted(
        (d for d in root.glob(f"{name_or_path}-*") if (d / STATE_FILE).exists()), key=lambda d: d.stat().st_mtime
    )
    if not candidates:
        raise HpoConfigError("resume", f"must name a run directory or a search under {root.resolve()}", name_or_path)
    return candidates[-1].resolve()


def resume(name_or_path: str, *, trainable: Callable[..., Any] | None = None, storage_path: str = "hpo_results",
           address: str | None = None, tracking_uri: str | None = None) -> Results:
    """Continue a killed or interrupted search in place: finished trials are kept, unfinished
    ones restart from their last checkpoint, MLflow runs continue without duplicates."""
    run_dir = find_run_dir(name_or_path, storage_path)
    state = json.loads((run_dir / STATE_FILE).read_text())
    record = state["experiment"]
    recorded_uri = state.get("tracking_uri")
    if tracking_uri and recorded_uri and tracking_uri != recorded_uri:
        raise HpoConfigError("--tracking-uri", f"must be the store the search is recorded in ({recorded_uri}) "
                             "to continue its runs", tracking_uri,
                             "Resume without it, then copy the search with `hpo sync-mlflow --tracking-uri`.")
    if trainable is not None:
        record["trainable"] = trainable
    exp = Experiment.from_dict(record)
    _check_settings(exp)
    data = _load_data_meanwhile(exp)
    return _execute(exp, run_dir, address or exp.address, tracking_uri or recorded_uri, restore=True, fn=trainable,
                    data=data)


def _execute(exp: Experiment, run_dir: Path, address: str | None, tracking_uri: str | None, *, restore: bool,
             fn: Callable[..., Any] | None, data: Future) -> Results:
    from ray import tune

    from hpo.packing import PackingSearcher, Unpacker
    from hpo.progress import Progress
    from hpo.strategies import TrialOutcomes, build_strategy

    num_samples = exp.resolved_num_samples()
    with _ray(address), _tune_env():
        dataset = data.result()  # its error, if any, ends the search here: Ray is shut down, nothing written
        trainable = _trainable(exp, fn, dataset)
        if restore and (run_dir / "tuner.pkl").exists():
            tuner = tune.Tuner.restore(str(run_dir), trainable, resume_unfinished=True, resume_errored=False)
            # The callbacks were pickled with the searcher and scheduler in one tuner.pkl, so
            # they still share one TrialOutcomes record; Ray exposes them only here.
            callbacks: Any = tuner._local_tuner.get_run_config().callbacks  # type: ignore[union-attr]
            callbacks = next((c.callbacks for c in callbacks if isinstance(c, Unpacker)), callbacks)
            collector: Any = next(c for c in callbacks if hasattr(c, "stop_all"))
            tracker = next((c for c in callbacks if hasattr(c, "finish")), None)
            outcomes = next(c for c in callbacks if isinstance(c, Progress)).outcomes
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_state(run_dir / STATE_FILE, {"experiment": exp.to_record(), "created": time.time()})
            outcomes = TrialOutcomes()
            searcher, scheduler = build_strategy(exp.strategy.spec(), exp.space, exp.metrics, exp.modes, exp.budget,
                                                 outcomes)
            collector = _collector_class()(exp.metrics, searcher, exp.epoch_budget, outcomes, exp.budget)
            tracker = _tracker(exp, run_dir, outcomes, tracking_uri) if exp.tracking.enabled else None
            from ray.tune.logger import JsonLoggerCallback

            # Ray's JSON logger keeps each trial's full result history on disk (params.json,
            # result.json): what `hpo sync-mlflow` replays. Its CSV/TensorBoard loggers stay off.
            callbacks = [collector, Progress(num_samples, exp.metrics[0], exp.modes[0], outcomes)]
            callbacks += [tracker] if tracker else []
            tune_samples = num_samples
            if exp.pack != 1 and not exp.unpackable:
                # Short trials share Ray trials; every hpo callback sees each one as its own trial.
                searcher = PackingSearcher(searcher, num_samples, exp.pack, adaptive=exp.strategy.searcher not in
                                           ("grid", "random", "sobol", "qmc"))
                collector.searcher = searcher
                callbacks, tune_samples = [Unpacker(callbacks)], -1  # the packing searcher counts trials
            callbacks.append(JsonLoggerCallback())
            single = len(exp.metrics) == 1
            from ray.tune.search import BasicVariantGenerator

            variants = isinstance(searcher, BasicVariantGenerator)  # PBT: Ray samples the space itself
            tuner = tune.Tuner(
                trainable,
                param_space=exp.space.to_ray() if variants else None,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    metric=exp.metrics[0] if single else None,
                    mode=exp.modes[0] if single else None,
                    num_samples=tune_samples,
                    max_concurrent_trials=exp.max_concurrent,
                    time_budget_s=exp.time_budget_s,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=run_dir.name,
                    storage_path=str(run_dir.parent),
                    callbacks=callbacks,
                    stop=collector,
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=exp.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=exp.keep_checkpoints or (4 if exp.strategy.scheduler == "pbt" else 2),
                        # top-k by the metric; Ray always keeps the latest too, so retries resume from it
                        checkpoint_score_attribute=exp.metrics[0] if single else None,
                        checkpoint_score_order=exp.modes[0] if single else "max",
                    ),
                ),
            )
        if tracker is not None:
            tracker.start()  # the writer opens the parent run in the background
        failed = True
        try:
            tuner.fit()
            failed = collector.error is not None
        finally:
            results = Results.from_trials(
                collector.trials, exp.name, exp.metrics, exp.modes, outcomes.as_dict(), str(run_dir),
                rungs=outcomes.rungs(),
                study=getattr(collector.searcher, "study", None),
            )
            if tracker is not None:
                tracker.begin_finish(results)  # leaderboard and plots while the best trial is recovered
            if not failed and exp.is_builtin and exp.task.get("test_best", True) and results.best_trial:
                from hpo.train.best import recover_best

                results.best_model_info = recover_best(results, builtin_task(exp), dataset,
                                                       {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu}, run_dir)
            _write_state(run_dir / TRIALS_FILE, {"trials": [asdict(t) for t in results.trials]})
            if tracker is not None:
                tracker.finish(results, failed=failed)
                results.mlflow_experiment_id, results.parent_run_id = tracker.experiment_id, tracker.parent_run_id
    if collector.error is not None:
        raise collector.error
    return results
