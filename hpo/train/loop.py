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
from hpo.train.models import build_model
from hpo.train.optim import Schedule, build_optimizer
from hpo.train.task import TaskConfig

_REGRESSION_LOSSES: dict[str, Any] = {
    "mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss, "huber": nn.functional.huber_loss,
}


def loss_function(name: str, classify: bool) -> Any:
    """Cross-entropy for classification; MSE (default), MAE or Huber for regression."""
    if classify:
        return nn.functional.cross_entropy
    fn = _REGRESSION_LOSSES["mse" if name == "auto" else name]
    return lambda out, y: fn(out.squeeze(-1), y)


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy, macro F1/precision/recall, and ROC-AUC for binary tasks (ties count one half)."""
    pred = logits.argmax(dim=1)
    out = {"accuracy": float((pred == y).float().mean())}
    cm = torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, -1)
    tp = cm.diag().double()
    precision = tp / cm.sum(dim=0).clamp(min=1)
    recall = tp / cm.sum(dim=1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    out.update(precision=float(precision.mean()), recall=float(recall.mean()), f1=float(f1.mean()))
    if num_classes == 2:
        score = torch.softmax(logits.double(), dim=1)[:, 1]
        pos, neg = score[y == 1], score[y == 0]
        if len(pos) and len(neg):
            wins = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
            out["roc_auc"] = float(wins / (len(pos) * len(neg)))
    return out


def _metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ds: Dataset, loss_fn: Any) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss = float(loss_fn(out, y))
    if ds.task == "classification":
        return {"loss": loss, **classification_metrics(out, y, ds.num_classes)}
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
    n, bs = len(x_tr), cfg.batch_size
    schedule = Schedule(cfg, optimizer, math.ceil(n / bs))
    loss_fn = loss_function(cfg.loss, classify)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]

    start = 1
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state.get("schedule", {}))
        start = state["epoch"] + 1

    gen = torch.Generator().manual_seed(cfg.seed)
    best_val, since_best = math.inf, 0
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            if cfg.l1:
                loss = loss + cfg.l1 * sum(w.abs().sum() for w in weights)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.after_batch()
            total += loss.item() * len(idx)
        train_loss = total / n
        val = _metrics(model, x_val, y_val, ds, loss_fn)
        metrics = {"train_loss": train_loss, "epoch_time_s": time.perf_counter() - t0,
                   "lr": optimizer.param_groups[0]["lr"]}
        metrics.update({f"val_{k}": v for k, v in val.items()})
        if not (math.isfinite(train_loss) and math.isfinite(val["loss"])):
            report({**metrics, "diverged": 1})
            return
        schedule.after_epoch(val["loss"])
        best_val, since_best = (val["loss"], 0) if val["loss"] < best_val else (best_val, since_best + 1)
        if cfg.patience and since_best >= cfg.patience and epoch < cfg.epochs:
            report({**metrics, "early_stopped": 1})  # patience ran out: this trial ends here
            return
        if cfg.checkpoint_freq and (epoch % cfg.checkpoint_freq == 0 or epoch == cfg.epochs):
            with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "epoch": epoch}
                torch.save(state, os.path.join(tmp, "state.pt"))
                report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            report(metrics)
