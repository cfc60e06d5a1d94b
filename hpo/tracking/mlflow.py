"""Driver-side MLflow tracking: one parent run per search, one child run per trial, batched.

Ray's ``MLflowLoggerCallback`` makes one request per metric key per result and opens a new
run for every restored trial. This callback queues events on the driver and a background
thread writes them with ``log_batch``, off Tune's hot path; on resume it finds the existing
parent and child runs (by tags), replays every trial's steps from Ray's result files (skipping
those already logged) and ends every run whose trial ended, so nothing is lost or duplicated.

Each child run ends with the trial's terminal state (``hpo.strategies.STATUSES``):
completed -> FINISHED, pruned and cut -> KILLED, errored and diverged -> FAILED, with the
``hpo.status`` tag saying which (and at which step, for what reason).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ray.tune import Callback

from hpo._compat.mlflow import end_run
from hpo._compat.mlflow_sql import RunWrite, new_run_id, sql_store, write_runs
from hpo._compat.mlflow_sql import refused as refusal
from hpo._trials import error_text, status_text
from hpo.config import mask_url
from hpo.errors import is_disk_full
from hpo.leaderboard import run_link, value_history
from hpo.rundir import read_state, trial_histories, update_state
from hpo.strategies import TrialOutcomes
from hpo.tracking.sqlite_store import sqlite_init_lock
from hpo.wire import GPU_KEY, NODE_KEY, TIME_KEY, result_steps, trial_metrics

log = logging.getLogger("hpo.tracking")

TRIAL_TAG = "hpo.trial_id"
PARENT_TAG = "mlflow.parentRunId"
WINDOW_TAG = "hpo.last_write"  # the parent run: the token of the last flush window written together
TRIAL_VALUE, BEST_SO_FAR = "trial_value", "best_so_far"  # the parent run's optimization history
_MAX_PARAMS, _MAX_METRICS = 100, 1000
# a trial's terminal state -> its child run's MLflow status
_RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "cut": "KILLED", "errored": "FAILED",
               "diverged": "FAILED"}


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested keys become ``a.b``; values are strings MLflow accepts (6000 characters at most)."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_params(v, f"{key}."))
        else:
            out[key] = str(v)[:6000]
    return out


def _lower_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux applies nice per thread), so on a
    busy machine MLflow's writes take the time the trials leave over instead of theirs."""

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: normal priority
        pass


class _HandedOver(Exception):
    """The search ended while the low-priority writer was writing a batch: it stops between two
    requests and the end writes the whole batch again at normal priority (every write is
    idempotent: what MLflow has already is skipped)."""


class MlflowTracker(Callback):
    """A Tune callback that records the search in MLflow from the driver.

    Args:
        tracking_uri: MLflow tracking URI (SQLite file or ``http://`` server).
        experiment_name: MLflow experiment (one per search name).
        run_name: name of the parent run.
        state_path: JSON file in the search's storage directory where the parent run id is kept,
            so a resumed search continues the same parent run.
        outcomes: shared record of pruned and cut trials (for each trial's terminal state).
        metrics: the search's metrics (a NaN/inf one means the trial diverged).
        write_files: ``(results, directory, runs=)``: writes the files logged on the parent run at
            the end (leaderboard, plots); ``runs`` maps each trial to its child run (an
            :class:`~hpo.pages.Link` to its page on an http(s) server). Given by the caller, so
            tracking imports no plotting; its ``prepare()``, if it has one, is called by the writer
            (at the lowest CPU priority) once the store is open.
        model_logger: ``(tracking_uri, parent_run_id, best_model_info, register_as) -> model URI``:
            logs the best model (the caller's, so tracking imports no torch).
        parent_params: params and tags of the parent run (strategy, versions, ...).
        artifacts: file name -> text, logged on the parent run.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        run_name: str,
        state_path: str,
        outcomes: TrialOutcomes,
        parent_params: dict[str, Any] | None = None,
        parent_tags: dict[str, str] | None = None,
        artifacts: dict[str, str] | None = None,
        flush_interval_s: float = 2.0,
        flush_timeout_s: float = 120.0,
        hparam_schedule: bool = False,
        log_model: bool = True,
        register_model: str | None = None,
        metrics: list[str] | None = None,
        write_files: Callable[..., Any] | None = None,
        model_logger: Callable[[str, str, dict[str, Any], str | None], str] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.metrics = list(metrics or [])
        self.write_files = write_files
        self.model_logger = model_logger
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.state_path = state_path
        self.outcomes = outcomes
        self.parent_params = parent_params or {}
        self.parent_tags = parent_tags or {}
        self.artifacts = artifacts or {}
        self.flush_interval_s = flush_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.hparam_schedule = hparam_schedule  # PBT: configs change mid-trial; log hp.<name> per step
        self.log_model = log_model
        self.register_model = register_model
        self._reset()

    def _reset(self) -> None:
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._runs: dict[str, str] = {}  # trial id -> child run id
        self._closed: dict[str, str] = {}  # trial id -> status of a child run already ended in MLflow
        self._create_failed: set[str] = set()  # trials whose create request failed (it may still have created)
        self._logged_step: dict[str, int] = {}  # trial id -> last step already in MLflow
        self._params: dict[str, dict[str, str]] = {}  # trial id -> params already in MLflow (never changed)
        self._config: dict[str, dict[str, Any]] = {}  # trial id -> its current config
        self._jumps: dict[str, list[str]] = {}  # trial id -> PBT step jumps ("2->7")
        self._nodes: dict[str, list[str]] = {}  # trial id -> the nodes it reported from, in order
        self._queue: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self._pending: list[tuple[str, str, Any]] = []  # taken from the queue, not yet written
        self._writing = threading.Lock()  # held while a batch is written: the end takes it from the writer
        self._preparing = threading.Lock()  # held while the writer prepares the end's files (their imports)
        self._stop = threading.Event()
        self._go = threading.Event()  # the first result is in: time to connect (see start)
        self._thread: threading.Thread | None = None
        self._ending: threading.Thread | None = None  # end of the record, begun before finish (begin_finish)
        self._opened = threading.Event()  # the parent run is open, or the end gave up on it
        self._trials_logged = False
        self.unlogged: list[str] = []  # trials not recorded because the server stayed down
        self.refused: list[str] = []  # runs with a batch the store refused outright
        self._deadline = 0.0
        self._reconciled = False
        self._parent_unsaved = False  # hpo_state.json could not take the parent run yet (a full disk)
        self._artifact_root: str | None = None  # the experiment's artifact location (runs created together)
        self.together = True  # a database store: each flush window in one transaction (False: run by run)
        self._unsure: tuple[str, Callable[[], None]] | None = None  # a window written together that failed

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles callbacks into its experiment state: the URI goes there without its password;
        # a resume sets the real one again (``hpo.runner``)
        keep = ("experiment_name", "run_name", "state_path", "outcomes", "parent_params",
                "parent_tags", "artifacts", "flush_interval_s", "flush_timeout_s", "hparam_schedule",
                "log_model", "register_model", "metrics", "write_files", "model_logger")
        return {"tracking_uri": mask_url(self.tracking_uri), **{k: self.__dict__.get(k) for k in keep}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.metrics = list(self.metrics or [])
        self._reset()

    # -- set-up ----------------------------------------------------------------------------

    def _recorded_parent(self) -> str | None:
        """This search's parent run in *this* tracking store (a search copied to another store by
        ``hpo sync-mlflow --tracking-uri`` has a parent run of its own there)."""
        state = read_state(Path(self.state_path).parent)
        stores = state.get("mlflow") or {}
        mine = stores.get(mask_url(self.tracking_uri)) or stores.get(self.tracking_uri)  # (older states: unmasked)
        if mine:
            return str(mine["parent_run_id"])
        if state.get("parent_run_id") and state.get("tracking_uri") in (None, mask_url(self.tracking_uri)):
            return str(state["parent_run_id"])  # written by hpo before parents were kept per store
        return None

    def _save_parent_soon(self) -> None:
        """Record the parent run in ``hpo_state.json`` (``hpo resume`` continues that run); on a full
        disk, again at each flush until it fits (the search, stopping, gives back its reserve)."""
        try:
            self._save_parent()
            self._parent_unsaved = False
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            if not self._parent_unsaved:
                log.warning("hpo: parent run %s not yet recorded in %s (disk full); retrying", self.parent_run_id,
                            self.state_path)
            self._parent_unsaved = True

    def _save_parent(self) -> None:
        run_dir = Path(self.state_path).parent
        state = read_state(run_dir)
        stores = {**(state.get("mlflow") or {}),  # keyed by the URI with its password masked
                  mask_url(self.tracking_uri): {"parent_run_id": self.parent_run_id,
                                                "experiment_id": self.experiment_id}}
        updates: dict[str, Any] = {"mlflow": stores}
        if not state.get("tracking_uri"):  # the store the search itself records to (resume continues there)
            updates.update(parent_run_id=self.parent_run_id, mlflow_experiment_id=self.experiment_id,
                           tracking_uri=mask_url(self.tracking_uri))
        update_state(run_dir, **updates)

    def start(self, connect_after_s: float = 10.0) -> None:
        """Start the writer thread; it opens (or, on resume, reopens) the parent run first.

        Nothing here waits on the tracking server: if it is down, events queue up and the
        writer retries with backoff, so the search itself never waits for MLflow. The writer
        imports MLflow and opens the store (a fresh SQLite file runs MLflow's migrations: seconds
        of CPU) only once the first trial result is in, or ``connect_after_s`` has passed, so
        that work does not delay the first trials on a small machine.
        """
        if self._thread is not None:
            return

        # Fail fast per request and let the writer's own backoff do the waiting.
        for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")):
            os.environ.setdefault(var, value)
        self._thread = threading.Thread(target=self._loop, args=(connect_after_s,), name="hpo-mlflow", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        if self.client is None:
            from mlflow.tracking import MlflowClient

            with sqlite_init_lock(self.tracking_uri):
                client = MlflowClient(tracking_uri=self.tracking_uri)
                client.search_experiments(max_results=1)  # creates (migrates) a new store under the lock
            self.client = client

    def _open(self) -> None:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        self.experiment_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(
                self.experiment_name, tags={"mlflow.experimentKind": "custom_model_development"}
            )
        )
        parent = self._recorded_parent()
        if parent:
            self.client.update_run(parent, status="RUNNING")
            self.parent_run_id = parent
            self._find_children()
        else:
            run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=self.parent_tags)
            self.parent_run_id = run.info.run_id
            self._save_parent_soon()
            self._log_batch(self.parent_run_id, params=flatten_params(self.parent_params))
            for name, text in self.artifacts.items():
                self.client.log_text(self.parent_run_id, text, name)
        self._opened.set()

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.start()

    def _find_children(self) -> None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{PARENT_TAG} = '{self.parent_run_id}'", max_results=50000
        )
        for r in runs:
            tid = r.data.tags.get(TRIAL_TAG)
            if tid:
                self._runs[tid] = r.info.run_id
                self._params[tid] = dict(r.data.params)
                steps = [m.step for k in r.data.metrics for m in self.client.get_metric_history(r.info.run_id, k)]
                self._logged_step[tid] = max(steps, default=0)
                if r.info.status != "RUNNING":
                    self._closed[tid] = r.data.tags.get("hpo.status", "")
                nodes = r.data.tags.get("hpo.nodes") or r.data.tags.get("hpo.node")
                if nodes:
                    self._nodes[tid] = nodes.split(",")

    # -- Tune events (driver thread: enqueue only) ------------------------------------------

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._reconcile(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._reconcile(trials)  # a resumed search whose trials had all ended runs no step

    def _reconcile(self, trials: list) -> None:
        """Once per (resumed) search: Ray's trials against the child runs already in MLflow.

        Every trial Ray knows gets its child run, with every step Ray's result files hold (steps
        already logged are skipped), and every trial that ended gets its end written, even one
        whose run a killed search never got to create.
        """
        if self._reconciled:
            return
        self._reconciled = True
        ended = {t.trial_id: self._end_of(t, errored=t.status == "ERROR")
                 for t in trials if t.status in ("TERMINATED", "ERROR")}
        configs = {t.trial_id: dict(t.config or {}) for t in trials}
        self._queue.put(("reconcile", "", (configs, ended)))

    def _end_of(self, trial: Any, errored: bool) -> tuple[str, str | None]:
        """(terminal state, error text): decided once, by the search's outcomes."""
        status = self.outcomes.status_of(trial.trial_id, errored=errored, last=trial.last_result,
                                         metrics=self.metrics)
        return status, error_text(trial) if errored else None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._queue.put(("start", trial.trial_id, (trial.trial_id, dict(trial.config))))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._queue.put(("result", trial.trial_id, result))
        self._go.set()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._queue.put(("end", trial.trial_id, self._end_of(trial, errored=False)))
        self._go.set()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._queue.put(("end", trial.trial_id, self._end_of(trial, errored=True)))
        self._go.set()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The trial's run failed (its node was lost, its worker died) and Ray restarts it."""
        self._queue.put(("retry", trial.trial_id, int(getattr(trial, "num_failures", 0) or 0)))

    def replay(self, trial_id: str, config: dict[str, Any], results: list[dict[str, Any]],
               end: tuple[str, str | None] | None) -> None:
        """Queue a whole trial read back from Ray's storage (``hpo sync-mlflow``); ``end`` is its
        saved terminal state and error text, or None for a trial a killed search left unfinished."""
        self._queue.put(("start", trial_id, (trial_id, config)))
        for result in results:
            self._queue.put(("result", trial_id, result))
        if end is not None:
            self._queue.put(("end", trial_id, end))

    # -- background writer -------------------------------------------------------------------

    def _loop(self, connect_after_s: float = 0.0) -> None:
        self._go.wait(connect_after_s)
        # Opening the store (importing MLflow; a new SQLite file's migrations: seconds of CPU) at
        # normal priority: at the lowest, a busy machine starved it until the search ended, and
        # the search's end waited for it. The writes then take what the trials leave over.
        with self._writing:
            if not self._stop.is_set():
                try:
                    self._connect()
                    self._open()
                except Exception as exc:  # retried by the writes below
                    self._unavailable(exc, 0)
        _lower_priority()
        prepare = getattr(self.write_files, "prepare", None)
        # Under a lock the end's files take too: the end's thread importing matplotlib while this
        # thread, starved at the lowest priority, is still importing it, can fail on Python's
        # import lock between threads. The end waits instead (the trials are over: this thread runs).
        with self._preparing:
            if prepare is not None and not self._stop.is_set():
                try:
                    prepare()  # the end's files cost less (the caller's: tracking imports no plotting)
                except Exception as exc:  # noqa: BLE001  (the end pays for it then)
                    log.debug("hpo: preparing the search's files failed: %s", exc)
        self._writes(final=False)

    def _unavailable(self, exc: Exception, backoff: float) -> None:
        log.warning("MLflow at %s unavailable (%s); retrying in %.0f s", mask_url(self.tracking_uri),
                    mask_url(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200], backoff)

    def _writes(self, final: bool) -> None:
        """Write the queued events. During the search (``final`` False: the writer thread, at the
        lowest CPU priority) a batch every flush window, until the search ends; what is left then
        is written at the end (``final``: :meth:`_end_trials`, at normal priority, so a busy
        machine cannot starve the search's last records), retrying a down server until the
        deadline, then naming in ``unlogged`` the trials it could not record."""
        backoff = 1.0
        while True:
            if not final and self._stop.wait(self.flush_interval_s if self.parent_run_id else 0):
                return  # the search ended: the rest is written at normal priority
            if final:  # the caller holds the writing lock
                failure = self._write_pending(final)
            else:
                with self._writing:
                    if self._stop.is_set():
                        return
                    try:
                        failure = self._write_pending(final)
                    except _HandedOver:
                        return
            if failure is None:
                if final:
                    return
                backoff = 1.0
                continue
            self._unavailable(failure, backoff)  # the server is down or slow: keep the events, retry
            if final and time.monotonic() > self._deadline:
                self.unlogged = sorted({tid for _, tid, _ in self._pending if tid})
                return
            if final:
                time.sleep(backoff)
            else:
                self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _write_pending(self, final: bool) -> Exception | None:
        """One batch: everything queued so far (with what an earlier failure left); the failure, if
        any. Not ``final``: raises :class:`_HandedOver` between two requests once the search ends."""
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            if self.parent_run_id is None or self.experiment_id is None:
                self._connect()
                self._open()
            if self._parent_unsaved:
                self._save_parent_soon()
            # A resumed search's reconciliation is done once: a window retried after a failed
            # request must not take the runs its first try created for orphans and delete them.
            self._pending = self._expanded(self._pending)
            self._write(self._pending, handover=not final)
        except _HandedOver:
            raise
        except Exception as exc:
            return exc
        self._pending = []
        return None

    def _child(self, trial_id: str) -> str:
        run_id = self._runs.get(trial_id)
        if run_id is None and trial_id in self._create_failed:
            # A create that timed out may have created the run all the same: look before creating.
            found = self.client.search_runs(
                [self.experiment_id], max_results=1,
                filter_string=f"tags.{PARENT_TAG} = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'")
            if found:
                run_id = self._runs[trial_id] = found[0].info.run_id
        if run_id is None:
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id, "hpo.status": "running"}
            self._create_failed.add(trial_id)
            run = self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags)
            self._create_failed.discard(trial_id)
            run_id = self._runs[trial_id] = run.info.run_id
        return run_id

    def _write(self, events: list[tuple[str, str, Any]], handover: bool = False) -> None:
        """Write one flush window: per trial at most one create, one batch and one end request.
        With ``handover``, stop between two requests once the search ends (:class:`_HandedOver`)."""

        def request_next() -> None:
            if handover and self._stop.is_set():
                raise _HandedOver

        params: dict[str, dict[str, str]] = {}
        metrics: dict[str, list[Any]] = {}
        tags: dict[str, dict[str, str]] = {}
        ends: dict[str, tuple[str, str | None]] = {}
        steps: dict[str, int] = {}
        starts: set[str] = set()
        from mlflow.entities import Metric

        store = sql_store(self.client) if self.together else None  # a database: one transaction per window
        self._settle_window()

        events = self._expanded(events)
        for kind, tid, payload in events:
            if kind == "start":
                if store is None:
                    request_next()
                    self._child(tid)
                starts.add(tid)
                self._config[tid] = payload[1]
                flat = flatten_params(payload[1])
                # A param is logged once (MLflow refuses changes): PBT's later values become hp.* metrics.
                logged = {**self._params.get(tid, {}), **params.get(tid, {})}
                new = {k: v for k, v in flat.items() if k not in logged}
                if new:
                    params.setdefault(tid, {}).update(new)  # rides along with the trial's first batch
            elif kind == "result":
                fresh = False
                for step, entry in result_steps(payload):  # one result may carry several epochs
                    prev = steps.get(tid, self._logged_step.get(tid, 0))
                    if step <= prev:
                        continue  # already in MLflow (a restored trial replays from its checkpoint)
                    ts = int((entry.get(TIME_KEY) or entry.get("timestamp") or time.time()) * 1000)
                    values = trial_metrics(entry)
                    if self.hparam_schedule and prev and step > prev + 1:
                        # PBT: this trial continued from a better trial's later checkpoint.
                        jumps = self._jumps.setdefault(tid, [])
                        if f"{prev}->{step}" not in jumps:  # a batch written again (a retry, a handover)
                            jumps.append(f"{prev}->{step}")
                        tags.setdefault(tid, {})["hpo.pbt.jumps"] = ",".join(jumps)
                    if self.hparam_schedule:
                        values.update({f"hp.{k}": float(v) for k, v in self._config.get(tid, {}).items()
                                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
                    for k, v in values.items():
                        metrics.setdefault(tid, []).append(
                            Metric(k, v if math.isfinite(v) else float("nan"), ts, step))
                    steps[tid], fresh = step, True
                if not fresh:
                    continue  # all of it is in MLflow already (a resumed search's replay): no request
                node = str(payload.get(NODE_KEY) or payload.get("node_ip"))
                tags.setdefault(tid, {}).update({"hpo.node": node, "hpo.last_step": str(steps[tid])})
                nodes = self._nodes.setdefault(tid, [])
                if not nodes or nodes[-1] != node:
                    nodes.append(node)
                if len(nodes) > 1:  # the trial moved (a retry on another node): every node, in order
                    tags[tid]["hpo.nodes"] = ",".join(nodes)[:5000]
                if payload.get(GPU_KEY):
                    tags[tid]["hpo.gpu"] = str(payload[GPU_KEY])
            elif kind == "retry":
                tags.setdefault(tid, {})["hpo.retries"] = str(payload)
            else:
                ends[tid] = payload
        run_status: dict[str, str] = {}
        for tid, (status, error) in ends.items():
            text, run_status[tid] = self._status_text(tid, status, error), _RUN_STATUS[status]
            if self._closed.get(tid) == text:
                run_status.pop(tid)  # ended in MLflow already, exactly so (a resumed search's replay)
                continue
            tags.setdefault(tid, {})["hpo.status"] = text
            rung = self.outcomes.rung_of(tid)
            if rung is not None:  # the highest ASHA rung the trial was recorded at
                tags[tid].update({"hpo.rung": str(rung[0]), "hpo.rung_epoch": str(rung[1])})
        one_by_one = params.keys() | metrics.keys() | tags.keys()
        if store is not None:
            request_next()
            one_by_one = self._write_together(store, starts, params, metrics, tags, run_status, steps)
        for tid in one_by_one:
            request_next()
            self._log_batch(self._child(tid), params=params.get(tid), metrics=metrics.get(tid), tags=tags.get(tid))
            if tid in params:
                self._params.setdefault(tid, {}).update(params[tid])
            if tid in steps:
                self._logged_step[tid] = steps[tid]  # only once written: a retry resends, never skips
        for tid, status in run_status.items():
            if store is None or tid in one_by_one:
                request_next()
                end_run(self.client, self._child(tid), status)
                self._closed[tid] = tags[tid]["hpo.status"]

    def _write_together(self, store: Any, starts: set[str], params: dict[str, dict[str, str]],
                        metrics: dict[str, list[Any]], tags: dict[str, dict[str, str]],
                        run_status: dict[str, str], steps: dict[str, int]) -> set[str]:
        """One flush window for every trial in one transaction of a database store
        (:mod:`hpo._compat.mlflow_sql`): runs created, params, metrics, tags and ends. Returns
        the trials whose data MLflow's validators refuse: those go one request at a time (which
        writes what it can and names the refused run), exactly as on a server.

        The transaction also tags the parent run with a token of its own: when it fails, the
        writer's next window reads that tag back (:meth:`_settle_window`), so a commit whose
        answer was lost is known to have happened and nothing is written twice."""
        tids = sorted(starts | params.keys() | metrics.keys() | tags.keys() | run_status.keys())
        for tid in tids:
            if tid not in self._runs and tid in self._create_failed:
                self._child(tid)  # a create made one by one may have committed after all: look first
        new = {tid: new_run_id() for tid in tids if tid not in self._runs}
        writes, refused = [], set()
        for tid in tids:
            first = ({PARENT_TAG: self.parent_run_id or "", TRIAL_TAG: tid, "hpo.status": "running"}
                     if tid in new else {})
            write = RunWrite(self._runs.get(tid) or new[tid], name=tid, create=tid in new, params=params.get(tid, {}),
                             metrics=metrics.get(tid, []), tags={**first, **tags.get(tid, {})},
                             status=run_status.get(tid))
            if refusal(write):
                refused.add(tid)
                write = RunWrite(write.run_id, name=tid, create=write.create, tags=first)
            writes.append(write)
        token = new_run_id()
        writes.append(RunWrite(str(self.parent_run_id), tags={WINDOW_TAG: token}))
        if self._artifact_root is None:
            self._artifact_root = self.client.get_experiment(self.experiment_id).artifact_location

        def written() -> None:
            self._runs.update(new)
            for tid in set(params) - refused:
                self._params.setdefault(tid, {}).update(params[tid])
            for tid in set(steps) - refused:
                self._logged_step[tid] = steps[tid]
            for tid in set(run_status) - refused:
                self._closed[tid] = tags[tid]["hpo.status"]

        self._unsure = (token, written)
        write_runs(store, str(self.experiment_id), self._artifact_root, writes)
        self._unsure = None
        written()
        return refused

    def _settle_window(self) -> None:
        """After a window written together failed: did it commit all the same (its answer lost)?
        Its parent-run token says; if so it counts as written, so the retry adds nothing twice."""
        if self._unsure is None:
            return
        token, written = self._unsure
        if self.client.get_run(str(self.parent_run_id)).data.tags.get(WINDOW_TAG) == token:
            written()
        self._unsure = None

    def _status_text(self, tid: str, status: str, error: str | None) -> str:
        """The ``hpo.status`` tag: the terminal state, with its step, reason or error."""
        return status_text(status, error, self.outcomes.pruned_at(tid), self.outcomes.cut_of(tid))

    def _expanded(self, events: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
        """The events, with a reconciliation (:meth:`_reconcile`) replaced by what it finds."""
        return [e for kind, tid, payload in events
                for e in (self._reconciled_events(*payload) if kind == "reconcile" else [(kind, tid, payload)])]

    def _reconciled_events(self, configs: dict[str, dict[str, Any]],
                           ended: dict[str, tuple[str, str | None]]) -> list[tuple[str, str, Any]]:
        """A resumed search's first events: orphans dropped; for every trial Ray knows its start,
        every step Ray's result files hold, and its end if it ended (writer thread: file reads)."""
        self._drop_orphans(set(configs))
        histories = trial_histories(Path(self.state_path).parent) if self._runs or ended else {}
        out: list[tuple[str, str, Any]] = []
        for tid, config in configs.items():
            history = histories.get(tid, (config, []))[1]
            if tid not in self._runs and not history and tid not in ended:
                continue  # not started yet: its own start event comes when it does
            out.append(("start", tid, (tid, config)))
            out.extend(("result", tid, r) for r in history)
            if tid in ended:
                out.append(("end", tid, ended[tid]))
        return out

    def _log_results(self, parent: str, results: Any) -> None:
        """The files ``write_files`` makes of the results (leaderboard, plots) on the parent run."""
        if self.write_files is None:
            return
        import tempfile

        runs = {tid: run_link(self.tracking_uri, self.experiment_id, run_id) for tid, run_id in self._runs.items()}
        with self._preparing, tempfile.TemporaryDirectory(prefix="hpo-mlflow-") as tmp:
            self.write_files(results, Path(tmp), runs=runs)
            self.client.log_artifacts(parent, tmp)

    def _drop_orphans(self, known: set[str]) -> None:
        """A search killed between two of Ray's state saves forgets its newest trials, and runs
        new ones in their place on resume: delete their child runs so no trial is recorded twice."""
        for tid in [t for t in self._runs if t not in known]:
            run_id = self._runs.pop(tid)
            if tid not in self._closed:
                end_run(self.client, run_id, "KILLED")  # nothing in the store, deleted or not, stays RUNNING
            self.client.delete_run(run_id)
            # what was written to the deleted run: a run made again for this id gets all of it again
            for written in (self._logged_step, self._params, self._closed, self._nodes, self._jumps):
                written.pop(tid, None)

    def _log_batch(self, run_id: str, params: dict[str, str] | None = None, metrics: list | None = None,
                   tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Param, RunTag

        p = [Param(k, v) for k, v in (params or {}).items()]
        m = list(metrics or [])
        t = [RunTag(k, v) for k, v in (tags or {}).items()]
        while p or m or t:
            try:
                self.client.log_batch(run_id, params=p[:_MAX_PARAMS], metrics=m[:_MAX_METRICS],
                                      tags=t[:_MAX_PARAMS])
            except Exception as exc:
                if getattr(exc, "error_code", None) != "INVALID_PARAMETER_VALUE":
                    raise  # the server is down or slow: the writer retries with backoff
                # The store refuses these values and always will: retrying would stall the search's end.
                log.warning("MLflow refused a batch for run %s (not retried): %s", run_id, mask_url(str(exc))[:300])
                self.refused.append(run_id)
            p, m, t = p[_MAX_PARAMS:], m[_MAX_METRICS:], t[_MAX_PARAMS:]

    # -- end -----------------------------------------------------------------------------------

    def begin_finish(self, results: Any) -> None:
        """Start the end of the search's record in the background: flush every trial, then the
        leaderboard, plots and best-trial tags on the parent run. Call it as soon as the trials
        are done, so this overlaps with recovering the best trial; :meth:`finish` completes it."""
        if self._thread is None or self._ending is not None:
            return
        self._deadline = time.monotonic() + self.flush_timeout_s  # keep retrying a down server until then
        self._stop.set()
        self._go.set()
        self._ending = threading.Thread(target=self._end_trials, args=(results,), name="hpo-mlflow-end", daemon=True)
        self._ending.start()

    def _end_trials(self, results: Any) -> None:
        try:
            self._end_record(results)
        finally:
            self._opened.set()  # a model waiting for the parent run waits no more

    def _end_record(self, results: Any) -> None:
        # The writer thread writes no more once it sees the stop; a batch it is writing finishes
        # first. Not waiting for the thread itself: on a busy machine it may not run for seconds.
        if not self._writing.acquire(timeout=self.flush_timeout_s + 30):
            return
        try:
            self._writes(final=True)
        finally:
            self._writing.release()
        if self.unlogged or self.parent_run_id is None:
            return
        parent = self.parent_run_id
        summary = results.summary()
        try:
            self._log_results(parent, results)
            self._log_batch(parent, tags={
                "hpo.best_config": json.dumps(summary.get("best_config") or {}, default=str)[:5000],
                "hpo.num_trials": str(summary.get("num_trials")),
                "hpo.num_pruned": str(summary.get("num_pruned")),
                "hpo.num_errored": str(summary.get("num_errored")),
            })
            metric = summary.get("best_metric")
            name = f"best_{results.metric}"
            already = self.client.get_run(parent).data.metrics.get(name) == metric  # a replay logs it once
            if isinstance(metric, (int, float)) and math.isfinite(metric) and not already:
                from mlflow.entities import Metric

                self._log_batch(parent, metrics=[Metric(name, float(metric), int(time.time() * 1000), 0)])
            self._trials_logged = True
        except Exception as exc:
            log.warning("MLflow could not record the search summary: %s", mask_url(str(exc)))
            return
        try:
            self._log_history(parent, results)
        except Exception as exc:  # the summary, model and run status still follow
            log.warning("MLflow could not record the optimization history: %s", mask_url(str(exc)))

    def _log_history(self, parent: str, results: Any) -> None:
        """The optimization history as parent-run metrics MLflow's charts draw by themselves:
        ``trial_value`` (each trial's value where it stopped) and ``best_so_far`` (the best completed
        value up to that trial), step = the trial's number (:func:`hpo.leaderboard.value_history`),
        timestamp = when the trial reported that value. A step already logged is not logged again,
        so a resumed search or ``hpo sync-mlflow`` adds only its new trials."""
        from mlflow.entities import Metric

        now, points, out = time.time(), value_history(results), []
        for name, attr in ((TRIAL_VALUE, "value"), (BEST_SO_FAR, "best")):
            logged = {m.step for m in self.client.get_metric_history(parent, name)}
            out += [Metric(name, getattr(p, attr), int((p.time or now) * 1000), p.number)
                    for p in points if getattr(p, attr) is not None and p.number not in logged]
        self._log_batch(parent, metrics=out)

    def finish(self, results: Any, failed: bool = False, killed: bool = False) -> None:
        """Flush everything, record the search's outcome on the parent run and close it.

        Waits at most ``flush_timeout_s`` for a slow or absent server; what could not be written
        is named in a warning. The best model is logged while the trials' last records, the
        leaderboard and the plots are written (the model logger may do it in a process of its own).
        """
        if self._thread is None:
            return
        self.begin_finish(results)
        assert self._ending is not None
        info: dict[str, Any] = getattr(results, "best_model_info", None) or {}
        logs_model = bool(info) and self.log_model and self.model_logger is not None
        model = self._log_model_soon(info) if logs_model else None
        self._ending.join(self.flush_timeout_s + 60)
        if self._ending.is_alive() or self.unlogged or self.parent_run_id is None:
            waiting = [*self._pending, *list(self._queue.queue)]
            missing = self.unlogged or sorted({tid for _, tid, _ in waiting if tid}) or ["the search"]
            log.warning("MLflow at %s did not record %s", mask_url(self.tracking_uri), ", ".join(missing))
            self._settle(model)
            return
        if not self._trials_logged:
            self._settle(model)
            return  # the summary could not be written: warned already
        parent = self.parent_run_id
        summary = {**results.summary(), "metric": results.metric}
        try:
            self.client.log_text(parent, json.dumps(summary, indent=2, default=str), "summary.json")
            tested = info.get("test_metrics") or {}
            if tested:  # the best trial's held-out test scores, on the search's run
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                done = self.client.get_run(parent).data.metrics
                self._log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in tested.items()
                                                 if done.get(k) != v and math.isfinite(v)])
            if logs_model:
                assert model is not None
                uri, logged = model.result()
                info.update(logged)
                info["mlflow_model_uri"] = uri
                self._log_batch(parent, tags={"hpo.best_model_uri": uri,
                                              "hpo.best_trial_id": str(info.get("trial_id"))})
            if results.stop_reason:
                self._log_batch(parent, tags={"hpo.stop_reason": str(results.stop_reason)})
            end_run(self.client, parent, "KILLED" if killed else "FAILED" if failed else "FINISHED")
        except Exception as exc:
            log.warning("MLflow could not record the search summary: %s", mask_url(str(exc)))

    def _log_model_soon(self, info: dict[str, Any]) -> Future:
        """The model logger's call, in a thread, once the parent run is open: (model URI, the
        model's info as it updated it). It works on a copy of ``info``, which the records being
        written meanwhile read."""
        future: Future = Future()
        assert self.model_logger is not None
        logger = self.model_logger

        def run() -> None:
            copy = dict(info)
            try:
                self._opened.wait(self.flush_timeout_s + 60)
                if self.parent_run_id is None:
                    raise RuntimeError("the search's parent run could not be opened")
                future.set_result((logger(self.tracking_uri, self.parent_run_id, copy, self.register_model), copy))
            except BaseException as exc:  # raised where the result is asked for
                future.set_exception(exc)

        threading.Thread(target=run, name="hpo-mlflow-model", daemon=True).start()
        return future

    def _settle(self, model: Future | None) -> None:
        """Wait for a model being logged whose search record could not be completed (its own
        failure was warned about with the rest)."""
        if model is not None:
            try:
                model.result(timeout=self.flush_timeout_s)
            except Exception:  # noqa: BLE001, S110
                pass
