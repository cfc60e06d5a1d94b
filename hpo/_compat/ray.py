"""Ray Tune internals hpo relies on (checked against Ray 2.60.0)."""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["WORKING_DIR_DEFAULT_EXCLUDES", "asha_bracket", "atomic_uploads", "bracket_rungs",
           "forget_unknown_live_trials", "job_working_dir", "kill_trial_actor", "reopen_search", "restored_run_config",
           "shipped_bytes", "working_dir_max_bytes"]


def kill_trial_actor(trial: Any) -> bool:
    """Kill the Ray actor running ``trial`` (however stuck it is: also inside C code); Ray then
    sees the trial fail as if its worker died. Ray 2.60 keeps the handle on the private
    ``Trial.temporary_state.ray_actor``. Returns whether there was an actor to kill."""
    import ray

    actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
    if actor is None:
        return False
    ray.kill(actor, no_restart=True)
    return True


def restored_run_config(tuner: Any) -> Any:
    """The ``RunConfig`` a ``Tuner.restore`` unpickled from ``tuner.pkl`` (its callbacks are the
    search's own objects). Ray 2.60 keeps it on the private ``Tuner._local_tuner``."""
    return tuner._local_tuner.get_run_config()


# Ray's own search-algorithm state files and the key that says "no more trials" (Ray 2.60.0:
# SearchGenerator.get_state()["finished"], BasicVariantGenerator.get_state()["_finished"]).
_SEARCH_STATES = (("search_gen_state-*.json", "finished"), ("basic-variant-state-*.json", "_finished"))


def reopen_search(run_dir: Any) -> bool:
    """Let a search Ray stopped early suggest trials again on resume.

    When a search stops early Ray marks its search algorithm finished and saves it so; an
    interrupted search resumed later must go on with the trials it had not started. Returns
    whether a saved state was changed.
    """
    import glob
    import os
    import uuid

    import ray.cloudpickle as cloudpickle

    changed = False
    for pattern, key in _SEARCH_STATES:
        paths = glob.glob(os.path.join(str(run_dir), pattern))
        if not paths:
            continue
        newest = max(paths)  # Ray's own choice (_load_newest_checkpoint)
        with open(newest, "rb") as f:
            state = cloudpickle.load(f)
        if isinstance(state, dict) and state.get(key):
            state[key] = False
            tmp = os.path.join(str(run_dir), f".{uuid.uuid4()}-reopen.tmp")
            with open(tmp, "wb") as f:
                cloudpickle.dump(state, f)
            os.replace(tmp, newest)
            changed = True
    return changed


_uploads_lock = threading.Lock()
_uploads: list[Any] = [None, 0]  # Ray's own upload function, searches in this process inside atomic_uploads()
_keep: set[str] = set()  # patterns of the run directory's own files (hpo's), never uploaded over


@contextmanager
def atomic_uploads(keep: Collection[str] = ()) -> Iterator[None]:
    """While the block runs, Ray's uploads of the experiment directory to a local storage path
    (its experiment-state saves: ``experiment_state-*.json``, the searcher's state, the trials'
    ``result.json``, ``error.pkl``) write each file under a temporary name and rename it into
    place, as hpo's own files are written, and a full disk is reported through
    :func:`hpo.disk_space.notify` instead of raised.

    Ray 2.60 copies those files in place (``pyarrow.fs.copy_files`` from its driver staging
    directory, ``ray.train._internal.storage._upload_to_fs_path``, looked up by
    ``_FilesystemSyncer`` at each sync): a disk that fills during a save leaves a truncated
    ``experiment_state-*.json`` that ``Tuner.restore`` cannot read, and truncated ``error.pkl``
    files that make ``Tuner.fit`` raise ``EOFError``. Other storage (S3, GCS) and uploads with
    excludes go through Ray's own code. Only the driver's uploads are affected: a trial's
    checkpoints are written by its worker, each into a new directory.

    ``keep``: names (``fnmatch`` patterns) of the files and directories hpo writes into the run
    directory itself; Ray never uploads over them (on any storage). ``Tuner.restore`` downloads
    the whole run directory into Ray's staging directory and each save uploads all of it again,
    so a resumed search's newer ``hpo_state.json`` (its MLflow parent run, recorded after the
    resume began) was replaced by the copy taken when it resumed: the next resume opened a
    second parent run.
    """
    from ray.train._internal import storage

    with _uploads_lock:  # several searches in one process: the first installs it, the last removes it
        _keep.update(keep)
        if _uploads[1] == 0:
            _uploads[0] = storage._upload_to_fs_path
            storage._upload_to_fs_path = _atomic_upload
        _uploads[1] += 1
    try:
        yield
    finally:
        with _uploads_lock:
            _uploads[1] -= 1
            if _uploads[1] == 0:
                storage._upload_to_fs_path = _uploads[0]


def _atomic_upload(local_path: str, fs: Any, fs_path: str, exclude: list[str] | None = None) -> None:
    """``_upload_to_fs_path`` as :func:`atomic_uploads` installs it."""
    import pyarrow.fs

    from hpo.disk_space import notify
    from hpo.errors import is_disk_full

    patterns = [*(exclude or []), *sorted(_keep), *(f"{k}/*" for k in sorted(_keep))]
    if not isinstance(fs, pyarrow.fs.LocalFileSystem):
        if os.path.isfile(local_path) and _excluded(os.path.basename(local_path), patterns):
            return None
        return _uploads[0](local_path, fs, fs_path, patterns or None)  # Ray's own
    try:
        _copy_atomically(local_path, fs_path, patterns)
    except OSError as exc:
        if not is_disk_full(exc) or not notify(fs_path):
            raise
        try:
            _copy_atomically(local_path, fs_path, patterns)  # the search gave back its reserve: once more
        except OSError as again:
            if not is_disk_full(again):
                raise  # (a full disk is the search's to report, and it stops)
    return None


def forget_unknown_live_trials(search_alg: Any, live_ids: Collection[str]) -> list[str]:
    """Free the places of a ``ConcurrencyLimiter`` held by trials Ray Tune does not run (Ray 2.60).

    The limiter counts the trials it suggested until they complete (``live_trials``). Its count
    is saved with the searcher's state (``search_gen_state-*.json``), apart from the trial list
    (``experiment_state-*.json``), and a resumed search restores both: after a ``kill -9``
    between the two saves, or while Ray copied them, the count can hold trials the trial list
    never had, or had as ended. Those never complete again, and with ``max_concurrent`` of them
    the limiter suggests nothing any more: the search waits for ever with no trial running.
    Every id not in ``live_ids`` (the trials Ray Tune has pending, running or paused) is
    dropped; returns the ids dropped."""
    live = getattr(search_alg, "live_trials", None)
    if not isinstance(live, set):
        return []
    stale = sorted(live - set(live_ids))
    for trial_id in stale:
        live.discard(trial_id)
        search_alg.cached_results.pop(trial_id, None)
    if stale:
        search_alg.num_unfinished_live_trials = len(live - set(search_alg.cached_results))
    return stale


def _excluded(relpath: str, patterns: list[str]) -> bool:
    """Whether a file's path (relative to the uploaded directory) matches a pattern, as Ray's
    ``_ExcludingLocalFilesystem`` matches its ``exclude`` list."""
    import fnmatch

    return any(fnmatch.fnmatch(relpath, p) for p in patterns)


def _copy_atomically(source: str, destination: str, exclude: list[str] | None = None) -> None:
    """Copy a file, or a directory's files, each to a temporary name beside its target and then
    renamed over it; files already there with the same size and modification time are kept, and
    files matching ``exclude`` (their path relative to ``source``; a file's own name) are not copied."""
    import shutil
    import uuid

    if os.path.isfile(source):
        pairs = [] if _excluded(os.path.basename(source), exclude or []) else [(source, destination)]
    else:
        pairs = [(os.path.join(root, name), os.path.join(destination, os.path.relpath(root, source), name))
                 for root, _, names in os.walk(source) for name in names
                 if not _excluded(os.path.normpath(os.path.join(os.path.relpath(root, source), name)), exclude or [])]
    for src, dst in pairs:
        st = os.stat(src)
        try:
            d = os.stat(dst)
            if (d.st_size, d.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                continue
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


def asha_bracket(scheduler: Any, trial_id: str) -> Any:
    """The ASHA bracket a trial belongs to (Ray 2.60: ``AsyncHyperBandScheduler._trial_info``)."""
    return scheduler._trial_info.get(trial_id)


def bracket_rungs(bracket: Any) -> list[tuple[float, dict[str, Any]]]:
    """An ASHA bracket's rungs, highest milestone first, each with the trials recorded there
    (Ray 2.60: ``_Bracket._rungs``, ``[(milestone, {trial id: reward})]``)."""
    return list(bracket._rungs)


# -- runtime_env working_dir (Ray 2.60.0: ray/_private/runtime_env/packaging.py, ray_constants.py) --------------

# What Ray leaves out of every working_dir package (RAY_RUNTIME_ENV_DEFAULT_EXCLUDES); hpo names
# them again in its own excludes, so RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES cannot put them back.
WORKING_DIR_DEFAULT_EXCLUDES = (".git", ".venv", "venv", "__pycache__")


def working_dir_max_bytes() -> int:
    """The size a working_dir package must stay under: Ray zips the directory (files stored, not
    compressed) and refuses a zip of ``GCS_STORAGE_MAX_SIZE`` bytes or more, the largest gRPC
    message: ``RAY_max_grpc_message_size``, else 512 MiB. Read without importing Ray."""
    import os

    return int(os.environ.get("RAY_max_grpc_message_size", 512 * 1024 * 1024))


def shipped_bytes(directory: str, excludes: list[str], include_gitignore: bool = True) -> dict[str, int]:
    """The bytes Ray's own packaging would put in ``directory``'s working_dir zip, per top-level
    entry (``{"data": 123, "train.py": 456}``): its traversal, its ``excludes`` patterns and the
    ``.gitignore``/``.rayignore`` files it honours (``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1`` turns
    ``.gitignore`` off, as in ``ray.init``). Imports Ray: hpo's own walk (which cannot read the ignore
    files) comes first and asks this only when its upper bound is over the limit."""
    from pathlib import Path

    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    root = Path(directory).absolute()
    sizes: dict[str, int] = {}

    def handler(path: Path) -> None:
        if path.is_file():
            rel = path.relative_to(root)
            sizes[rel.parts[0]] = sizes.get(rel.parts[0], 0) + path.stat().st_size + 2 * len(str(rel)) + 76

    _dir_travel(root, [_get_excludes(root, excludes)], handler, include_gitignore=include_gitignore)
    return sizes


def job_working_dir() -> str | None:
    """The working directory of the Ray job this driver runs in (``ray job submit --working-dir``),
    or None. Ray's job supervisor hands the job's config to the driver in the environment variable
    ``RAY_JOB_CONFIG_JSON_ENV_VAR`` (JSON, ``runtime_env.working_dir``), and ``ray.init`` refuses a
    ``runtime_env`` that sets the same field ("Failed to merge the Job's runtime env")."""
    import json
    import os

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        env = (json.loads(raw) or {}).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    value = env.get("working_dir") if isinstance(env, dict) else None
    return str(value) if value else None
