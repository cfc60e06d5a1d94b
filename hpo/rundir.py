"""The run directory of a search: its layout, its state files, and reading it back.

A search's run directory is ``<storage_path>/<name>-<YYYYmmdd-HHMMSS>[.<n>]``. It holds Ray's
experiment state and trial directories and hpo's own files:

* ``hpo_state.json``: the validated experiment, when it was created, and the MLflow parent
  run of each tracking store the search was recorded in;
* ``outcomes.json``: how every trial that ended so far ended (written with each of Ray's
  experiment-state saves, so it matches what Ray would resume);
* ``trials.json``: every trial's final record, written when the search ends;
* ``optuna.journal``: the search's Optuna study (every searcher's trials), written with
  ``trials.json`` for optuna-dashboard (:mod:`hpo.study_file`; an export: resume never reads it);
* ``night.json`` (``hpo nightly`` only): the night's date, lineage and data fingerprint, and,
  once it ended, its exit code and summary.

A night of ``hpo nightly`` has the run directory ``<storage_path>/<name>-<YYYY-MM-DD>``: one per date.

Every file here is written to a temporary name and renamed into place, so a crash never leaves
a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from hpo.disk_space import RESERVE_FILE, notify
from hpo.errors import HpoConfigError, is_disk_full

__all__ = ["DECISIONS_FILE", "NIGHT_FILE", "OUTCOMES_FILE", "OWN_FILES", "STATE_FILE", "TRIALS_FILE", "find_run_dir",
           "has_ray_state", "new_run_dir", "night_run_dir", "night_run_dirs", "read_json", "read_state",
           "recorded_tracking_uri", "saved_records", "set_aside_ray_files", "trial_histories", "update_state",
           "write_json"]

STATE_FILE = "hpo_state.json"
TRIALS_FILE = "trials.json"  # every trial's record, written when a search ends
OUTCOMES_FILE = "outcomes.json"  # how each trial ended so far, written with Ray's experiment state
NIGHT_FILE = "night.json"  # hpo nightly: the night's lineage and fingerprint, then its exit code and summary
DECISIONS_FILE = "decisions.jsonl"  # every question a packed trial asked its scheduler, and the answer (hpo.decisions)
# Everything hpo itself writes into a run directory (fnmatch patterns): Ray's uploads of its staging
# copy never write over these (hpo._compat.ray.atomic_uploads): the study export (hpo.study_file),
# the disk reserve (hpo.disk_space), the scheduler's decisions log (hpo.decisions), the best model
# (hpo.train.best), each completed trial's final model (trial_models/, written by the trials:
# hpo.train.model_file), a failed start set aside.
OWN_FILES = (STATE_FILE, TRIALS_FILE, OUTCOMES_FILE, NIGHT_FILE, DECISIONS_FILE, "optuna.journal*", ".optuna.journal.*",
             RESERVE_FILE, "best_model", "trial_models", ".abandoned-*", ".*.tmp")
_STAMP = r"\d{8}-\d{6}(?:\.\d+)?"
_DATE = r"\d{4}-\d{2}-\d{2}"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically: a temporary file in the same directory, then a rename
    (a failed write leaves the previous file as it was; a full disk is reported to the search)."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            notify(path)  # the search writing here stops (see hpo.disk_space)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def read_state(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / STATE_FILE, {})


def recorded_tracking_uri(state: dict[str, Any], given: str | None, key: str = "--tracking-uri") -> str | None:
    """The tracking URI to continue a search's records with: ``given``, else the recorded one. A
    recorded URI had its password masked (hpo writes none to disk): then the real one must be given
    again, by ``key`` or ``MLFLOW_TRACKING_URI``, and match it.

    Raises:
        HpoConfigError: a given URI that is not the recorded store, or a masked one not given again.
    """
    from hpo.config import mask_url

    recorded = state.get("tracking_uri")
    if given is None and recorded and "***" in recorded:
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if not env or mask_url(env) != recorded:
            raise HpoConfigError(key, "must be given again: the search records to a store whose URI has a "
                                 "password, which hpo does not write to disk", recorded,
                                 "Pass the same URI with its password (or set MLFLOW_TRACKING_URI).")
        given = env
    if given and recorded and mask_url(given) != recorded and given != recorded:
        raise HpoConfigError(key, f"must be the store the search is recorded in ({recorded}) to continue its runs",
                             mask_url(given), "Resume without it, then copy the search with "
                             "`hpo sync-mlflow --tracking-uri`.")
    return given or recorded


def update_state(run_dir: Path, **updates: Any) -> dict[str, Any]:
    """Merge keys into ``hpo_state.json`` (atomically)."""
    state = {**read_state(run_dir), **updates}
    write_json(Path(run_dir) / STATE_FILE, state)
    return state


def new_run_dir(storage_path: str | os.PathLike[str], name: str) -> Path:
    """A fresh, not yet existing ``<storage_path>/<name>-<timestamp>[.<n>]`` (not created)."""
    base = Path(storage_path).resolve() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir = base.with_name(f"{base.name}.{n}")  # from the base: a name may contain dots itself
        n += 1
    return run_dir


def night_run_dir(storage_path: str | os.PathLike[str], name: str, date: str) -> Path:
    """The run directory of the night ``date`` (``YYYY-MM-DD``) of search ``name``: always the same path.

    Example:
        >>> night_run_dir("/runs", "mlp", "2026-11-29").as_posix()
        '/runs/mlp-2026-11-29'
    """
    return Path(storage_path).resolve() / f"{name}-{date}"


def night_run_dirs(storage_path: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """date -> run directory of every night of search ``name`` under ``storage_path``, in date order
    (``mlp`` never matches ``mlp-small-2026-11-29``)."""
    root = Path(storage_path)
    pattern = re.compile(re.escape(name) + "-(" + _DATE + ")$")
    found = {m.group(1): d.resolve() for d in root.glob("*") if d.is_dir() and (m := pattern.fullmatch(d.name))}
    return dict(sorted(found.items()))


def find_run_dir(name_or_path: str, storage_path: str = "hpo_results") -> Path:
    """A run directory from its path, or the newest run of exactly that search name under ``storage_path``.

    ``mlp`` finds ``mlp-20261129-101500`` but never ``mlp-small-20261129-101500``.
    """
    p = Path(name_or_path)
    if (p / STATE_FILE).exists():
        return p.resolve()
    root = Path(storage_path)
    pattern = re.compile(re.escape(name_or_path) + "-" + _STAMP + "$")
    candidates = [d for d in root.glob("*") if pattern.fullmatch(d.name) and (d / STATE_FILE).exists()]
    if not candidates:
        raise HpoConfigError("name_or_path", f"must name a run directory or a search under {root.resolve()}",
                             name_or_path)

    def order(d: Path) -> tuple[str, int]:
        stamp = d.name[len(name_or_path) + 1:]
        head, _, n = stamp.partition(".")
        return head, int(n or 0)

    return max(candidates, key=order).resolve()


def saved_records(run_dir: Path) -> list[dict[str, Any]]:
    """The trial records of ``trials.json`` (empty if the search never got to write it)."""
    return list((read_json(Path(run_dir) / TRIALS_FILE, {}) or {}).get("trials", []))


def trial_histories(run_dir: Path) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """trial id -> (config, every result in order), from Ray's per-trial ``result.json`` files.

    A packed Ray trial's results are split into the trials it carried, each under its own id.
    Trials that never reported are left out.
    """
    from hpo.wire import PACK_KEY, split_result

    out: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for path in sorted(Path(run_dir).glob("*/result.json")):
        lines = []
        for ln in path.read_text().splitlines():
            try:
                lines.append(json.loads(ln))
            except ValueError:  # the last line of a killed search may be cut short
                break
        if not lines:
            continue
        tid = lines[0]["trial_id"]
        params = path.with_name("params.json")
        try:
            config = json.loads(params.read_text()) if params.exists() else lines[0].get("config", {})
        except ValueError:
            config = lines[0].get("config", {})
        if PACK_KEY not in config:
            out[tid] = (config, lines)
            continue
        for sid, sub_config in config[PACK_KEY]:  # a packed Ray trial: each trial it carries on its own
            out[sid] = (sub_config, [])
        for line in lines:
            for sid, sub in split_result(line):
                if sid in out:
                    out[sid][1].append(sub)
    return {tid: v for tid, v in out.items() if v[1]}


def has_ray_state(run_dir: Path) -> bool:
    """Whether Ray saved this search's experiment state: only then can ``Tuner.restore`` resume it
    (a search killed between writing ``tuner.pkl`` and Ray's first state save cannot be)."""
    run_dir = Path(run_dir)
    return (run_dir / "tuner.pkl").exists() and any(run_dir.glob("experiment_state-*.json"))


def set_aside_ray_files(run_dir: Path) -> Path | None:
    """Move what a start that never saved Ray's state left (``tuner.pkl``, trial directories) into
    ``.abandoned-<time>/`` in the run directory, so a fresh start there neither trips over it nor
    counts its trials; hpo's own state files stay. Returns where they went (None: nothing there)."""
    run_dir = Path(run_dir)
    keep = {STATE_FILE, OUTCOMES_FILE, TRIALS_FILE, NIGHT_FILE}
    leftovers = [p for p in run_dir.iterdir() if p.name not in keep and not p.name.startswith(".")]
    if not leftovers:
        return None
    target = run_dir / f".abandoned-{time.strftime('%Y%m%d-%H%M%S')}"
    target.mkdir(exist_ok=True)
    for p in leftovers:
        os.replace(p, target / p.name)
    return target
