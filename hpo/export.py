"""``hpo export``: a finished search's best model as files that load with or without hpo."""

from __future__ import annotations

import os
from pathlib import Path

from hpo.config import Experiment
from hpo.errors import HpoConfigError
from hpo.results import Results, TrialRecord
from hpo.rundir import find_run_dir, read_state, saved_records
from hpo.train.best import export_model, recover
from hpo.train.builtin import builtin_task, check_before_launch
from hpo.train.model_file import BEST_DIR, MODEL_FILE

__all__ = ["export_best"]


def export_best(name_or_path: str, out: str | os.PathLike[str], storage_path: str = "hpo_results") -> list[Path]:
    """``hpo export``: the best model of a finished search, recovered first if the search kept none."""
    run_dir = find_run_dir(name_or_path, storage_path)
    model_file = run_dir / BEST_DIR / MODEL_FILE
    if not model_file.exists():
        exp = Experiment.from_dict(read_state(run_dir)["experiment"])
        if not exp.is_builtin:
            raise HpoConfigError("export", "needs a search of the built-in task (a user trainable keeps its own "
                                 "models)", str(run_dir))
        records = saved_records(run_dir)
        results = Results(exp.name, exp.metrics, exp.modes, [TrialRecord(**r) for r in records], str(run_dir))
        best = results.best_trial
        if best is None:
            raise HpoConfigError("export", "needs a search with a completed trial", str(run_dir))
        data = check_before_launch(exp)
        out_ = recover({**builtin_task(exp), **best.config}, data, max(1, int(exp.resources.cpu)), best.checkpoint)
        model_file.parent.mkdir(parents=True, exist_ok=True)
        model_file.write_bytes(out_["model"])
    return export_model(model_file, Path(out))
