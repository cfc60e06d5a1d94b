"""The built-in task's training loop: a plain tensor loop over in-memory data, one result per epoch.

:class:`Trainer` trains one model on one split; :class:`TaskRun` drives one trainer (holdout)
or ``cv_folds`` trainers in lockstep (cross-validation) and turns their epochs into the metrics
a trial reports. :mod:`hpo.train.trial` runs it as a Ray Tune trial; :func:`fit` runs the same
thing in-process (refitting the best trial, benchmarks, the learning-rate finder).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from hpo.train.data import Dataset, DataSpec, Split, load_dataset, matches
from hpo.train.models import build_model
from hpo.train.optim import Schedule, build_optimizer
from hpo.train.task import TaskConfig

_REGRESSION_LOSSES: dict[str, Any] = {
    "mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss, "huber": nn.functional.huber_loss,
}
_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # every lr-valued entry a schedule keeps in a param group


def loss_function(name: str, classify: bool) -> Any:
    """Cross-entropy for classification; MSE (default), MAE or Huber for regression."""
    if classify:
        return nn.functional.cross_entropy
    fn = _REGRESSION_LOSSES["mse" if name == "auto" else name]
    return lambda out, y: fn(out.squeeze(-1), y)


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy, macro F1/precision/recall, and ROC-AUC for binary tasks (ties count one half)."""
    logits = logits.float()
    pred = logits.argmax(dim=1)
    # the confusion matrix is counted on the device, the rest on its few numbers in NumPy (each
    # torch op on a tiny tensor costs microseconds of dispatch: a tenth of a short epoch's evaluation)
    cm = torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, -1)
    cm_np = cm.cpu().numpy().astype(np.float64)
    tp = np.diag(cm_np)
    precision = tp / np.maximum(cm_np.sum(axis=0), 1)
    recall = tp / np.maximum(cm_np.sum(axis=1), 1)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    out = {"accuracy": float(tp.sum() / max(len(y), 1))}
    out.update(precision=float(precision.mean()), recall=float(recall.mean()), f1=float(f1.mean()))
    if num_classes == 2:
        score = torch.softmax(logits.double(), dim=1)[:, 1]
        pos, neg = score[y == 1], score[y == 0]
        if len(pos) and len(neg):
            wins = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
            out["roc_auc"] = float(wins / (len(pos) * len(neg)))
    return out


def augment_images(x: torch.Tensor, image_shape: tuple[int, ...], shift: float, rotate: float,
                   gen: torch.Generator) -> torch.Tensor:
    """Random shifts (up to ``shift`` pixels) and rotations (up to ``rotate`` degrees) of flat images.

    One batched affine resampling; edges repeat the border pixels (the background for digits).
    """
    b = x.shape[0]
    c, h, w = image_shape
    r = torch.rand(b, 3, generator=gen).to(x.device) * 2 - 1
    angle = r[:, 0] * math.radians(rotate)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([cos, -sin, r[:, 1] * shift * 2 / w], dim=1),
        torch.stack([sin, cos, r[:, 2] * shift * 2 / h], dim=1),
    ], dim=1).to(x.dtype)
    img = x.view(b, c, h, w)
    grid = nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
    out = nn.functional.grid_sample(img, grid, padding_mode="border", align_corners=False)
    return out.reshape(b, -1)


def device_for_trial() -> torch.device:
    """CUDA when Ray gave this trial a GPU (``resources: {gpu: ...}``), else the CPU."""
    import ray

    if torch.cuda.is_available() and ray.is_initialized() and ray.get_gpu_ids():
        return torch.device("cuda")
    return torch.device("cpu")


class Trainer:
    """One model, its optimizer and schedule, trained on one :class:`~hpo.train.data.Split`."""

    def __init__(self, cfg: TaskConfig, config: dict[str, Any], ds: Dataset, split: Split, device: torch.device,
                 fold: int = 0) -> None:
        self.cfg, self.ds, self.split, self.device = cfg, ds, split, device
        self.classify = ds.task == "classification"
        with warnings.catch_warnings():
            # Arrays from Ray's object store are read-only and shared by the node's trials; never written.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = (split.x_train, split.y_train, split.x_val, split.y_val)
            self.x_tr, self.y_tr, self.x_val, self.y_val = (torch.from_numpy(a).to(device) for a in tensors)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, ds.num_features, ds.num_classes if self.classify else 1, ds.image_shape,
                                 config).to(device)
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.schedule = Schedule(cfg, self.optimizer, math.ceil(len(self.x_tr) / cfg.batch_size))
        self.loss_fn = loss_function(cfg.loss, self.classify)
        self.weights = [p for name, p in self.model.named_parameters() if name.endswith("weight")]
        self.gen = torch.Generator().manual_seed(cfg.seed + fold)
        self.amp = _AMP.get(cfg.precision)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" and device.type == "cuda" else None
        self.step_fn: Callable[..., Any] | None = None
        self.step_kwargs: dict[str, Any] = {}
        if cfg.train_step:
            from hpo._imports import accepts, import_callable

            self.step_fn = import_callable(cfg.train_step, "task.train_step")
            offered = {"loss_fn": self.loss_fn, "config": config, "optimizer": self.optimizer}
            self.step_kwargs = {k: v for k, v in offered.items() if accepts(self.step_fn, k)}

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.step_fn is not None:
            return self.step_fn(self.model, x, y, **self.step_kwargs)
        return self.loss_fn(self.model(x), y)

    def train_epoch(self) -> float:
        """One pass over the training part in shuffled batches; returns the mean training loss."""
        cfg, model, optimizer = self.cfg, self.model, self.optimizer
        model.train()
        n, bs = len(self.x_tr), cfg.batch_size
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        losses: list[torch.Tensor] = []  # summed on the device once per epoch: no sync, no op per batch
        shape = self.ds.image_shape
        augment = shape is not None and (cfg.augment_shift > 0 or cfg.augment_rotate > 0)
        # A last batch of one sample is folded into the one before: batch norm cannot train on it.
        starts = [i for i in range(0, n, bs) if n - i > 1 or i == 0]
        for k, i in enumerate(starts):
            idx = perm[i : starts[k + 1] if k + 1 < len(starts) else n]
            x, y = self.x_tr[idx], self.y_tr[idx]
            if augment:
                x = augment_images(x, tuple(shape), cfg.augment_shift, cfg.augment_rotate, self.gen)  # type: ignore[arg-type]
            optimizer.zero_grad(set_to_none=True)
            if self.amp is not None:
                with torch.autocast(self.device.type, dtype=self.amp):
                    loss = self._loss(x, y)
            else:
                loss = self._loss(x, y)
            if cfg.l1:
                loss = loss + cfg.l1 * sum(w.abs().sum() for w in self.weights)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(optimizer)
            else:
                loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if self.scaler is not None:
                self.scaler.step(optimizer)
                self.scaler.update()
            else:
                optimizer.step()
            self.schedule.after_batch()
            losses.append(loss.detach())
        ends = [*starts[1:], n]
        sizes = torch.tensor([e - b for b, e in zip(starts, ends, strict=True)], dtype=torch.float32,
                             device=self.device)
        return float(torch.stack(losses).float() @ sizes) / n

    def evaluate(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> dict[str, float]:
        """Loss and task metrics on the validation part (or on ``x``, ``y``); regression errors in target units."""
        x = self.x_val if x is None else x
        y = self.y_val if y is None else y
        self.model.eval()
        with torch.no_grad():
            if self.amp is not None:
                with torch.autocast(self.device.type, dtype=self.amp):
                    out = self.model(x)
            else:
                out = self.model(x)
            out = out.float()
            loss = float(self.loss_fn(out, y))
        if self.classify:
            return {"loss": loss, **classification_metrics(out, y, self.ds.num_classes)}
        resid = out.squeeze(-1) - y
        mse = float((resid**2).mean())
        var = float(((y - y.mean()) ** 2).mean()) or 1.0
        s = self.split.y_std
        return {"loss": loss, "mse": mse * s * s, "mae": float(resid.abs().mean()) * s, "r2": 1.0 - mse / var}

    def evaluate_test(self) -> dict[str, float]:
        x, y = (torch.from_numpy(np.array(a)).to(self.device) for a in (self.split.x_test, self.split.y_test))
        return self.evaluate(x, y)

    def latency_us(self) -> float:
        """Inference time per sample in microseconds (batched over the validation part, best of 3)."""
        self.model.eval()
        with torch.no_grad():
            self.model(self.x_val)
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                self.model(self.x_val)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
        return best / len(self.x_val) * 1e6

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state.get("schedule", {}))
        if "generator" in state:
            self.gen.set_state(state["generator"])

    def apply_hyperparams(self, old: dict[str, float]) -> None:
        """Use this config's lr, weight decay and momentum after loading another config's state (PBT).

        The optimizer state restored from a checkpoint carries the old values; the learning rate
        keeps its place in the schedule, rescaled by new lr / old lr.
        """
        cfg = self.cfg
        ratio = cfg.lr / old["lr"] if old.get("lr") else 1.0
        for g in self.optimizer.param_groups:
            for k in _LR_KEYS:
                if isinstance(g.get(k), float):
                    g[k] *= ratio
            g["weight_decay"] = cfg.weight_decay
            if cfg.optimizer == "sgd":
                g["momentum"] = cfg.momentum
        sched = self.schedule.sched
        if sched is not None and hasattr(sched, "base_lrs"):
            sched.base_lrs = [b * ratio for b in sched.base_lrs]
        if sched is not None and hasattr(sched, "min_lrs"):
            sched.min_lrs = [m * ratio for m in sched.min_lrs]


def _fold_metrics(vals: list[dict[str, float]]) -> dict[str, float]:
    if len(vals) == 1:
        return {f"val_{k}": v for k, v in vals[0].items()}
    out: dict[str, float] = {}
    for k in vals[0]:
        xs = [v[k] for v in vals]
        out[f"val_{k}"] = float(np.mean(xs))
        out[f"val_{k}_std"] = float(np.std(xs))
        out.update({f"val_{k}_fold{i}": x for i, x in enumerate(xs)})
    return out


class TaskRun:
    """One trial of the built-in task: its trainer(s), the epoch loop and the metrics it reports."""

    def __init__(self, config: dict[str, Any], data: Dataset | None = None, threads: int | None = None,
                 device: torch.device | None = None, refit: bool = False) -> None:
        self.config = dict(config)
        self.cfg = cfg = TaskConfig.from_config(config)
        if threads:
            torch.set_num_threads(max(1, threads))  # follow the trial's CPU allotment: no oversubscription
        self.device = device or torch.device("cpu")
        self.ds: Dataset = data if data is not None and matches(data, config) else load_dataset(
            DataSpec.from_config(config))
        splits = [self.ds.refit_split()] if refit else self.ds.splits(cfg.cv_folds)
        self.trainers = [Trainer(cfg, self.config, self.ds, s, self.device, fold=i) for i, s in enumerate(splits)]
        self.epoch = 0
        self.train_time_s = 0.0
        self.latency: float | None = None

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.cfg.lr, "weight_decay": self.cfg.weight_decay, "momentum": self.cfg.momentum}

    def state_dict(self) -> dict[str, Any]:
        return {"folds": [t.state_dict() for t in self.trainers], "epoch": self.epoch,
                "train_time_s": self.train_time_s, "hyperparams": self.hyperparams()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t, s in zip(self.trainers, state["folds"], strict=True):
            t.load_state_dict(s)
            if state.get("hyperparams") != self.hyperparams():
                t.apply_hyperparams(state.get("hyperparams", {}))
        self.epoch = state["epoch"]
        self.train_time_s = state.get("train_time_s", 0.0)

    def epochs(self) -> Iterator[dict[str, Any]]:
        """Train epoch after epoch, yielding each epoch's metrics; stops after a diverged or patience end."""
        cfg = self.cfg
        best_val, since_best = math.inf, 0
        param_count = self.trainers[0].param_count
        while self.epoch < cfg.epochs:
            self.epoch += 1
            t0 = time.perf_counter()
            train_losses = [t.train_epoch() for t in self.trainers]
            elapsed = time.perf_counter() - t0
            self.train_time_s += elapsed
            vals = [t.evaluate() for t in self.trainers]
            metrics: dict[str, Any] = {"train_loss": float(np.mean(train_losses)),
                                       **self._metrics(vals, elapsed, param_count)}
            val_loss = metrics["val_loss"]
            if not (math.isfinite(metrics["train_loss"]) and math.isfinite(val_loss)):
                yield {**metrics, "diverged": 1}
                return
            for t, v in zip(self.trainers, vals, strict=True):
                t.schedule.after_epoch(v["loss"])
            best_val, since_best = (val_loss, 0) if val_loss < best_val else (best_val, since_best + 1)
            if cfg.patience and since_best >= cfg.patience and self.epoch < cfg.epochs:
                yield {**metrics, "early_stopped": 1}  # patience ran out: this trial ends here
                return
            yield metrics

    def evaluated(self) -> dict[str, Any]:
        """The metrics of the model as it is, without an epoch of training: what a trial restored at
        its last epoch reports (PBT copied another trial's final checkpoint, or a search resumed
        after a trial's training ended but before its last result was recorded)."""
        return self._metrics([t.evaluate() for t in self.trainers], 0.0, self.trainers[0].param_count)

    def _metrics(self, vals: list[dict[str, float]], epoch_time_s: float, param_count: int) -> dict[str, Any]:
        """An epoch's metrics but the training loss: time, lr, cost metrics, the folds' scores."""
        if self.latency is None:
            self.latency = self.trainers[0].latency_us()
        return {"epoch_time_s": epoch_time_s, "lr": self.trainers[0].optimizer.param_groups[0]["lr"],
                "param_count": param_count, "train_time_s": self.train_time_s, "latency_us": self.latency,
                **_fold_metrics(vals)}

    @property
    def model(self) -> nn.Module:
        return self.trainers[0].model


def fit(config: dict[str, Any], data: Dataset | None = None, threads: int | None = None,
        refit: bool = False) -> tuple[TaskRun, list[dict[str, Any]]]:
    """Train the built-in task in this process (no Ray); returns the run and its per-epoch metrics.

    Example:
        >>> run, history = fit({"dataset": "iris", "epochs": 2, "hidden": 8})
        >>> len(history), "val_accuracy" in history[-1]
        (2, True)
    """
    run = TaskRun(config, data, threads, refit=refit)
    return run, list(run.epochs())
