"""The best trial's model: rebuilt from its last checkpoint (or retrained), tested, exported, loaded.

At the end of a built-in search the best completed trial's model is recovered in a Ray task
(so the driver never imports torch): from the trial's final checkpoint when it kept one,
otherwise by retraining its config with the same seed and thread count, which reproduces
the trial's model exactly on a CPU. It is scored once on the held-out test part and saved as
``best_model/model.pt`` in the run directory. With cross-validation the model is refit on all
development rows (train + validation) before testing.

``model.pt`` is self-contained for :func:`hpo.train.model_file.load_model`: weights, the trial's config and the
feature scaling, so the loaded module takes raw features. ``hpo export`` adds a
``torch.export`` program (``model.pt2``) that loads without hpo.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from hpo.train.model_file import BEST_DIR, MODEL_FILE, load_payload, predictor


def _payload(run: Any) -> dict[str, Any]:
    t = run.trainers[0]
    s = t.split
    ds = run.ds
    return {
        "format": 1,
        "state_dict": {k: v.detach().cpu() for k, v in t.model.state_dict().items()},
        "config": run.config, "task": ds.task, "num_features": ds.num_features, "num_classes": ds.num_classes,
        "image_shape": ds.image_shape, "x_mean": s.x_mean, "x_std": s.x_std, "y_mean": s.y_mean, "y_std": s.y_std,
        "classes": ds.classes, "feature_names": ds.feature_names,
        "example": np.array(s.x_test[:8] * s.x_std + s.x_mean, dtype=np.float32),  # raw rows for signatures
    }


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
    torch.save(_payload(run), buf)
    return {"test": {f"test_{k}": v for k, v in test.items()}, "val": val, "source": source,
            "model": buf.getvalue(), "cross_validated": cv}


def recover_best(results: Any, task: dict[str, Any], data: Any, resources: dict[str, float],
                 run_dir: Path) -> dict[str, Any] | None:
    """Recover the search's best trial in a Ray task; writes ``best_model/`` and returns its summary."""
    import ray

    best = results.best_trial
    if best is None:
        return None
    config = {**task, **best.config}
    fn = ray.remote(num_cpus=resources.get("cpu", 1), num_gpus=resources.get("gpu", 0))(recover)
    out = ray.get(fn.remote(config, data, max(1, int(resources.get("cpu", 1))), best.checkpoint))
    target = run_dir / BEST_DIR
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / (MODEL_FILE + ".tmp")
    tmp.write_bytes(out["model"])
    tmp.replace(target / MODEL_FILE)
    summary: dict[str, Any] = {"trial_id": best.trial_id, "source": out["source"], "test_metrics": out["test"],
                               "cross_validated": out["cross_validated"], "path": str(target / MODEL_FILE)}
    if out["source"] == "retrained" and not out["cross_validated"]:
        # On a CPU the retrained model is the trial's own: same data, seed and threads.
        summary["reproduced"] = all(
            np.isclose(out["val"].get(k, np.nan), v, rtol=1e-6, atol=1e-9)
            for k, v in best.metrics.items() if k.startswith("val_"))
    (target / "best.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


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
