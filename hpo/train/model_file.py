"""The built-in task's model files: each completed trial's final model
(``trial_models/<trial id>.pt``, with its scores in ``<trial id>.json``) and the search's best
model (``best_model/model.pt``); loading them safely, as a module taking raw features, and
logging the best one to MLflow.

A model file holds the weights, the trial's config and the feature scaling, nothing that runs
code: :func:`load_payload` unpickles it with ``torch.load(weights_only=True)``, allowing numpy's
array reconstruction and nothing else.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["BEST_DIR", "MODEL_FILE", "TRIAL_MODELS", "load_model", "load_payload", "log_saved_model", "log_to_mlflow",
           "model_payload", "predictor", "read_trial_scores", "save_for_mlflow", "save_model_dir", "trial_model_files"]

# numpy arrays and scalars in hpo's own files (numpy 1 and 2 spell the module differently)
_ALLOWED = frozenset({"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                      "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray",
                      "numpy.dtype"})


def load_payload(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load`` of a file hpo saved (model, checkpoint state), with ``weights_only=True``.

    Raises:
        ValueError: the file asks to unpickle anything beyond tensors and numpy arrays.
    """
    import numpy as np
    import torch

    allowed: list[Any] = [np.ndarray, np.dtype]
    allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]  # an array's dtype class
    for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        if name not in _ALLOWED and not (name.startswith("numpy.dtypes.") and name.endswith("DType")):
            raise ValueError(f"{path}: refusing to load {name!r}: hpo's files hold only tensors, numbers, strings "
                             "and numpy arrays")
        module, _, attr = name.rpartition(".")
        allowed.append(getattr(importlib.import_module(module), attr))
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)


BEST_DIR = "best_model"
MODEL_FILE = "model.pt"
TRIAL_MODELS = "trial_models"  # in the run directory: each completed trial's final model


def trial_model_files(run_dir: str | os.PathLike[str], trial_id: str) -> tuple[Path, Path]:
    """Where a trial keeps its final model: ``<run dir>/trial_models/<trial id>.pt``, and beside it
    ``<trial id>.json`` (the step it was saved at, the metrics the trial reported there, and its
    scores on the test part), written last: a trial with both files has its model complete.

    Example:
        >>> [p.name for p in trial_model_files("/runs/quickstart-20261122-101500", "1f4cd678.3")]
        ['1f4cd678.3.pt', '1f4cd678.3.json']
    """
    base = Path(run_dir) / TRIAL_MODELS
    return base / f"{trial_id}.pt", base / f"{trial_id}.json"


def read_trial_scores(run_dir: str | os.PathLike[str], trial_id: str) -> dict[str, Any] | None:
    """The ``<trial id>.json`` of a trial whose final model is complete on disk, else None."""
    model, scores = trial_model_files(run_dir, trial_id)
    try:
        record = json.loads(scores.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and model.is_file() else None


def model_payload(run: Any) -> dict[str, Any]:
    """What a model file holds for a :class:`~hpo.train.loop.TaskRun`'s (first) model: its weights,
    the trial's config, the data's shape and feature scaling, and a few raw rows for signatures."""
    import numpy as np

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


def predictor(payload: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    from hpo.train.models import build_model
    from hpo.train.task import TaskConfig

    cfg = TaskConfig.from_config(payload["config"])
    classify = payload["task"] == "classification"
    net = build_model(cfg, payload["num_features"], payload["num_classes"] if classify else 1,
                      payload["image_shape"], payload["config"])
    net.load_state_dict(payload["state_dict"])

    class Predictor(nn.Module):
        """Raw features in; class logits (classification) or predictions in target units (regression) out."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("x_mean", torch.as_tensor(payload["x_mean"]))
            self.register_buffer("x_std", torch.as_tensor(payload["x_std"]))
            self.y_mean, self.y_std = float(payload["y_mean"]), float(payload["y_std"])
            self.classify = classify
            self.classes = payload.get("classes")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net((x - self.x_mean) / self.x_std)  # type: ignore[operator]
            return out if self.classify else out.squeeze(-1) * self.y_std + self.y_mean

    return Predictor().eval()


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a saved best model (``model.pt``, or a directory holding it) as an ``nn.Module`` in eval mode.

    Only tensors, numbers, strings and numpy arrays are unpickled (``weights_only``), so a model
    file from someone else cannot run code when loaded.

    Example:
        >>> model = load_model("hpo_results/quickstart-20261122-101500/best_model")  # doctest: +SKIP
        >>> model(torch.tensor(raw_features, dtype=torch.float32)).argmax(1)  # doctest: +SKIP
    """

    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    return predictor(load_payload(p))


def _model_requirements() -> list[str]:
    """What loading the logged best model needs: torch, cloudpickle, numpy and hpo (its Predictor)."""
    from importlib import metadata

    import mlflow.pytorch
    import numpy as np

    reqs = [*mlflow.pytorch.get_default_pip_requirements(), f"numpy=={np.__version__}"]
    try:
        reqs.append(f"hpo=={metadata.version('hpo')}")
    except metadata.PackageNotFoundError:
        pass
    return reqs


def save_for_mlflow(info: dict[str, Any], directory: str) -> str:
    """Save the best model (``info["path"]``) in ``directory`` as an MLflow PyTorch model, as
    ``mlflow.pytorch.log_model`` would before logging it: raw features in, its signature and
    input example, the pip requirements named (:func:`save_model_dir`). The half of logging a
    model that needs torch; :func:`log_saved_model` is the other. Returns ``directory``."""
    import torch

    model = load_model(info["path"])
    example = load_payload(info["path"])["example"]
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    save_model_dir(model, example, output, directory)
    return directory


def save_model_dir(model: Any, example: Any, output: Any, directory: str) -> None:
    """``mlflow.pytorch.save_model`` of ``model`` with the signature of ``example`` -> ``output``
    and ``example`` as its input example, then MLflow's own check that the example served as a
    request predicts (what ``log_model`` checks before logging)."""
    import mlflow
    import mlflow.pytorch

    from hpo._compat.mlflow import check_serving_input

    mlflow.pytorch.save_model(
        model, directory, signature=mlflow.models.infer_signature(example, output), input_example=example,
        # named, not inferred: inference re-imports the model in a subprocess (~10 s)
        pip_requirements=_model_requirements(),
    )
    check_serving_input(directory)


# What Model.log sets on the MLmodel of the model it logs (which model, which run, when); every
# other field comes from the flavor's save (flavors, signature, input example, size)
_LOGGED_AS = frozenset({"run_id", "artifact_path", "utc_time_created", "model_uuid", "mlflow_version", "model_id",
                        "metadata", "resources", "auth_policy", "prompts"})


class _SavedFlavor:
    """An MLflow flavor for ``mlflow.models.Model.log`` (MLflow's documented way to log a model of
    a custom flavor) whose save copies a model directory :func:`save_for_mlflow` saved already:
    its files, and its MLmodel's description of the model under the identity ``Model.log`` gives."""

    @staticmethod
    def save_model(path: str, mlflow_model: Any, saved: str, **kwargs: Any) -> None:
        import shutil

        from mlflow.models import Model

        shutil.copytree(saved, path)
        for key, value in vars(Model.load(saved)).items():
            if key not in _LOGGED_AS:
                setattr(mlflow_model, key, value)
        mlflow_model.save(os.path.join(path, "MLmodel"))


def log_saved_model(tracking_uri: str, parent_run_id: str, saved: str, info: dict[str, Any],
                    register_as: str | None) -> str:
    """Log a model directory :func:`save_for_mlflow` saved on the search's parent run, as
    ``mlflow.pytorch.log_model`` logs one (a logged model of the PyTorch flavor, the run's output;
    its input example was checked when it was saved), without importing torch; returns its model
    URI. Registered under ``register_as``, the new version is added to ``info``
    (``registered_model``, ``registered_version``)."""
    import mlflow
    from mlflow.models import Model

    from hpo._compat.mlflow import fluent_tracking_uri

    with fluent_tracking_uri(tracking_uri), mlflow.start_run(run_id=parent_run_id,
                                                             nested=mlflow.active_run() is not None):
        logged = Model.log(artifact_path=None, name="best_model", flavor=_SavedFlavor,
                           registered_model_name=register_as, await_registration_for=60, flavor_name="pytorch",
                           saved=saved, validate_serving_input=False)
    if logged.registered_model_version is not None:  # the version registered (for nightly promotion)
        info["registered_model"], info["registered_version"] = register_as, str(logged.registered_model_version)
    return str(logged.model_uri)


def log_to_mlflow(tracking_uri: str, parent_run_id: str, info: dict[str, Any], register_as: str | None) -> str:
    """Log the best model (``info["path"]``) on the search's parent run as an MLflow PyTorch model
    (raw features in) with its signature, in this process: :func:`save_for_mlflow` then
    :func:`log_saved_model`; returns its model URI."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hpo-model-") as tmp:
        saved = save_for_mlflow(info, os.path.join(tmp, "model"))
        return log_saved_model(tracking_uri, parent_run_id, saved, info, register_as)
