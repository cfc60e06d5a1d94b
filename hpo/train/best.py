"""The best trial's model: the one the trial kept (or, failing that, rebuilt), tested, exported, loaded.

At the end of a built-in search the best completed trial's model is taken from the trial
itself: a trial that completes its budget saves its final model and its scores on the held-out
test part (:func:`hpo.train.trial.keep_final_model`, ``trial_models/`` in the run directory), so
the end copies that file to ``best_model/model.pt`` and reports those scores — the model that
was validated, tested once — with no Ray task, no torch import and no training in the driver.
Only when that model is missing (a failed write, a search from before trials kept models) or
belongs to another step, is the trial rebuilt in a Ray task, and a log line says so: from its
final checkpoint when it kept one, otherwise by retraining its config with the same seed and
thread count, which reproduces the trial's model exactly on a CPU. With cross-validation the
best configuration is refit on all development rows (train + validation) before testing.

``model.pt`` is self-contained for :func:`hpo.train.model_file.load_model`: weights, the trial's config and the
feature scaling, so the loaded module takes raw features. ``hpo export`` adds a
``torch.export`` program (``model.pt2``) that loads without hpo.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hpo.train.model_file import (
    BEST_DIR,
    MODEL_FILE,
    TRIAL_MODELS,
    load_payload,
    model_payload,
    predictor,
    read_trial_scores,
    trial_model_files,
)

log = logging.getLogger("hpo")


def recover(config: dict[str, Any], data: Any, threads: int, checkpoint_dir: str | None) -> dict[str, Any]:
    """Rebuild one trial's final model, test it, and return the saved bytes with what it measured."""
    import torch

    from hpo.train.loop import TaskRun

    cv = int(config.get("cv_folds", 0)) >= 2
    run = TaskRun(config, data, threads, refit=cv)
    source, val = "retrained", {}
    state_file = Path(checkpoint_dir or "") / "state.pt"
    if checkpoint_dir and not cv and state_file.exists():
        state = load_payload(state_file)
        if state.get("epoch") == run.cfg.epochs:
            run.load_state_dict(state)
            source = "checkpoint"
    if source == "retrained":
        history = list(run.epochs())
        val = history[-1] if history else {}
    test = run.trainers[0].evaluate_test()
    buf = io.BytesIO()
    torch.save(model_payload(run), buf)
    return {"test": {f"test_{k}": v for k, v in test.items()}, "val": val, "source": source,
            "model": buf.getvalue(), "cross_validated": cv}


def kept_model(run_dir: Path, trial: Any) -> tuple[Path, dict[str, Any]] | None:
    """The model a trial kept at its end and its scores, when they are the trial's as recorded:
    saved at the step it ended at, with the metrics it reported there. None otherwise."""
    record = read_trial_scores(run_dir, trial.trial_id)
    if record is None or record.get("step") != trial.steps:
        return None
    saved = record.get("metrics") or {}
    if any(saved.get(k) != v for k, v in trial.metrics.items() if k.startswith("val_")):
        return None  # another run of this trial (an earlier attempt) left it
    return trial_model_files(run_dir, trial.trial_id)[0], record


def recover_best(results: Any, task: dict[str, Any], data: Any, resources: dict[str, float],
                 run_dir: Path) -> dict[str, Any] | None:
    """The search's best trial's model: writes ``best_model/`` and returns its summary (``source``:
    ``trial`` when the trial's own saved model was taken, ``checkpoint`` or ``retrained`` when it
    had to be rebuilt in a Ray task)."""
    best = results.best_trial
    if best is None:
        return None
    config = {**task, **best.config}
    cv = int(config.get("cv_folds", 0)) >= 2
    kept = None if cv else kept_model(run_dir, best)
    target = run_dir / BEST_DIR
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / (MODEL_FILE + ".tmp")
    if kept is not None:
        shutil.copyfile(kept[0], tmp)
        tmp.replace(target / MODEL_FILE)
        summary: dict[str, Any] = {"trial_id": best.trial_id, "source": "trial",
                                   "test_metrics": kept[1]["test_metrics"], "cross_validated": False,
                                   "path": str(target / MODEL_FILE)}
    else:
        if not cv:
            log.warning("hpo: the best trial %s kept no final model in %s: training it again", best.trial_id,
                        run_dir / TRIAL_MODELS)
        import ray

        fn = ray.remote(num_cpus=resources.get("cpu", 1), num_gpus=resources.get("gpu", 0))(recover)
        out = ray.get(fn.remote(config, data, max(1, int(resources.get("cpu", 1))), best.checkpoint))
        tmp.write_bytes(out["model"])
        tmp.replace(target / MODEL_FILE)
        summary = {"trial_id": best.trial_id, "source": out["source"], "test_metrics": out["test"],
                   "cross_validated": out["cross_validated"], "path": str(target / MODEL_FILE)}
        if out["source"] == "retrained" and not out["cross_validated"]:
            # On a CPU the retrained model is the trial's own: same data, seed and threads.
            summary["reproduced"] = all(
                np.isclose(out["val"].get(k, np.nan), v, rtol=1e-6, atol=1e-9)
                for k, v in best.metrics.items() if k.startswith("val_"))
    (target / "best.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def drop_other_models(run_dir: Path, keep: str | None) -> int:
    """Delete every file in ``trial_models/`` but the final model of trial ``keep`` (the best) and its
    scores: no other trial can become the best later (a resumed search's new trials keep their own).
    Returns how many files went."""
    spare = {p.name for p in trial_model_files(run_dir, keep)} if keep else set()
    try:
        entries = [e for e in os.scandir(Path(run_dir) / TRIAL_MODELS) if e.name not in spare]
    except OSError:
        return 0
    for entry in entries:
        Path(entry.path).unlink(missing_ok=True)
    return len(entries)


def export_model(model_file: Path, out_dir: Path) -> list[Path]:
    """Write ``model.pt`` (for :func:`load_model`), ``model.pt2`` (``torch.export``) and ``config.json``."""
    import shutil

    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if model_file.resolve() != (out_dir / MODEL_FILE).resolve():
        shutil.copyfile(model_file, out_dir / MODEL_FILE)
    written.append(out_dir / MODEL_FILE)
    payload = load_payload(model_file)
    module = predictor(payload)
    example = torch.as_tensor(payload["example"])
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out_dir / "model.pt2")
    written.append(out_dir / "model.pt2")
    meta = {k: payload[k] for k in ("config", "task", "num_features", "num_classes", "image_shape", "classes",
                                    "feature_names")}
    (out_dir / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    written.append(out_dir / "config.json")
    return written
