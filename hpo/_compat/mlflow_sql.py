"""Many MLflow runs written in one database transaction (checked against MLflow 3.17.2).

MLflow's API writes one run at a time, and on a database store (SQLite, PostgreSQL, MySQL) each
``create_run``, ``log_batch`` and ``update_run_info`` opens several sessions and commits each:
17.8 ms of the driver's CPU per trial of 10 epochs and 11 metrics, against 1.5 ms this way
(``python -m benchmarks.tracking --writer``). :func:`write_runs` writes what a flush window holds for any number of runs
through the store's own session maker and table models (``mlflow.store.tracking.dbmodels``),
in one commit: the rows MLflow's own calls would write (a run, its ``mlflow.runName`` tag, its
params, metric history, latest metrics, tags and end), checked by MLflow's own validators.
:func:`sql_store` says whether a client's store is one (an ``http(s)`` server is not: its REST
API has no many-run request, so those runs are written one by one).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunWrite", "new_run_id", "refused", "sql_store", "write_runs"]

_CHUNK = 500  # ids per IN (...) clause: well under every database's bound-parameter limit


@dataclass
class RunWrite:
    """What one flush window writes to one run. ``create``: the run is new (``run_id`` from
    :func:`new_run_id`, named ``name``, tagged with ``tags``); ``status``: end it so."""

    run_id: str
    name: str = ""
    create: bool = False
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[Any] = field(default_factory=list)  # mlflow.entities.Metric
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None  # FINISHED, FAILED or KILLED


def new_run_id() -> str:
    """A run id as MLflow makes them."""
    return uuid.uuid4().hex


def sql_store(client: Any) -> Any | None:
    """The client's store when it is a database MLflow writes through SQLAlchemy, else None
    (reached through the private ``MlflowClient._tracking_client``)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def refused(write: RunWrite) -> str | None:
    """Why MLflow would refuse this write's data (its own validators), or None."""
    from mlflow.entities import Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_batch_log_data

    try:
        _, params, tags = _validate_batch_log_data(write.metrics, [Param(k, v) for k, v in write.params.items()],
                                                   [RunTag(k, v) for k, v in write.tags.items()])
    except MlflowException as exc:
        return str(exc)
    write.params = {p.key: p.value for p in params}
    write.tags = {t.key: t.value for t in tags}  # as MLflow stores them (over-long values truncated)
    return None


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    return (ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK))


def write_runs(store: Any, experiment_id: str, artifact_location: str, writes: list[RunWrite]) -> None:
    """Write ``writes`` in one transaction: all of it or, on any error, none of it (raised).
    Params are inserted (the caller logs each key of a run once); metrics are added to the
    history and the run's latest value per key kept as MLflow keeps it (highest step, then time,
    then value); tags are set (a new value replaces the old); ended runs get their status and
    end time. Rows go in as multi-row statements on MLflow's own tables (no ORM objects: those
    cost 10 ms of CPU per trial of 110 metric values)."""
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import and_, bindparam, insert, select, update

    runs, tags, latest_t = SqlRun.__table__, SqlTag.__table__, SqlLatestMetric.__table__
    now = int(time.time() * 1000)
    created = {w.run_id for w in writes if w.create}
    new_runs, params, history, new_tags = [], [], [], []
    latest: dict[tuple[str, str], tuple[int, int, float, bool]] = {}
    for w in writes:
        if w.create:
            new_runs.append({
                "run_uuid": w.run_id, "name": w.name, "experiment_id": int(experiment_id),
                "artifact_uri": append_to_uri_path(artifact_location, w.run_id, "artifacts"),
                "source_type": SourceType.to_string(SourceType.UNKNOWN), "source_name": "", "entry_point_name": "",
                "user_id": "unknown", "status": RunStatus.to_string(RunStatus.RUNNING), "start_time": now,
                "end_time": None, "deleted_time": None, "source_version": "", "lifecycle_stage": LifecycleStage.ACTIVE})
            new_tags.append({"run_uuid": w.run_id, "key": MLFLOW_RUN_NAME, "value": w.name})
        params += [{"run_uuid": w.run_id, "key": k, "value": v} for k, v in w.params.items()]
        seen = set()
        for m in w.metrics:
            is_nan, value = store.sanitize_metric_value(m.value)
            row = {"run_uuid": w.run_id, "key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step,
                   "is_nan": is_nan}
            ident = (m.key, m.timestamp, m.step, value, is_nan)
            if ident in seen:
                continue  # MLflow drops exact duplicates within a batch too
            seen.add(ident)
            history.append(row)
            old = latest.get((w.run_id, m.key))
            if old is None or (m.step, m.timestamp, value) > old[:3]:
                latest[(w.run_id, m.key)] = (m.step, m.timestamp, value, is_nan)

    with store.ManagedSessionMaker(read_only=False) as session:
        for table, rows in ((runs, new_runs), (SqlParam.__table__, params), (SqlMetric.__table__, history)):
            if rows:
                session.execute(insert(table), rows)

        # tags and latest values of runs that exist already: the stored ones, to update or insert
        old_ids = sorted({w.run_id for w in writes if not w.create and w.tags} | {r for r, _ in latest} - created)
        have_tags: set[tuple[str, str]] = set()
        have_latest: dict[tuple[str, str], tuple[int, int, float]] = {}
        for ids in _chunks(old_ids):
            have_tags |= {(r, k) for r, k in session.execute(select(tags.c.run_uuid, tags.c.key)
                                                              .where(tags.c.run_uuid.in_(ids)))}
            have_latest.update({(r, k): (st, ts, v) for r, k, st, ts, v in session.execute(
                select(latest_t.c.run_uuid, latest_t.c.key, latest_t.c.step, latest_t.c.timestamp, latest_t.c.value)
                .where(latest_t.c.run_uuid.in_(ids)))})
        tag_updates: list[dict[str, Any]] = []
        for w in writes:
            for k, v in w.tags.items():
                row = {"run_uuid": w.run_id, "key": k, "value": v}
                (tag_updates if (w.run_id, k) in have_tags else new_tags).append(row)
        latest_new: list[dict[str, Any]] = []
        latest_updates: list[dict[str, Any]] = []
        for (rid, key), (step, ts, value, is_nan) in latest.items():
            row = {"run_uuid": rid, "key": key, "value": value, "timestamp": ts, "step": step, "is_nan": is_nan}
            stored = have_latest.get((rid, key))
            if stored is None:
                latest_new.append(row)
            elif (step, ts, value) > stored:
                latest_updates.append(row)
        for table, rows in ((tags, new_tags), (latest_t, latest_new)):
            if rows:
                session.execute(insert(table), rows)
        same = {"b_run": "run_uuid", "b_key": "key"}
        if tag_updates:
            session.execute(update(tags).where(and_(tags.c.run_uuid == bindparam("b_run"),
                                                    tags.c.key == bindparam("b_key"))).values(value=bindparam("value")),
                            [{**{b: r[c] for b, c in same.items()}, "value": r["value"]} for r in tag_updates])
        if latest_updates:
            session.execute(
                update(latest_t).where(and_(latest_t.c.run_uuid == bindparam("b_run"),
                                            latest_t.c.key == bindparam("b_key")))
                .values(value=bindparam("value"), timestamp=bindparam("timestamp"), step=bindparam("step"),
                        is_nan=bindparam("is_nan")),
                [{**{b: r[c] for b, c in same.items()}, **{k: r[k] for k in ("value", "timestamp", "step", "is_nan")}}
                 for r in latest_updates])

        # ends, one UPDATE per status
        by_status: dict[str, list[str]] = {}
        for w in writes:
            if w.status:
                by_status.setdefault(w.status, []).append(w.run_id)
        for status, ids in by_status.items():
            for chunk in _chunks(ids):
                session.execute(update(runs).where(runs.c.run_uuid.in_(chunk)).values(status=status, end_time=now))
        session.commit()
