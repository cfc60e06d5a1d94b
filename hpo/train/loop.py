"""The built-in trainable: a plain tensor loop over in-memory data, one report per epoch."""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from typing import Any

import torch
from torch import nn

from hpo.train.data import Dataset, load_dataset
from hpo.train.models import build_model, build_optimizer
from hpo.train.task import TaskConfig


def _classification_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y)


def _regression_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.squeeze(-1), y)


def _metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ds: Dataset, loss_fn: Any) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss = float(loss_fn(out, y))
    if ds.task == "classification":
        return {"loss": loss, "accuracy": float((out.argmax(dim=1) == y).float().mean())}
    resid = out.squeeze(-1) - y
    mse = float((resid**2).mean())
    var = float(((y - y.mean()) ** 2).mean()) or 1.0
    return {"loss": loss, "mse": mse, "mae": float(resid.abs().mean()), "r2": 1.0 - mse / var}


def _device() -> torch.device:
    """CUDA when Ray gave this trial a GPU (``resources: {gpu: ...}``), else the CPU."""
    import ray

    if torch.cuda.is_available() and ray.is_initialized() and ray.get_gpu_ids():
        return torch.device("cuda")
    return torch.device("cpu")


def train(config: dict[str, Any], data: Dataset | None = None, threads: int = 1) -> None:
    """Train the built-in task described by ``config`` and report metrics every epoch.

    Reports ``train_loss``, ``val_loss`` and ``val_accuracy`` (classification) or ``val_mse``,
    ``val_mae``, ``val_r2`` (regression), plus ``epoch_time_s``. A NaN/inf loss ends the
    trial with ``diverged = 1``. Resumes from the trial's last checkpoint when there is one.
    """
    from ray import tune

    from hpo.session import report

    cfg = TaskConfig.from_config(config)
    torch.set_num_threads(max(1, threads))  # follow the trial's CPU allotment: no oversubscription
    torch.manual_seed(cfg.seed)
    device = _device()
    ds = data if data is not None and data.name == cfg.dataset else load_dataset(
        cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction
    )
    with warnings.catch_warnings():
        # Arrays from Ray's object store are read-only and shared by the node's trials; never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        arrays = (ds.x_train, ds.y_train, ds.x_val, ds.y_val)
        x_tr, y_tr, x_val, y_val = (torch.from_numpy(a).to(device) for a in arrays)
    classify = ds.task == "classification"
    model = build_model(cfg, ds.num_features, ds.num_classes if classify else 1, ds.image_shape).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    loss_fn = _classification_loss if classify else _regression_loss

    start = 1
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1

    gen = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(x_tr), cfg.batch_size
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            total += loss.item() * len(idx)
        train_loss = total / n
        val = _metrics(model, x_val, y_val, ds, loss_fn)
        metrics = {"train_loss": train_loss, "epoch_time_s": time.perf_counter() - t0}
        metrics.update({f"val_{k}": v for k, v in val.items()})
        if not (math.isfinite(train_loss) and math.isfinite(val["loss"])):
            report({**metrics, "diverged": 1})
            return
        if cfg.checkpoint_freq and (epoch % cfg.checkpoint_freq == 0 or epoch == cfg.epochs):
            with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
                torch.save(state, os.path.join(tmp, "state.pt"))
                report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            report(metrics)


def load_task_data(task: dict[str, Any]) -> Dataset:
    """Load the data set a task config names (done once on the driver, shared with trials)."""
    cfg = TaskConfig.from_config(task)
    return load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction)
