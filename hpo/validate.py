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

__all__ = ["URI_SCHEMES", "check_working_dir", "default_tracking_uri", "space_values", "tracking_uri_of", "validate",
           "working_dir_excludes"]

URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def validate(exp: Experiment, tracking_uri: str | None = None) -> None:
    """Check ``exp`` beyond what constructing it checked: the built-in task's keys, names and
    numbers (in ``task`` and in every value the space can give them), a custom trainable's import
    path, and, when tracking is on, the MLflow tracking URI (``tracking_uri`` overrides the
    file's, as ``--tracking-uri`` does). Loads no data and starts nothing.

    Raises:
        HpoConfigError: naming the key path, the rule and the value.
    """
    if exp.working_dir is not None:
        uri = tracking_uri_of(exp, tracking_uri) if exp.tracking.enabled else None
        check_working_dir(exp.working_dir, exp.storage_path, uri)
        from hpo._imports import add_search_path

        # The driver imports what the trials import (trainable, models, data loaders named by
        # import path) from the directory itself; Ray's workers from their copy of it.
        add_search_path(exp.working_dir)
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


# Never shipped with a working directory: version control, environments, caches, and what a
# search writes (run directories, MLflow stores); the storage path and an SQLite store inside the
# directory are added by path.
WORKING_DIR_EXCLUDES = (".git", ".venv", "venv", "__pycache__", ".hpo-probe-*", "hpo_results", "mlruns",
                        "mlflow.db", "mlflow.db-journal", "optuna.db")


def working_dir_excludes(working_dir: str, storage_path: str, tracking_uri: str | None = None) -> list[str]:
    """The ``excludes`` (gitignore patterns, as Ray reads them) for shipping ``working_dir``: the
    names in ``WORKING_DIR_EXCLUDES`` anywhere, plus ``storage_path`` and an SQLite tracking store
    when they lie inside it.

    Example:
        >>> working_dir_excludes("/code", "/code/runs", "sqlite:////tmp/m.db")[-1]
        '/runs'
    """
    from hpo._compat.ray import WORKING_DIR_DEFAULT_EXCLUDES

    root = Path(working_dir).expanduser().absolute()
    out = list(dict.fromkeys([*WORKING_DIR_DEFAULT_EXCLUDES, *WORKING_DIR_EXCLUDES]))
    inside = [Path(storage_path).expanduser().absolute()]
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        inside.append(Path(tracking_uri.split(":///", 1)[1]).expanduser().absolute())
    for path in inside:
        if path != root and path.is_relative_to(root):
            out.append("/" + path.relative_to(root).as_posix())
    return out


def _upper_bound_bytes(root: Path, excludes: list[str], limit: int) -> dict[str, int]:
    """Bytes per top-level entry of what Ray would zip, leaving out ``excludes`` (names anywhere,
    ``/path`` from the root) but not what ``.gitignore``/``.rayignore`` files leave out: at least
    Ray's figure. Stops once over ``limit``."""
    names = {e for e in excludes if not e.startswith("/")}
    anchored = {e[1:] for e in excludes if e.startswith("/")}
    sizes: dict[str, int] = {}
    total, seen = 0, set()
    stack = [root]
    while stack and total < limit:
        d = stack.pop()
        try:
            real = d.resolve()
            if real in seen:  # a symbolic link back up the tree
                continue
            seen.add(real)
            entries = list(d.iterdir())
        except OSError:
            continue
        for p in entries:
            rel = p.relative_to(root)
            if _fnmatch_any(p.name, names) or rel.as_posix() in anchored:
                continue
            if p.is_dir():
                stack.append(p)
            elif p.is_file():
                n = p.stat().st_size + 2 * len(str(rel)) + 76  # a zip entry's two headers
                sizes[rel.parts[0]] = sizes.get(rel.parts[0], 0) + n
                total += n
    return sizes


def _fnmatch_any(name: str, patterns: set[str]) -> bool:
    """Whether ``name`` matches one of the shell-style ``patterns``."""
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, p) for p in patterns)


def check_working_dir(working_dir: str, storage_path: str = "hpo_results", tracking_uri: str | None = None,
                      key: str = "working_dir") -> None:
    """``working_dir`` is a directory Ray can ship to every node: it exists, is a directory, and
    what would be shipped (less :func:`working_dir_excludes`, ``.gitignore`` and ``.rayignore``)
    is under Ray's size limit for a package (512 MiB unless ``RAY_max_grpc_message_size`` says
    otherwise). Ray itself fails only at ``ray.init``, after minutes of hashing and zipping.

    Raises:
        HpoConfigError: naming ``key``, with the size and the largest entries when it is too large.
    """
    from hpo._compat.ray import shipped_bytes, working_dir_max_bytes
    from hpo.errors import Shown

    root = Path(working_dir).expanduser()
    try:
        exists = root.exists()
    except (OSError, ValueError) as exc:  # a name the file system cannot hold
        raise HpoConfigError(key, "must name a directory the file system can hold", working_dir,
                             getattr(exc, "strerror", None) or str(exc)) from None
    if not exists:
        raise HpoConfigError(key, "must be an existing directory", working_dir,
                             "Give the directory holding your trainable's module (relative to the experiment "
                             "file; `--working-dir` relative to the current directory).")
    if not root.is_dir():
        raise HpoConfigError(key, "must be a directory (Ray ships a directory's files to every node)", working_dir)
    if not os.access(root, os.R_OK | os.X_OK):
        raise HpoConfigError(key, "must be a directory this user can read", working_dir)
    limit = working_dir_max_bytes()
    excludes = working_dir_excludes(working_dir, storage_path, tracking_uri)
    sizes = _upper_bound_bytes(root.absolute(), excludes, limit)
    if sum(sizes.values()) < limit:
        return
    # Over the limit by hpo's count: ask Ray's own packaging, which honours the ignore files.
    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    sizes = shipped_bytes(str(root), excludes, include_gitignore)
    total = sum(sizes.values())
    if total < limit:
        return
    largest = ", ".join(f"{name} {n / 2**20:.1f} MiB" for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    raise HpoConfigError(key, f"must hold less than Ray's {limit / 2**20:.0f} MiB limit for a working directory "
                         f"it ships to every node", Shown(f"{working_dir} with {total / 2**20:.1f} MiB to ship "
                                                          f"(largest: {largest})"),
                         "Leave data and outputs out with a .rayignore (or .gitignore) file in that directory, "
                         "or point working_dir at the code alone; Ray's limit is RAY_max_grpc_message_size.")


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
