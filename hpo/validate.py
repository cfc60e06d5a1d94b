"""The one pass that checks an experiment before Ray starts or anything is written.

:func:`validate` is what ``hpo validate``, ``hpo run``, ``hpo resume`` and the Python API call:
milliseconds, no data loading, no Ray. Together with what :meth:`Experiment.from_dict` checks
(keys, types, names, space, strategy names, option values and their rules), it rejects every
setting that would otherwise fail after launch, each with an :class:`HpoConfigError` naming the
key path, the rule and the value, and saying how to fix it.

Example:
    >>> from hpo.config import Experiment
    >>> exp = Experiment.from_dict({
    ...     "name": "demo", "task": {"dataset": "iris", "epochs": 3, "batch_size": 0},
    ...     "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
    ...     "metric": "val_accuracy"})
    >>> validate(exp)
    Traceback (most recent call last):
    ...
    hpo.errors.HpoConfigError: task.batch_size: must be an integer >= 1, but got 0
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoConfigError

if TYPE_CHECKING:
    from hpo.config import Experiment

__all__ = ["URI_SCHEMES", "default_tracking_uri", "space_values", "tracking_uri_of", "validate"]

URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def validate(exp: Experiment, tracking_uri: str | None = None) -> None:
    """Check ``exp`` beyond what constructing it checked: the built-in task's keys, names and
    numbers (in ``task`` and in every value the space can give them), a custom trainable's import
    path, and, when tracking is on, the MLflow tracking URI (``tracking_uri`` overrides the
    file's, as ``--tracking-uri`` does). Loads no data and starts nothing.

    Raises:
        HpoConfigError: naming the key path, the rule and the value.
    """
    if exp.is_builtin:
        from hpo.train.task import check_task_settings

        check_task_settings(exp.task, space_values(exp), exp.resources.gpu, space_bounds=_space_bounds(exp))
    elif isinstance(exp.trainable, str):
        from hpo._imports import import_callable

        import_callable(exp.trainable)
    if exp.tracking.enabled:
        tracking_uri_of(exp, tracking_uri)
    check_storage_path(exp.storage_path)


def check_storage_path(storage_path: str, key: str = "storage_path") -> None:
    """``storage_path`` is a directory this process can write in, or one it can create: probed by
    creating and removing an empty directory in it (or in its nearest existing parent), so an
    unwritable path fails here, before Ray starts, and nothing is left behind.

    Raises:
        HpoConfigError: naming ``key`` with the path and why it cannot be written.
    """
    import tempfile

    path = Path(storage_path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise HpoConfigError(key, f"must be a directory hpo can create, but {existing} is a file", storage_path)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hpo-probe-", dir=existing))
    except OSError as exc:
        raise HpoConfigError(key, f"must be writable, but {existing} is not ({exc.strerror})", storage_path,
                             "Point storage_path at a directory this user can write (on every node).") from None


def space_values(exp: Experiment) -> dict[str, list[Any] | None]:
    """Parameter name -> every value it can take (None for a numeric range)."""
    return {n: p.values() for n, p in exp.space.params.items()}


def _space_bounds(exp: Experiment) -> dict[str, tuple[float, float]]:
    from hpo.params import Float, Int

    return {n: (p.low, p.high) for n, p in exp.space.params.items() if isinstance(p, (Float, Int))}


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``: MLflow 3 refuses its plain file store unless forced."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_uri_of(exp: Experiment, override: str | None) -> str:
    """The MLflow store a search writes to: ``--tracking-uri``, the experiment file, the
    environment, else ``sqlite:///<cwd>/mlflow.db``. Checked here, before anything is launched;
    credentials in the URI never reach a message.

    Example:
        >>> from hpo.config import Experiment
        >>> exp = Experiment.from_dict({"name": "d", "space": {"lr": 0.1}, "metric": "val_accuracy"})
        >>> tracking_uri_of(exp, "ftp://user:secret@host/x")
        Traceback (most recent call last):
        ...
        hpo.errors.HpoConfigError: --tracking-uri: must be an MLflow tracking URI starting with one of sqlite:, \
http:, https:, postgresql:, mysql:, mssql:, databricks:, but got 'ftp://***@host/x'
    """
    for key, uri in (("--tracking-uri", override), ("tracking.tracking_uri", exp.tracking.tracking_uri),
                     ("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI"))):
        if not uri:
            continue
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()  # "databricks" alone is a URI too
        shown = re.sub(r"//[^/@]*@", "//***@", uri)
        if scheme not in URI_SCHEMES:
            raise HpoConfigError(key, f"must be an MLflow tracking URI starting with one of "
                                 f"{', '.join(s + ':' for s in URI_SCHEMES)}", shown,
                                 "MLflow 3 refuses its plain file store: use sqlite:///path/mlflow.db"
                                 if scheme == "file" or ":" not in uri else None)
        if scheme == "sqlite":
            path = uri.split(":///", 1)[1] if ":///" in uri else ""
            try:
                if path and not Path(path).parent.is_dir():
                    raise HpoConfigError(key, "must name an SQLite file in an existing directory", shown)
                if path and Path(path).is_dir():  # raises for a name the file system cannot hold
                    raise HpoConfigError(key, "must name an SQLite file, not a directory", shown)
            except OSError as exc:
                raise HpoConfigError(key, "must name an SQLite file the file system can hold", shown,
                                     exc.strerror) from None
        return uri
    return default_tracking_uri()
