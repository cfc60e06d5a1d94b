"""When the storage path fills up mid-search: who hears of it, and the space kept for the last records.

Every write of a search to its run directory that fails with ``ENOSPC``/``EDQUOT`` — hpo's own
state files (:func:`hpo.rundir.write_json`), Ray's experiment-state saves
(:func:`hpo._compat.ray.atomic_uploads`), a trial's checkpoint (flagged in its result by
:mod:`hpo.session`) — is reported through :func:`notify` to the search watching that directory
(:func:`watch`); :class:`hpo.lifecycle.Collector` then stops the search as an interrupt does.

Ending cleanly needs a little space: Ray's last experiment-state save, ``outcomes.json``,
``trials.json``. A search therefore holds a small reserve file in its run directory
(:class:`Reserve`) and deletes it when the disk is found full, so those last writes fit.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RESERVE_BYTES", "RESERVE_FILE", "Reserve", "check_free", "describe", "notify", "watch"]

RESERVE_FILE = ".hpo-reserve"  # hidden: Ray and hpo's readers never look at it
RESERVE_BYTES = 8 * 2**20  # enough for the last state saves of a search of thousands of trials

_lock = threading.Lock()
_watchers: list[tuple[Path, Callable[[str], None]]] = []


@contextmanager
def watch(run_dir: str | os.PathLike[str], callback: Callable[[str], None]) -> Iterator[None]:
    """Call ``callback(path)`` (from whichever thread hit it) for every write under ``run_dir``
    that finds the disk full, while the block runs."""
    entry = (Path(run_dir).resolve(), callback)
    with _lock:
        _watchers.append(entry)
    try:
        yield
    finally:
        with _lock:
            _watchers.remove(entry)


def notify(path: str | os.PathLike[str]) -> bool:
    """A write to ``path`` failed for lack of space: tell the searches watching it. Returns
    whether one was watching (a write outside every search's run directory is nobody's)."""
    target = Path(path).resolve()
    with _lock:
        callbacks = [cb for root, cb in _watchers if target == root or root in target.parents]
    for cb in callbacks:
        cb(str(path))
    return bool(callbacks)


def describe(path: str | os.PathLike[str]) -> str:
    """Free space of the file system holding ``path``: ``"12.0 KiB free of 40.0 MiB"``."""
    try:
        usage = shutil.disk_usage(_existing(path))
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def check_free(path: str | os.PathLike[str], need: int = 2 * RESERVE_BYTES) -> None:
    """Refuse to start or continue a search at ``path`` with less than ``need`` bytes free there:
    room for its reserve and as much again. A search stopped by a full disk leaves about its
    reserve free, so ``hpo resume`` asks for space to be freed first instead of starting the
    trials it had not run, only to cut them at its first write.

    Raises:
        HpoConfigError: naming ``storage_path``, the path and its free space.
    """
    from hpo.errors import HpoConfigError, Shown

    if "://" in str(path):
        return  # (not a local path: nothing to measure)
    probe = _existing(path)
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < need:
        raise HpoConfigError("storage_path", f"needs at least {_size(need)} free to start or continue a search",
                             Shown(f"{describe(probe)} at {probe}"), "Free some space there, or use another "
                             "storage_path.")


def _existing(path: str | os.PathLike[str]) -> Path:
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # (not reached)


class Reserve:
    """A file of ``size`` bytes in the run directory, given back when the disk fills up.

    Best effort: where there is no room for it, the search runs without one (its last writes
    may then fail too; each is atomic, so nothing is left half-written).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> r = Reserve(d, 4096)
        >>> r.take(), (Path(d) / RESERVE_FILE).stat().st_size
        (True, 4096)
        >>> r.release(), (Path(d) / RESERVE_FILE).exists()
        (True, False)
    """

    def __init__(self, run_dir: str | os.PathLike[str], size: int = RESERVE_BYTES) -> None:
        self.path = Path(run_dir) / RESERVE_FILE
        self.size = size

    def take(self) -> bool:
        """Allocate the reserve (blocks really written, not a sparse file). Returns whether it fits."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, self.size)
                else:  # (macOS, Windows)
                    chunk = b"\0" * 2**20
                    for start in range(0, self.size, len(chunk)):
                        os.write(fd, chunk[: self.size - start])
            finally:
                os.close(fd)
        except OSError:
            self.path.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve; returns whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
