"""The search's Optuna study as a file in its run directory, ``optuna.journal``, so
``optuna-dashboard`` (``hpo dashboard``) and any Optuna tool open every search the same way.

The study is built from the search's own records — every trial of ``trials.json`` (or, for a
search that never got to write it, ``outcomes.json``) with its per-epoch results from Ray's
result files, packed trials split out — so it holds every searcher's trials: grid, random,
Sobol and plug-in Ray searchers as well as Optuna's samplers. Its states follow the terminal
state of each trial, as everywhere else in hpo:

=============  ================================================================
``completed``  COMPLETE, with the value of each metric
``pruned``     PRUNED, with its intermediate values (the first metric, per epoch) and,
               as Optuna's ``tell`` gives a pruned trial, the last of them as its value
``cut``        PRUNED, the same
``errored``    FAIL
``diverged``   FAIL
=============  ================================================================

A completed trial missing a finite value of a metric is FAIL, as the Optuna searcher tells it.
Each trial carries its parameters with their Optuna distributions (the space's, as the Optuna
searcher uses them: non-primitive choices by index), the user attributes ``hpo.trial_id``,
``hpo.status`` (the MLflow ``hpo.status`` text), ``hpo.node``, ``hpo.steps`` and ``hpo.config``
(the whole configuration as JSON, fixed values included), and its start and end times from its
reports. The study is named after the search, with its directions and metric names.

The file is an export, written whole at the end of every search (also one a budget, a signal or
a missing metric stopped) and rewritten by ``hpo resume`` and ``hpo sync-mlflow``: written to a
temporary file in the run directory and renamed into place, never appended to. Nothing reads it
to resume a search. An Optuna searcher's own study (``Results.study``; a nightly lineage's in
its database) is not copied: it may hold other searches' trials (earlier nights), and a trial's
state there is the same as here.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hpo._trials import status_text
from hpo.results import TrialRecord
from hpo.rundir import OUTCOMES_FILE, read_json, saved_records, trial_histories
from hpo.wire import NODE_KEY, STARTED_KEY, STEP_KEY, TIME_KEY, result_steps, trial_metrics

__all__ = ["STUDY_FILE", "export_study", "study_path", "write_study"]

STUDY_FILE = "optuna.journal"  # an Optuna JournalStorage file (JournalFileBackend)

log = logging.getLogger("hpo")

_STATES = {"completed": "COMPLETE", "pruned": "PRUNED", "cut": "PRUNED", "errored": "FAIL", "diverged": "FAIL"}
_PRIMITIVES = (type(None), bool, int, float, str)


def study_path(run_dir: str | os.PathLike[str]) -> Path:
    """Where a search's study file is: ``<run_dir>/optuna.journal``."""
    return Path(run_dir) / STUDY_FILE


def export_study(run_dir: str | os.PathLike[str], exp: Any,
                 records: Iterable[TrialRecord] | None = None) -> Path | None:
    """:func:`write_study`, with a failure logged as a warning instead of raised: the study is
    an extra view of records already written, and never stops a search from finishing them."""
    try:
        return write_study(run_dir, exp, records)
    except Exception as exc:  # noqa: BLE001 - an export; the search's own records are written
        log.warning("hpo: could not write the Optuna study %s: %s", study_path(run_dir), exc)
        return None


def write_study(run_dir: str | os.PathLike[str], exp: Any, records: Iterable[TrialRecord] | None = None) -> Path:
    """Write the search's Optuna study to ``<run_dir>/optuna.journal`` (replacing one there) and
    return its path.

    Args:
        run_dir: the search's run directory (Ray's per-trial ``result.json`` files are read from it).
        exp: the search's :class:`~hpo.config.Experiment` (name, space, metrics, modes, strategy).
        records: its trial records; default: ``trials.json``, else what ``outcomes.json`` and the
            result files say (a killed search: its unended trials are RUNNING).

    Example:
        >>> import optuna
        >>> path = write_study(run_dir, exp)  # doctest: +SKIP
        >>> optuna.load_study(study_name=exp.name, storage=optuna.storages.JournalStorage(
        ...     optuna.storages.journal.JournalFileBackend(str(path)))).trials  # doctest: +SKIP
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    run_dir = Path(run_dir)
    histories = trial_histories(run_dir)
    records = list(records) if records is not None else _saved_records(run_dir, histories)
    fallback, dists = _latest_report(histories), exp.space.to_optuna()
    trials = [_frozen_trial(r, histories.get(r.trial_id, ({}, []))[1], exp, dists, fallback)
              for r in sorted(records, key=lambda r: _order(r.trial_id, histories))]
    buffer = _buffer()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line at every search's end
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is experimental in Optuna 5
            study = optuna.create_study(storage=JournalStorage(buffer), study_name=exp.name,
                                        directions=["maximize" if m == "max" else "minimize" for m in exp.modes])
            study.set_metric_names(list(exp.metrics))
        for key, value in (("hpo.searcher", exp.strategy.searcher), ("hpo.scheduler", exp.strategy.scheduler),
                           ("hpo.run_dir", str(run_dir.resolve()))):
            study.set_user_attr(key, str(value))
        study.add_trials(trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    path = study_path(run_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{STUDY_FILE}.", suffix=".tmp", dir=run_dir)
    os.close(fd)
    try:
        JournalFileBackend(tmp).append_logs(buffer.logs)  # Optuna's own file format, in one write
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _buffer() -> Any:
    """A journal backend in memory: the study is built there, then written to the file at once
    (Optuna's file backend syncs the file to disk at every trial added)."""
    from optuna.storages.journal import BaseJournalBackend

    class Buffer(BaseJournalBackend):
        def __init__(self) -> None:
            self.logs: list[dict[str, Any]] = []

        def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
            return self.logs[log_number_from:]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            self.logs.extend(logs)

    return Buffer()


def _frozen_trial(r: TrialRecord, history: list[dict[str, Any]], exp: Any, space_dists: dict[str, Any],
                  fallback: float | None) -> Any:
    """The record as an Optuna ``FrozenTrial`` (validated by Optuna)."""
    from optuna.trial import TrialState, create_trial

    state = TrialState[_STATES.get(r.status, "RUNNING")]
    values = None
    if state == TrialState.COMPLETE:
        raw = [r.metrics.get(m) for m in exp.metrics]
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in raw):
            values = [float(v) for v in raw]  # type: ignore[arg-type]
        else:
            state = TrialState.FAIL  # never reported a metric: as the Optuna searcher tells it
    params, dists, outside = _params(exp.space, space_dists, r.config)
    cut = (r.cut_at, r.cut_reason or "search stopped") if r.cut_at is not None else None
    attrs: dict[str, Any] = {"hpo.trial_id": r.trial_id,
                             "hpo.status": status_text(r.status, r.error, r.pruned_at, cut)
                             if r.status in _STATES else "running",  # a killed search's unended trial
                             "hpo.steps": int(r.steps),
                             "hpo.config": json.dumps(r.config, default=str, sort_keys=True)}
    if r.node:
        attrs["hpo.node"] = r.node
    if outside:
        attrs["hpo.outside_space"] = outside  # e.g. values PBT mutated past the space's bounds
    intermediates = _intermediates(history, exp.metrics)
    if state == TrialState.PRUNED and intermediates:
        values = [intermediates[max(intermediates)]]  # as Optuna's tell(PRUNED) keeps it: its last value
    trial = create_trial(state=state, values=values, params=params, distributions=dists, user_attrs=attrs,
                         intermediate_values=intermediates)
    start, end = _times(history)
    start = start if start is not None else fallback
    end = end if end is not None else start
    if start is not None:  # else: the time of writing (create_trial's); a search that never reported
        trial.datetime_start = datetime.datetime.fromtimestamp(start)
        if state.is_finished():
            trial.datetime_complete = datetime.datetime.fromtimestamp(max(end or start, start))
    return trial


def _params(space: Any, dists: dict[str, Any], config: dict[str, Any]) \
        -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(params, distributions, names outside the space): the config's values of the space's
    non-fixed parameters (``dists``: the space's Optuna distributions) in Optuna's form;
    inactive conditionals are simply absent."""
    from optuna.distributions import CategoricalDistribution

    params: dict[str, Any] = {}
    outside = []
    for name, dist in dists.items():
        if name not in config or not space.is_active(name, config):  # (Ray may fill an inactive one with None)
            continue
        p, value = space.params[name], config[name]
        if isinstance(dist, CategoricalDistribution) and not all(isinstance(c, _PRIMITIVES) for c in p.choices):
            index = next((i for i, c in enumerate(p.choices) if _same(c, value)), None)  # searched by index
            if index is None:
                outside.append(name)
                continue
            params[name] = index
        elif p.contains(value):
            params[name] = value
        else:
            outside.append(name)
    return params, {k: dists[k] for k in params}, outside


def _same(choice: Any, value: Any) -> bool:
    """A choice and a value read back from JSON (tuples come back as lists)."""
    return bool(choice == value) or json.dumps(choice, default=str) == json.dumps(value, default=str)


def _intermediates(history: list[dict[str, Any]], metrics: list[str]) -> dict[int, float]:
    """step -> the first metric's value, for a single objective (as the Optuna searcher reports
    them: the first value of a step wins, step 0 and non-finite values are left out)."""
    if len(metrics) != 1:
        return {}
    out: dict[int, float] = {}
    for line in history:
        for step, entry in result_steps(line):
            value = entry.get(metrics[0])
            if step and step not in out and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                out[step] = float(value)
    return out


def _times(history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(start, end) of a trial in seconds since the epoch, from its reports."""
    if not history:
        return None, None
    first, last = history[0], history[-1]
    start = first.get(STARTED_KEY)
    if start is None:
        at = first.get(TIME_KEY, first.get("timestamp"))
        start = at - float(first.get("time_this_iter_s") or 0) if isinstance(at, (int, float)) else None
    end = last.get(TIME_KEY, last.get("timestamp"))
    return (float(start) if isinstance(start, (int, float)) else None,
            float(end) if isinstance(end, (int, float)) else None)


def _latest_report(histories: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> float | None:
    """The time of the search's last report: when a trial that never reported (cut before it
    started, errored at once) is shown to have ended."""
    ends = [e for _, lines in histories.values() if (e := _times(lines)[1]) is not None]
    return max(ends) if ends else None


def _order(trial_id: str, histories: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> tuple[Any, ...]:
    """Trials numbered as they started (Ray's trial ids are random); those that never reported
    last; ties by id, numbers in it compared as numbers (``x.10`` after ``x.9``)."""
    start = _times(histories.get(trial_id, ({}, []))[1])[0]
    natural = [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", trial_id)]
    return (start is None, start or 0.0, natural)


def _saved_records(run_dir: Path, histories: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) \
        -> list[TrialRecord]:
    """``trials.json``'s records; for a search that never wrote it (killed), every trial Ray's
    result files or ``outcomes.json`` know, each as ``outcomes.json`` says it ended (unended:
    ``running``)."""
    saved = saved_records(run_dir)
    if saved:
        return [TrialRecord(**r) for r in saved]
    state = read_json(run_dir / OUTCOMES_FILE, {}) or {}
    outcomes, ended = state.get("outcomes") or {}, state.get("ended") or {}
    pruned, cut = outcomes.get("pruned") or {}, outcomes.get("cut") or {}
    out = []
    for tid in histories.keys() | ended.keys():
        config, lines = histories.get(tid, ({}, []))
        last = lines[-1] if lines else {}
        step = cut.get(tid)
        out.append(TrialRecord(
            trial_id=tid, config=config, metrics=trial_metrics(last), status=ended.get(tid, "running"),
            steps=int(last.get(STEP_KEY, last.get("training_iteration", 0))), pruned_at=pruned.get(tid),
            node=last.get(NODE_KEY), cut_at=int(step[0]) if step else None, cut_reason=str(step[1]) if step else None))
    return out
