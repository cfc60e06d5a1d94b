"""How a search ends: budgets, interrupts, and the one end-of-trial path for trials it cuts short.

Ray Tune stops the running and pending trials of a search that ends early (``stop_all``, its own
time budget, Ctrl-C) through ``_schedule_trial_stop``, which tells neither the searcher nor the
callbacks: the trials would stay RUNNING in Optuna and MLflow and look completed in the results,
with partly-trained values. The :class:`Collector` is the search's stopper and first callback;
when it stops the search it ends every live trial itself, as ``cut`` (with its last step and the
reason), through the same path a finished trial takes: the searcher hears ``on_trial_complete``
(an Optuna trial is told PRUNED), every callback hears ``on_trial_complete`` (MLflow, progress).

What must survive ``hpo resume`` (epochs spent, time spent, every trial's outcome) is saved with
Ray's experiment state (``get_state``/``set_state``), so it always matches the trials Ray
resumes, and written to ``outcomes.json`` in the run directory for ``hpo sync-mlflow``.

This module is imported by reference when Ray unpickles a search: a resumed search runs the
code installed now, not a copy pickled with it.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from hpo._trials import error_text
from hpo.disk_space import Reserve, describe
from hpo.errors import MetricNotReportedError, mentions_disk_full
from hpo.rundir import OUTCOMES_FILE, write_json
from hpo.strategies import TrialOutcomes
from hpo.wire import (
    DISK_FULL_KEY,
    ERROR_KEY,
    NOT_METRICS,
    PRUNED_KEY,
    RUNG_KEY,
    STEP_KEY,
    SUB_KEY,
    is_packed,
    result_steps,
    split_result,
)

__all__ = ["DISK_FULL", "EXIT_CODES", "Collector", "CollectorStopper", "catch_signals", "resumes_as_interrupted"]

DISK_FULL = "disk full"  # what stopped a search whose storage path filled up (its stop reason adds the path)
# 128 + the signal's number, as shells report it; a full disk: EX_TEMPFAIL (sysexits.h), "try again later"
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, DISK_FULL: 75}
log = logging.getLogger("hpo")
_LIVE = ("PENDING", "RUNNING", "PAUSED")
# key -> the collector of a search running in this process (see CollectorStopper)
_COLLECTORS: weakref.WeakValueDictionary[str, Collector] = weakref.WeakValueDictionary()


class CollectorStopper(Stopper):
    """What Ray holds as the search's stopper: the collector's key and nothing else.

    Ray pickles its stopper into its own experiment state and, on resume, replaces the stopper it
    was given with that copy (Ray 2.60: ``TuneController.__setstate__``), while the callbacks stay
    the objects ``tuner.pkl`` restored. A stopper that held the collector would then count epochs
    and stop the search in a copy that no callback sees. This one finds the live collector by key.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, trial_id: str, result: dict) -> bool:
        collector = _COLLECTORS.get(self.key)
        return collector(trial_id, result) if collector is not None else False

    def stop_all(self) -> bool:
        collector = _COLLECTORS.get(self.key)
        return collector.stop_all() if collector is not None else False


class Collector(Callback):
    """The search's first callback, and (through :class:`CollectorStopper`) its stopper.

    Checks that every result carries the metrics; counts every trial's epochs for
    ``epoch_budget`` and the search's time for ``time_budget_s`` (both across resumes); stops
    the search on a budget, an interrupt, a full disk (:meth:`disk_is_full`) or a missing
    metric, and then ends every live trial as ``cut``.

    Args:
        metrics: the metrics every result must carry.
        searcher: the hpo searcher (its study, if any, is the search's; kept with the callbacks on resume).
        search_alg: what Ray drives: the searcher, or the concurrency limiter around it (told
            about cut trials, so a resumed search's limiter does not count them as running).
        outcomes: the shared record of pruned and cut trials.
        epoch_budget: stop once the trials together ran this many epochs.
        time_budget_s: stop after this many seconds of search (summed over resumes).
        trial_budget: a trial's own full budget (epochs), when known: a trial stopped at it completed.
        downstream: the callbacks after this one (told about cut trials like Ray would).
        unpacker: packing's :class:`~hpo.packing.Unpacker`, if trials are packed.
        run_dir: where ``outcomes.json`` is written.
    """

    def __init__(self, metrics: list[str], searcher: Any, outcomes: TrialOutcomes, *, search_alg: Any = None,
                 epoch_budget: int | None = None, time_budget_s: float | None = None,
                 trial_budget: int | None = None, downstream: list[Any] | None = None, unpacker: Any = None,
                 run_dir: str | None = None, trial_timeout_s: float | None = None) -> None:
        self.metrics = list(metrics)
        self.searcher = searcher
        self.search_alg = search_alg if search_alg is not None else searcher
        self.outcomes = outcomes
        self.epoch_budget = epoch_budget
        self.time_budget_s = time_budget_s
        self.trial_budget = trial_budget
        self.downstream = list(downstream or [])
        self.unpacker = unpacker
        self.run_dir = run_dir
        self.trial_timeout_s = trial_timeout_s
        self.epochs: dict[str, int] = {}  # trial id -> epochs it has run (its highest step)
        self.elapsed_s = 0.0  # search time of earlier runs of this search (before a resume)
        self.key = uuid.uuid4().hex
        self._runtime()

    def _runtime(self) -> None:
        self.error: MetricNotReportedError | None = None
        self.stop_reason: str | None = None
        self.interrupted: str | None = None
        self.disk_full: str | None = None  # the path whose write found the disk full, and its free space then
        self._reserve = Reserve(self.run_dir) if self.run_dir else None  # given back when the disk fills
        self.trials: list[Any] = []  # every trial at the end (packed ones as the trials they carry)
        self._ray_trials: list[Any] = []  # Ray's own list (kept current by Ray)
        self._iteration = 0
        self._started = time.monotonic()
        self._heard: dict[str, float] = {}  # running trial id -> when it started or last reported
        self._limit_checked = False  # the concurrency limit's count checked against Ray's trials
        _COLLECTORS[self.key] = self

    def stopper(self) -> CollectorStopper:
        """The stopper to give Ray for this collector."""
        return CollectorStopper(self.key)

    def __getstate__(self) -> dict[str, Any]:
        keep = ("metrics", "searcher", "search_alg", "outcomes", "epoch_budget", "time_budget_s", "trial_budget",
                "downstream", "unpacker", "run_dir", "epochs", "elapsed_s", "key")
        return {"trial_timeout_s": self.trial_timeout_s, **{k: self.__dict__[k] for k in keep}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime()

    # -- Ray's experiment state: what a resumed search continues from ---------------------------

    def get_state(self) -> dict[str, Any]:
        state = {"epochs": dict(self.epochs), "elapsed_s": self.search_time(), "outcomes": self.outcomes.state()}
        self._write_outcomes(state)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.epochs = {k: int(v) for k, v in state.get("epochs", {}).items()}
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        self.outcomes.load(state.get("outcomes", {}))
        self._started = time.monotonic()

    def search_time(self) -> float:
        return self.elapsed_s + time.monotonic() - self._started

    def _write_outcomes(self, state: dict[str, Any]) -> None:
        """``outcomes.json``: the same record, plus how each trial that ended so far ended."""
        if not self.run_dir or not Path(self.run_dir).is_dir():
            return
        ended = {}
        for t in self._expand(self._ray_trials):
            if t.status in ("TERMINATED", "ERROR"):
                ended[t.trial_id] = self.outcomes.status_of(t.trial_id, errored=t.status == "ERROR",
                                                            last=t.last_result, metrics=self.metrics)
        try:
            write_json(Path(self.run_dir) / OUTCOMES_FILE, {**state, "ended": ended, "stop_reason": self.stop_reason})
        except OSError:  # a full disk must not stop the search: Ray's own state still has it
            pass

    # -- Ray's callback hooks ---------------------------------------------------------------------

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self._started = time.monotonic()
        if self._reserve is not None and self.disk_full is None:
            self._reserve.take()

    def disk_is_full(self, path: str, detail: str | None = None) -> None:
        """A write of this search (hpo's, Ray's, a trial's checkpoint) found no space at ``path``:
        the search stops like an interrupt (running trials cut, records written) and gives back
        its reserve, so its last records fit. Called from any thread."""
        if self.disk_full is None:
            self.disk_full = f"{path} ({describe(path)}{'; ' + detail if detail else ''})"
            if self.interrupted is None:
                self.interrupted = DISK_FULL
        if self._reserve is not None:
            self._reserve.release()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._ray_trials, self._iteration = trials, iteration  # the same list object Ray appends to
        if not self._limit_checked:  # first step (a resumed search's restored state is in place)
            self._limit_checked = True
            from hpo._compat.ray import forget_unknown_live_trials

            stale = forget_unknown_live_trials(self.search_alg, [t.trial_id for t in trials if t.status in _LIVE])
            if stale:
                log.warning("hpo: the concurrency limit counted %d trial(s) the resumed search does not run "
                            "(%s); their places are free again", len(stale), ", ".join(stale))
        if self.trial_timeout_s is not None:
            self._end_silent(trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._heard[trial.trial_id] = time.monotonic()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check_disk(trial)  # then the search stops and cuts it instead of retrying it
        trial.hpo_error = None  # a retry: its own timeout, if any, is decided afresh
        self._heard.pop(trial.trial_id, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check_disk(trial)

    def _check_disk(self, trial: Any) -> None:
        """A trial that raised a full disk's ``OSError`` itself (its own writes, or a trainable
        that calls ``ray.tune.report`` without :func:`hpo.report`): the search stops before
        the next trials meet the same disk."""
        text = error_text(trial)
        if self.run_dir and mentions_disk_full(text):
            self.disk_is_full(self.run_dir, f"trial {trial.trial_id}: {text[:200]}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._heard[trial.trial_id] = time.monotonic()
        if DISK_FULL_KEY in result:  # its checkpoint did not fit (hpo.session): it is cut, not errored
            self.disk_is_full(self.run_dir or "storage_path", f"trial {trial.trial_id}'s checkpoint")
        if self.error is not None:
            return
        parts = [r for _, r in split_result(result)] if is_packed(trial.config) else [result]
        for part in parts:
            if ERROR_KEY in part:
                continue  # a packed trial's failure carries no metrics
            for m in self.metrics:
                if m not in part:
                    self.error = MetricNotReportedError(m, [k for k in part if k not in NOT_METRICS])
                    return

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._reserve is not None:
            self._reserve.release()  # the last writes (outcomes.json, trials.json, MLflow) may need it
        self._ray_trials = trials
        self.trials = self._expand(trials, started_only=True)
        self._write_outcomes({"epochs": dict(self.epochs), "elapsed_s": self.search_time(),
                              "outcomes": self.outcomes.state()})

    def _end_silent(self, trials: list) -> None:
        """``trial_timeout_s``: a running trial that has not reported for that long since its start
        or its last report is ended as errored — its actor killed, however it is stuck (Ray Tune
        itself only checks budgets when a trial reports). Ray retries it up to ``max_failures``."""
        from hpo._compat.ray import kill_trial_actor

        now = time.monotonic()
        for trial in trials:
            if trial.status != "RUNNING":
                continue
            since = self._heard.setdefault(trial.trial_id, now)  # (running when a resume began)
            assert self.trial_timeout_s is not None
            if now - since > self.trial_timeout_s and not getattr(trial, "hpo_error", None):
                trial.hpo_error = (f"timed out: no report for {self.trial_timeout_s:g} s (trial_timeout_s); "
                                   "its worker was stopped")
                if not kill_trial_actor(trial):
                    trial.hpo_error = None

    # -- the stopper's work (Ray calls it through CollectorStopper) -----------------------------

    def __call__(self, trial_id: str, result: dict) -> bool:
        # Ray Tune calls the stopper first with every result, before the scheduler, the searcher or
        # any callback: a stop the worker was told by the scheduler (hpo.decisions) is on record here.
        for step, entry in result_steps(result):  # a packed trial's steps carry their own trial's id
            key = entry.get(SUB_KEY, trial_id)
            if self.epoch_budget is not None:
                self.epochs[key] = max(self.epochs.get(key, 0), step)
            if RUNG_KEY in entry:
                self.outcomes.record_rung(key, *entry[RUNG_KEY])
            if PRUNED_KEY in entry:
                self.outcomes.record_pruned(key, entry[PRUNED_KEY])
        return False

    def interrupt(self, name: str) -> None:
        """A signal asked the search to stop: it ends at the next step of Ray's loop."""
        self.interrupted = name

    def stop_all(self) -> bool:
        if self.stop_reason is None:
            reason = self._why_stop()
            if reason is not None:
                self.stop_reason = reason
                self._cut_live(reason)
        return self.stop_reason is not None

    def _why_stop(self) -> str | None:
        if self.interrupted == DISK_FULL:
            return f"{DISK_FULL}: {self.disk_full}"
        if self.interrupted:
            return self.interrupted
        if self.error is not None:
            return "metric check"
        if self.epoch_budget is not None and sum(self.epochs.values()) >= self.epoch_budget:
            return "epoch budget"
        if self.time_budget_s is not None and self.search_time() >= self.time_budget_s:
            return "time budget"
        return None

    def _cut_live(self, reason: str) -> None:
        """End every live trial as cut, through the path Ray takes for a finished trial."""
        for trial in list(self._ray_trials):
            if trial.status not in _LIVE:
                continue
            ids = self.unpacker.unended(trial) if self.unpacker is not None and is_packed(trial.config) \
                else [trial.trial_id]
            for tid in ids:
                step = self._last_step(trial, tid)
                if self.trial_budget is None or step < self.trial_budget:  # at its full budget it completed
                    self.outcomes.record_cut(tid, step, reason)
            never_started = trial.status == "PENDING" and not is_packed(trial.config)
            try:
                self.search_alg.on_trial_complete(trial.trial_id, result=None, error=False)
            except Exception:  # noqa: BLE001 - a searcher's bookkeeping must not lose the other trials' records
                pass
            for cb in self.downstream:
                if never_started:
                    cb.on_trial_start(self._iteration, self._ray_trials, trial)  # so its record has its config
                cb.on_trial_complete(self._iteration, self._ray_trials, trial)

    def _last_step(self, trial: Any, tid: str) -> int:
        if tid in self.epochs:
            return self.epochs[tid]
        last = trial.last_result or {}
        if is_packed(trial.config):
            steps = [r.get(STEP_KEY, 0) for sid, r in split_result(last) if sid == tid]
            return int(steps[-1]) if steps else 0
        return int(last.get(STEP_KEY, last.get("training_iteration", 0)) or 0)

    def downstream_callbacks(self) -> list[Any]:
        """hpo's callbacks after this one (those packing's Unpacker passes events to, if any)."""
        return list(self.unpacker.callbacks) if self.unpacker is not None else list(self.downstream)

    def _expand(self, trials: list[Any], started_only: bool = False) -> list[Any]:
        return self.unpacker.expand(trials, started_only) if self.unpacker is not None else list(trials)


def resumes_as_interrupted(stop_reason: str | None) -> bool:
    """Whether a search that stopped for ``stop_reason`` goes on, when resumed, with the trials it
    had not started (a signal or a full disk stopped it; a budget or a finished search did not).

    Example:
        >>> resumes_as_interrupted("SIGINT"), resumes_as_interrupted("disk full: /runs/a"), resumes_as_interrupted(None)
        (True, True, False)
    """
    return bool(stop_reason) and str(stop_reason).split(":")[0] in EXIT_CODES


@contextmanager
def catch_signals(collector: Collector) -> Iterator[None]:
    """SIGINT/SIGTERM: the first stops the search cleanly (trials cut, records written); a second
    one exits at once, leaving the state saved so far for ``hpo resume``.

    Installed only from the main thread (Python delivers signals there); Ray's own SIGINT
    handler is switched off for the search (``TUNE_DISABLE_SIGINT_HANDLER``).
    """
    import os
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if collector.interrupted is None:
            collector.interrupt(name)
            print(f"\nhpo: {name} received: stopping the search (running trials are cut, records written); "
                  "send it again to exit at once", flush=True)
            return
        os._exit(EXIT_CODES.get(name, 1))  # the second one: the state saved so far is what resume uses

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
