"""A new SQLite tracking store, made safely and cheaply: one process at a time opens a store
(a file lock beside it), and a new store is a copy of an empty, migrated template kept per MLflow
version in hpo's cache directory, renamed into place whole (never a half-migrated file)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpo._cache import cache_dir
from hpo._compat.mlflow import dispose_sqlite_engines

__all__ = ["sqlite_init_lock"]

log = logging.getLogger("hpo.tracking")


@contextmanager
def sqlite_init_lock(uri: str) -> Iterator[None]:
    """For an SQLite store, an exclusive ``flock`` beside the database file while a process opens
    it: MLflow creates and migrates a new database on first use, and two searches starting at once
    on one new file race in that migration (one fails with an alembic error). Other stores: no-op."""
    path = uri.split(":///", 1)[1] if uri.startswith("sqlite:///") else None
    if not path or path == ":memory:" or not Path(path).parent.is_dir():
        yield
        return
    import fcntl

    fd = os.open(f"{path}.hpo-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _create_sqlite_store(path)
        yield
    finally:
        os.close(fd)


def _create_sqlite_store(path: str) -> None:
    """Create a new SQLite store in a temporary file beside ``path`` and rename it into place:
    a process killed during MLflow's first-use migrations otherwise leaves a half-migrated file
    that MLflow never opens again ("table logged_models already exists"). The migrations cost
    1.5 s of CPU (beside the first trials, or before them): they run once per MLflow version into a
    template in hpo's cache directory (:func:`_store_template`), and a new store is a copy of it."""
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return
    import glob
    import shutil

    for left in glob.glob(glob.escape(path) + ".*.creating*"):  # a killed process's (we hold the lock)
        os.unlink(left)
    tmp = f"{path}.{os.getpid()}.creating"
    try:
        template = _store_template()
        if template is None:
            _migrate_new_store(tmp)
        else:
            shutil.copyfile(template, tmp)
            _adopt_store_copy(tmp)
        os.replace(tmp, path)
    finally:
        for left in glob.glob(glob.escape(tmp) + "*"):  # it failed: the file and its journal
            os.unlink(left)


def _migrate_new_store(path: str) -> None:
    """A new SQLite store at ``path``, made by MLflow itself (its migrations)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    dispose_sqlite_engines(path)


def _store_template() -> str | None:
    """An empty, fully migrated SQLite store for the installed MLflow, in hpo's cache directory
    (``$XDG_CACHE_HOME/hpo``, else ``~/.cache/hpo``), made on first use; None where it cannot be
    written (the store is then migrated in place)."""
    import mlflow

    cache = cache_dir()
    if cache is None:
        return None
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file() and template.stat().st_size > 0:
        return str(template)
    tmp = f"{template}.{os.getpid()}.creating"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for left in cache.glob(f"{template.name}.*.creating*"):  # a killed process's, not one at work now
            if time.time() - left.stat().st_mtime > 600:
                left.unlink(missing_ok=True)
        _migrate_new_store(tmp)
        os.replace(tmp, template)  # atomic: two processes making it at once each rename a whole one
    except OSError as exc:
        log.debug("hpo: no MLflow store template in %s (%s): migrating in place", cache, exc)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(template)


def _adopt_store_copy(path: str) -> None:
    """A copy of the template as MLflow would have made it here: the ``Default`` experiment's
    artifact location is resolved from the working directory when a store is created (``./mlruns``,
    as ``MlflowClient`` does), and its times are now."""
    import sqlite3

    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    now = int(time.time() * 1000)
    location = append_to_uri_path(resolve_uri_if_local(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH), "0")
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                        "WHERE experiment_id = 0", (location, now, now))
    finally:
        con.close()
