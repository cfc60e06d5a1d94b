"""``hpo nightly``: the same search once per date, warm-started from every earlier night.

A night is one search in the run directory ``<storage_path>/<name>-<YYYY-MM-DD>``, recorded in
the experiment's MLflow experiment (the same for every night) with a parent run tagged
``hpo.night``, ``hpo.lineage`` and ``hpo.data_fingerprint``. Its Optuna searcher uses one
study per *lineage* in a relational storage (``nightly.storage``; default
``sqlite:///<storage_path>/optuna.db``), named ``hpo-<name>-<space hash>``: the sampler sees
every earlier night's trials, each new trial carries the user attribute ``night=<date>``, and a
changed search space starts a new lineage.

The same date again does nothing for a night that ended (same exit code) and continues one that
was interrupted or killed (``hpo resume``'s machinery). A file lock
(``<storage_path>/<name>.nightly.lock``, ``fcntl.flock``) keeps two nights of one experiment
from running at once; the operating system releases it when a night's process dies. On a
PostgreSQL storage a session advisory lock does the same across machines.

After the search, the night's best model is compared with the registered champion
(:mod:`hpo.champion`), and the trend report over every night is written (:mod:`hpo.trend`).

Example:
    >>> from hpo.config import Experiment
    >>> exp = Experiment.from_dict({"name": "demo", "task": {"dataset": "iris", "epochs": 2},
    ...                             "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1}},
    ...                             "metric": "val_accuracy"})
    >>> night_run_dir("hpo_results", exp.name, "2026-11-29").name
    'demo-2026-11-29'
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import logging
import os
import pickle
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpo.champion import EXIT_NO_IMPROVEMENT, EXIT_REGRESSED, model_name, promotes
from hpo.config import Experiment, check_timezone, mask_url, parse_duration
from hpo.errors import HpoConfigError, SearchInterrupted
from hpo.lineage import NightLocked, carry_over, database_url, lineage_space, storage_lock, study_counts, study_name
from hpo.rundir import (
    NIGHT_FILE,
    STATE_FILE,
    TRIALS_FILE,
    night_run_dir,
    night_run_dirs,
    read_json,
    read_state,
    write_json,
)
from hpo.strategies import capabilities, get_strategy

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_NO_IMPROVEMENT", "EXIT_OK", "EXIT_REGRESSED", "EXIT_RUNNING",
           "NightPlan", "NightResult", "data_fingerprint", "night_lock", "night_seed", "nightly", "plan_night",
           "reconcile"]

log = logging.getLogger("hpo")

EXIT_OK = 0  # the night ended (all trials done, or its time budget spent); promoted or champion kept
EXIT_FAILED = 1  # the search raised
EXIT_BAD_INPUT = 2  # bad input: nothing launched (or the trainable never reports the metric)
EXIT_RUNNING = 3  # another night of this experiment holds the lock
# 4 (EXIT_NO_IMPROVEMENT) and 5 (EXIT_REGRESSED): the champion stays (hpo.champion)
_INTERRUPTED = (75, 130, 143)  # disk full, SIGINT, SIGTERM (as `hpo run`): the same date again continues the night
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class NightPlan:
    """A validated night: which date, where it runs, which lineage, with what budget."""

    exp: Experiment  # the experiment as the night runs it (time budget, the night's seed)
    date: str
    run_dir: Path
    lock_path: Path
    storage: str
    lineage: str
    promote: bool = False  # compare the night's best model with the registered champion
    new_budget_s: float | None = None  # --time-budget given: also for a night that is continued


@dataclass
class NightResult:
    """How ``hpo nightly`` ended: its exit code, the ``--json`` summary, and a message (or None)."""

    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


def night_seed(seed: int | None, date: str) -> int | None:
    """The night's sampler seed: the same seed and date give the same configurations, but each night
    draws new ones (one seed for every night would repeat the first night's random draws).

    Example:
        >>> night_seed(0, "2026-11-29") == night_seed(0, "2026-11-29") != night_seed(0, "2026-11-30")
        True
        >>> night_seed(None, "2026-11-29") is None
        True
    """
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{seed}:{date}".encode()).digest()[:4], "big")


def check_date(text: Any, key: str = "--date") -> str:
    """``text`` if it is a real calendar date written ``YYYY-MM-DD``."""
    rule = "must be a date written YYYY-MM-DD"
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise HpoConfigError(key, rule, text)
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise HpoConfigError(key, f"{rule} (a real calendar date)", text) from None
    return text


def today(timezone: str) -> str:
    """Today's date in ``timezone`` (an IANA name), as ``YYYY-MM-DD``."""
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(check_timezone(timezone))).date().isoformat()


def plan_night(exp: Experiment, date: str | None = None, time_budget: str | None = None,
               tracking_uri: str | None = None) -> NightPlan:
    """Check everything a night needs, before anything is launched or written.

    Raises:
        HpoConfigError: a bad date or duration, a searcher that cannot warm-start (not an Optuna
            sampler), or anything the one validation pass rejects.
    """
    from hpo.validate import validate

    night = check_date(date) if date is not None else today(exp.nightly.timezone)
    searcher = get_strategy(exp.strategy.searcher, "searcher", "strategy.searcher")
    if searcher.kind != "sampler":
        raise HpoConfigError("strategy.searcher", "must be an Optuna sampler to warm-start nights from one study "
                             "(tpe, gp, cmaes, random, sobol, nsga2)", exp.strategy.searcher)
    if capabilities(exp.strategy.spec(), exp.budget).rewrites_configs:
        raise HpoConfigError("strategy.scheduler", "must leave the sampling to the Optuna searcher: this scheduler "
                             "samples the space itself, so nights cannot warm-start", exp.strategy.scheduler)
    budget_s = exp.time_budget_s
    if time_budget is not None:
        budget_s = parse_duration(time_budget, "--time-budget")
    elif exp.nightly.time_budget is not None:
        budget_s = parse_duration(exp.nightly.time_budget)
    strategy = exp.strategy.model_copy(update={"seed": night_seed(exp.strategy.seed, night)})
    night_exp = exp.model_copy(update={"time_budget_s": budget_s, "strategy": strategy})
    promote = promotes(exp)
    if promote:  # the night's best model becomes a new version of the champion's registered model
        tracking = exp.tracking.model_copy(update={"register_model": model_name(exp)})
        night_exp = night_exp.model_copy(update={"tracking": tracking})
    validate(night_exp, tracking_uri)
    root = Path(exp.storage_path).resolve()
    storage = database_url(exp.nightly.storage) if exp.nightly.storage else f"sqlite:///{root / 'optuna.db'}"
    return NightPlan(night_exp, night, night_run_dir(root, exp.name, night), root / f"{exp.name}.nightly.lock",
                     storage, study_name(exp), promote, budget_s if time_budget is not None else None)


@contextmanager
def night_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing), or raise
    :class:`NightLocked` at once. The lock dies with the process that holds it (also ``kill -9``)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "?"
            raise NightLocked(f"another night of this experiment is running (process {holder} holds {path})") \
                from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def data_fingerprint(exp: Experiment, ds: Any = None) -> str | None:
    """16 hex digits identifying the built-in task's data set ``ds`` (loaded if not given: its arrays
    and split), so nights on different data are told apart; None for a custom trainable (its data is
    its own)."""
    if not exp.is_builtin:
        return None
    import numpy as np

    from hpo.train.builtin import load_data

    ds = ds if ds is not None else load_data(exp)
    h = hashlib.sha256()
    for name in ("x_dev", "y_dev", "x_test", "y_test", "val_idx"):
        a = np.ascontiguousarray(getattr(ds, name))
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _ended(run_dir: Path, record: dict[str, Any]) -> bool:
    """The night ran to its end (not interrupted, not killed): nothing left to do for its date."""
    code = record.get("exit_code")
    return code is not None and code not in _INTERRUPTED and (run_dir / TRIALS_FILE).exists()


def _resumable_trials(run_dir: Path) -> set[int]:
    """Numbers of the Optuna trials a resume of ``run_dir`` would continue (its saved searcher state)."""
    if _ended(run_dir, read_json(run_dir / NIGHT_FILE, {}) or {}):
        return set()
    saved = sorted(run_dir.glob("searcher-state-*.pkl"))
    if not saved:
        return set()
    try:
        state = pickle.loads(saved[-1].read_bytes())  # written by hpo's searchers on this machine
        if isinstance(state, dict) and "inner" in state:  # packing keeps the Optuna searcher's state inside
            state = pickle.loads(state["inner"])
        return {int(n) for n in (state.get("trials") or {}).values()} if isinstance(state, dict) else set()
    except Exception:  # noqa: BLE001 - an unreadable state resumes nothing
        return set()


def reconcile(storage: str, lineage: str, storage_path: str | os.PathLike[str], name: str) -> list[int]:
    """Tell FAIL every trial of the lineage's study left RUNNING by a night that was killed, unless a
    resume of its night would continue it; returns their numbers.

    Optuna's heartbeat does not cover ask-and-tell, so nothing else ends them. The caller holds the
    night lock: no other night of this experiment is running.
    """
    import optuna
    from optuna.trial import TrialState

    if lineage not in optuna.get_all_study_names(storage=storage):
        return []
    study = optuna.load_study(study_name=lineage, storage=storage)
    nights = night_run_dirs(storage_path, name)
    known: dict[Any, set[int]] = {}
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        night = t.user_attrs.get("night")
        if night not in known:
            known[night] = _resumable_trials(nights[night]) if night in nights else set()
        if t.number not in known[night]:
            study.tell(t.number, state=TrialState.FAIL)
            failed.append(t.number)
    return failed


def _previous_lineage(plan: NightPlan) -> str | None:
    """The lineage of the latest earlier night of this experiment, if any."""
    earlier = [d for date, d in night_run_dirs(plan.exp.storage_path, plan.exp.name).items() if date < plan.date]
    for d in reversed(earlier):
        lineage = (read_json(d / NIGHT_FILE, {}) or {}).get("lineage")
        if lineage:
            return str(lineage)
    return None


def nightly(exp: Experiment, *, date: str | None = None, time_budget: str | None = None, address: str | None = None,
            tracking_uri: str | None = None, dry_run: bool = False) -> NightResult:
    """Run the night ``date`` (default: today in ``nightly.timezone``) of ``exp``, warm-started from
    the lineage's earlier nights; or nothing, if that night already ended.

    Raises:
        HpoConfigError: bad input (before anything is launched or written).
        NightLocked: another night of this experiment is running.
    """
    plan = plan_night(exp, date, time_budget, tracking_uri)
    plan.run_dir.parent.mkdir(parents=True, exist_ok=True)
    with night_lock(plan.lock_path), storage_lock(plan.storage, plan.exp.name):
        return _run_locked(plan, address, tracking_uri, dry_run)


def _run_locked(plan: NightPlan, address: str | None, tracking_uri: str | None, dry_run: bool) -> NightResult:
    import optuna

    from hpo.train.builtin import load_data

    night_file = plan.run_dir / NIGHT_FILE
    record = read_json(night_file, {}) or {}
    if _ended(plan.run_dir, record):
        summary = {**record.get("summary", {}), "skipped": True}
        return NightResult(record["exit_code"], summary,
                           f"night {plan.date} of {plan.exp.name} already ended (exit code {record['exit_code']}); "
                           "nothing was run")
    # Ray's tuner.pkl: the search got far enough to be resumed (before it, a night starts over in place)
    resuming = (plan.run_dir / STATE_FILE).exists() and (plan.run_dir / "tuner.pkl").exists()
    if not record or (not resuming and record.get("lineage") != plan.lineage):  # the night starts (over)
        record = {"night": plan.date, "lineage": plan.lineage, "storage": mask_url(plan.storage),
                  "new_lineage": plan.lineage not in optuna.get_all_study_names(storage=plan.storage),
                  "previous_lineage": _previous_lineage(plan), "seed": plan.exp.strategy.seed,
                  "time_budget_s": plan.exp.time_budget_s, "started": time.time()}
    if resuming:
        # a resumed night runs the experiment it was started with (hpo_state.json), in its own study
        # (credentials are not stored: the tracking and nightly settings are tonight's file's)
        saved = Experiment.from_dict(read_state(plan.run_dir)["experiment"])
        saved = saved.model_copy(update={"tracking": plan.exp.tracking, "nightly": plan.exp.nightly})
        plan = replace(plan, exp=saved, lineage=str(record["lineage"]))
    ds = load_data(plan.exp)  # once: for the fingerprint and to re-score the champion
    fingerprint = data_fingerprint(plan.exp, ds)
    record["data_fingerprint"] = fingerprint
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if record["new_lineage"] and plan.exp.nightly.carry_over and "carried_over" not in record:
        record["carried_over"], record["carry_skipped"] = _carry(plan, record.get("previous_lineage"))
    write_json(night_file, record)
    reconciled: list[int] = []
    search = record.get("search")  # set once the search has ended (then only the promotion is left)
    if search is None:
        reconciled = reconcile(plan.storage, plan.lineage, plan.exp.storage_path, plan.exp.name)
        search = _search(plan, record, resuming, fingerprint, address, tracking_uri)
        if search["exit_code"] not in _INTERRUPTED:
            record["search"] = search
            write_json(night_file, record)
    code, message = search["exit_code"], search["message"]
    champion: dict[str, Any] = {"decision": None}
    if code == EXIT_OK and plan.promote:
        try:
            champion = _promote(plan, search, ds, fingerprint, tracking_uri, dry_run)
            code = champion["exit_code"]
            message = champion.get("message")
        except Exception as exc:  # noqa: BLE001 - a failed comparison is a failed night (the search is kept)
            log.exception("the champion comparison failed")
            code, message = EXIT_FAILED, f"the champion comparison failed: {type(exc).__name__}: {exc}"
    this_night, in_study = study_counts(plan.storage, plan.lineage, plan.date)
    summary = {
        "name": plan.exp.name, "night": plan.date, "lineage": plan.lineage,
        "new_lineage": record["new_lineage"], "previous_lineage": record.get("previous_lineage"),
        "trials_this_night": this_night, "trials_in_study": in_study,
        "best_metric": search["best_metric"], "best_config": search["best_config"],
        "metric": plan.exp.metric, "mode": plan.exp.mode, "data_fingerprint": fingerprint,
        "stop_reason": search["stop_reason"], "resumed": resuming, "reconciled": reconciled,
        "skipped": False, "exit_code": code, "run_dir": str(plan.run_dir), "storage": mask_url(plan.storage),
        "mlflow_experiment_id": search["mlflow_experiment_id"], "parent_run_id": search["parent_run_id"],
        "decision": champion.get("decision"), "compared_on": champion.get("compared_on"),
        "challenger_score": champion.get("challenger_score"), "champion_score": champion.get("champion_score"),
        "champion_before": champion.get("champion_before"), "champion_after": champion.get("champion_after"),
        "challenger_version": champion.get("challenger_version"),
        "registered_model": champion.get("registered_model"), "dry_run": dry_run,
        "carried_over": record.get("carried_over"), "carry_skipped": record.get("carry_skipped"),
        "error": message if code and code not in (EXIT_NO_IMPROVEMENT, EXIT_REGRESSED) else None,
    }
    record.update(exit_code=code, summary=summary, ended=time.time())
    write_json(night_file, record)
    if code not in _INTERRUPTED:
        _trend(plan, search["parent_run_id"], tracking_uri)
    return NightResult(code, summary, message)


def _trend(plan: NightPlan, parent_run_id: str | None, tracking_uri: str | None) -> None:
    """Write the trend report over every night so far and log it on this night's parent run; a
    report that cannot be written or logged is a warning, never a failed night."""
    from hpo.trend import log_trend, write_trend
    from hpo.validate import tracking_uri_of

    try:
        report = write_trend(plan.exp.storage_path, plan.exp.name)
        if parent_run_id and plan.exp.tracking.enabled:
            log_trend(tracking_uri_of(plan.exp, tracking_uri), report["files"], [parent_run_id])
    except Exception as exc:  # noqa: BLE001
        log.warning("the trend report was not written: %s: %s", type(exc).__name__, exc)


def _carry(plan: NightPlan, previous: str | None) -> tuple[int, int]:
    if not previous:
        return 0, 0
    old_space = lineage_space(plan.exp.storage_path, plan.exp.name, previous)
    if old_space is None:
        log.warning("no night of lineage %s has a readable experiment: no trials carried over", previous)
        return 0, 0
    directions = ["maximize" if m == "max" else "minimize" for m in plan.exp.modes]
    carried, skipped = carry_over(plan.storage, previous, plan.lineage, old_space, plan.exp.space, directions)
    log.info("carried %d trials of lineage %s into %s (%d did not fit the new space)", carried, previous,
             plan.lineage, skipped)
    return carried, skipped


def _search(plan: NightPlan, record: dict[str, Any], resuming: bool, fingerprint: str | None, address: str | None,
            tracking_uri: str | None) -> dict[str, Any]:
    """Run (or resume) the night's search; what the night keeps of it (also for a promotion that a
    kill interrupted, which the same date finishes without searching again)."""
    from hpo.runner import resume, run

    results: Any = None
    message = None
    try:
        if resuming:
            results = resume(str(plan.run_dir), address=address, tracking_uri=tracking_uri,
                             time_budget_s=plan.new_budget_s)
        else:
            tags = {"hpo.night": plan.date, "hpo.lineage": plan.lineage,
                    "hpo.data_fingerprint": fingerprint or "none"}
            results = run(plan.exp, address=address, tracking_uri=tracking_uri, run_dir=plan.run_dir,
                          study_storage=plan.storage, study_name=plan.lineage, trial_attrs={"night": plan.date},
                          parent_tags=tags)
        code = EXIT_OK
    except SearchInterrupted as exc:
        results, code = exc.results, exc.exit_code
        message = (f"{exc.message or exc.signal_name}: the night stopped; running trials were cut and recorded. "
                   f"Run the same `hpo nightly` command with --date {plan.date} to continue it.")
    except HpoConfigError as exc:
        code, message = EXIT_BAD_INPUT, str(exc)
    except Exception as exc:  # noqa: BLE001 - a failed night is recorded with its exit code
        log.exception("the night failed")
        code, message = EXIT_FAILED, f"the night failed: {type(exc).__name__}: {exc}"
    info = getattr(results, "best_model_info", None) or {}
    return {"exit_code": code, "message": message,
            "best_metric": getattr(results, "best_metric", None), "best_config": getattr(results, "best_config", None),
            "stop_reason": getattr(results, "stop_reason", None),
            "mlflow_experiment_id": getattr(results, "mlflow_experiment_id", None),
            "parent_run_id": getattr(results, "parent_run_id", None),
            "challenger": {k: info.get(k) for k in ("path", "registered_model", "registered_version", "trial_id")}
            if info else None}


def _promote(plan: NightPlan, search: dict[str, Any], ds: Any, fingerprint: str | None, tracking_uri: str | None,
             dry_run: bool) -> dict[str, Any]:
    """Score the night's best model and the champion on this night's test rows, decide, record."""
    from hpo.champion import (
        champion_version,
        check_margins,
        compared_on,
        decide,
        load_version,
        model_name,
        record_decision,
        score_model,
    )
    from hpo.train.model_file import load_model
    from hpo.validate import tracking_uri_of

    uri = tracking_uri_of(plan.exp, tracking_uri)
    name, key = model_name(plan.exp), compared_on(plan.exp)
    before = champion_version(uri, name)
    challenger = search.get("challenger") or {}
    version = challenger.get("registered_version")
    challenger_score = None
    if challenger.get("path") and version is not None:
        challenger_score = score_model(load_model(challenger["path"]), ds, key)
    champion_score = None
    if before is not None and before != version:
        champion_score = score_model(load_version(uri, name, before), ds, key)
    elif before is not None:  # the champion is this night's model already (a promotion the kill interrupted)
        champion_score = challenger_score
    margin, alert = check_margins(plan.exp)
    mode = plan.exp.mode if isinstance(plan.exp.mode, str) else plan.exp.mode[0]
    verdict = decide(challenger_score, champion_score, mode, margin, alert)
    if before is not None and before == version:
        verdict.decision = "promoted"
    after = record_decision(uri, name, verdict, key=key, challenger_version=version, champion_version=before,
                            parent_run_id=search.get("parent_run_id"), night=plan.date, fingerprint=fingerprint,
                            dry_run=dry_run)
    message = None
    if version is None:
        message = "no model to compare: the night has no completed trial or its model was not registered"
    elif verdict.decision == "no_improvement":
        message = (f"no improvement: the night's best model scored {key}={challenger_score:.6g}, the champion "
                   f"(version {before}) {champion_score:.6g} on this night's test rows; the champion stays")
    elif verdict.decision == "regressed":
        message = (f"regressed: the night's best model scored {key}={challenger_score:.6g}, worse than the "
                   f"champion's {champion_score:.6g} beyond nightly.alert_regression; the champion stays")
    return {**verdict.as_dict(), "compared_on": key, "champion_before": before, "champion_after": after,
            "challenger_version": version, "registered_model": name, "message": message}
