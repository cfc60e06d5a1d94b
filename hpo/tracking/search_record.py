"""What a search records in MLflow about itself: the parent run's params, tags and artifacts.

:func:`search_tracker` builds the :class:`~hpo.tracking.mlflow.MlflowTracker` of a search from its
validated experiment and run directory, the same for ``hpo run``, ``hpo resume`` and
``hpo sync-mlflow``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from hpo.config import Experiment
from hpo.rundir import STATE_FILE
from hpo.strategies import capabilities
from hpo.validate import tracking_uri_of

__all__ = ["search_tracker", "space_hash"]

def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("hpo", "ray", "optuna", "torch", "mlflow"):
        try:
            out[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def space_hash(exp: Experiment) -> str:
    """16 hex digits identifying the search space (the same space gives the same hash)."""
    return hashlib.sha256(json.dumps(exp.space.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def search_tracker(exp: Experiment, run_dir: Path, outcomes: Any, tracking_uri: str | None, *,
                   write_files: Callable[[Any, Path], Any] | None = None,
                   model_logger: Callable[[str, str, dict[str, Any], str | None], str] | None = None) -> Any:
    """The MLflow tracker of the search in ``run_dir`` (its parent run's params, tags, artifacts);
    ``write_files`` and ``model_logger`` are what it logs at the end (see :class:`MlflowTracker`)."""
    import yaml

    from hpo.tracking.mlflow import MlflowTracker

    uri = tracking_uri_of(exp, tracking_uri)
    spec = exp.strategy.spec()
    tags = {"hpo.search": exp.name, "hpo.storage_path": str(run_dir), **_versions()}
    commit = _git_commit()
    if commit:
        tags["git.commit"] = commit
    params = {"searcher": spec.searcher, "scheduler": spec.scheduler, "seed": spec.seed,
              "num_samples": exp.resolved_num_samples(), "metric": ",".join(exp.metrics),
              "mode": ",".join(exp.modes), "space_hash": space_hash(exp),
              **{f"searcher.{k}": v for k, v in spec.searcher_options.items()},
              **{f"scheduler.{k}": v for k, v in spec.scheduler_options.items()}}
    record = exp.to_record()  # passwords masked: none reaches MLflow
    artifacts = {"experiment.yaml": yaml.safe_dump(record, sort_keys=False),
                 "space.yaml": yaml.safe_dump(record["space"], sort_keys=False)}
    return MlflowTracker(uri, exp.tracking.experiment_name or exp.name, run_dir.name, str(run_dir / STATE_FILE),
                         outcomes, parent_params=params, parent_tags=tags, artifacts=artifacts,
                         flush_interval_s=exp.tracking.flush_interval_s, flush_timeout_s=exp.tracking.flush_timeout_s,
                         hparam_schedule=capabilities(spec, exp.budget).rewrites_configs,
                         log_model=exp.tracking.log_model,
                         register_model=exp.tracking.register_model, metrics=exp.metrics,
                         write_files=write_files, model_logger=model_logger)
