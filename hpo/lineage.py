"""A nightly lineage's Optuna study in its relational storage: its name, the storage URL, the
advisory lock that keeps nights on several machines apart, and carrying trials over to a new
lineage when the search space changes (``hpo nightly``, :mod:`hpo.nightly`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hpo.config import Experiment, mask_url
from hpo.rundir import NIGHT_FILE, night_run_dirs, read_json, read_state
from hpo.tracking.search_record import space_hash

__all__ = ["NightLocked", "advisory_key", "carry_over", "database_url", "lineage_space", "optuna_config",
           "storage_lock", "study_counts", "study_name"]


class NightLocked(RuntimeError):
    """Another ``hpo nightly`` of the same experiment is running (it holds the lock)."""


def study_name(exp: Experiment) -> str:
    """The lineage's Optuna study: ``hpo-<name>-<space hash>`` (never Optuna's default name, so two
    experiments sharing a database never merge; a changed space is a new lineage)."""
    return f"hpo-{exp.name}-{space_hash(exp)}"


def database_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3, so where only psycopg2 is installed it gets ``+psycopg2``.

    Example:
        >>> database_url("postgresql+psycopg://u@h/d"), database_url("sqlite:////tmp/o.db")
        ('postgresql+psycopg://u@h/d', 'sqlite:////tmp/o.db')
    """
    from importlib.util import find_spec

    scheme, sep, rest = url.partition("://")
    if scheme.lower() == "postgresql" and find_spec("psycopg") is None and find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def advisory_key(name: str) -> int:
    """The PostgreSQL advisory lock key of an experiment's nights (a signed 64-bit integer).

    Example:
        >>> advisory_key("mlp") == advisory_key("mlp") != advisory_key("mlp-small")
        True
    """
    return int.from_bytes(hashlib.sha256(f"hpo-nightly:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """On a PostgreSQL storage, hold the session advisory lock of ``name``'s nights for the night, or
    raise :class:`NightLocked` at once: nights of one experiment started on different machines
    (each with its own file lock) exclude each other through the database they share. The server
    releases the lock when the holding connection ends, also when its process is killed. Other
    storages: nothing (the file lock only)."""
    if url.split("://", 1)[0].split("+", 1)[0].lower() != "postgresql":
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            key = advisory_key(name)
            if not conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                raise NightLocked(f"another night of {name} is running on another machine (it holds PostgreSQL "
                                  f"advisory lock {key} on {mask_url(url)})")
            conn.commit()
            try:
                _create_schema_once(conn, url)
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


_SCHEMA_KEY = advisory_key("optuna-schema")


def _create_schema_once(conn: Any, url: str) -> None:
    """Create Optuna's tables under a database-wide advisory lock: Optuna creates them without one,
    so the first nights of two experiments on a new database raced (``CREATE TYPE studydirection``
    failed with a unique violation in one of them)."""
    import optuna
    import sqlalchemy

    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_KEY})
    conn.commit()
    try:
        optuna.storages.RDBStorage(url)  # creates the tables when they are missing, else only checks them
    finally:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_KEY})
        conn.commit()


def study_counts(storage: str, lineage: str, night: str) -> tuple[int, int]:
    """(trials of this night, trials in the study)."""
    import optuna

    if lineage not in optuna.get_all_study_names(storage=storage):
        return 0, 0
    trials = optuna.load_study(study_name=lineage, storage=storage).get_trials(deepcopy=False)
    return sum(1 for t in trials if t.user_attrs.get("night") == night), len(trials)


def lineage_space(storage_path: str, name: str, lineage: str) -> Any:
    """The search space a lineage's nights ran (from its latest night's saved experiment), or None."""
    for d in reversed(list(night_run_dirs(storage_path, name).values())):
        if (read_json(d / NIGHT_FILE, {}) or {}).get("lineage") == lineage:
            try:
                return Experiment.from_dict(read_state(d)["experiment"]).space
            except Exception:  # noqa: BLE001 - a night without a readable state: try an earlier one
                continue
    return None


def optuna_config(space: Any, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's config in ``space`` from its Optuna params (categorical indices mapped back)
    plus the space's fixed values."""
    from hpo.params import Categorical, Fixed

    config: dict[str, Any] = {}
    for name, p in space.params.items():
        if isinstance(p, Fixed):
            if space.is_active(name, config):
                config[name] = p.value
        elif name in params:
            v = params[name]
            if isinstance(p, Categorical) and not all(isinstance(c, (type(None), bool, int, float, str))
                                                      for c in p.choices):
                v = p.choices[v]
            config[name] = v
    return config


def carry_over(storage: str, previous: str, lineage: str, old_space: Any, new_space: Any,
               directions: list[Any]) -> tuple[int, int]:
    """Copy the previous lineage's finished trials (complete or pruned, with their values,
    intermediate values and user attributes, plus ``carried_from``) into the new lineage's study
    when their configuration is one the new space holds exactly (every active parameter in range,
    fixed values equal, nothing extra) — like SageMaker's transfer learning, with no limit on the
    number of earlier nights. Returns (carried, skipped)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    old = optuna.load_study(study_name=previous, storage=storage)
    study = optuna.create_study(study_name=lineage, storage=storage, directions=directions, load_if_exists=True)
    if any("carried_from" in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return 0, 0  # carried already (a night restarted in place)
    dists = new_space.to_optuna()
    carried, skipped = [], 0
    for t in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        config = optuna_config(old_space, t.params)
        if not new_space.contains(config):
            skipped += 1
            continue
        params = {k: v for k, v in config.items() if k in dists}
        for k, d in list((k, dists[k]) for k in params):
            if isinstance(d, optuna.distributions.CategoricalDistribution) and params[k] not in d.choices:
                params[k] = new_space.params[k].choices.index(params[k])  # index-encoded choices
        carried.append(create_trial(
            state=t.state, params=params, distributions={k: dists[k] for k in params},
            values=t.values if t.state == TrialState.COMPLETE else None,
            intermediate_values=t.intermediate_values, user_attrs={**t.user_attrs, "carried_from": previous}))
    study.add_trials(carried)
    return len(carried), skipped
