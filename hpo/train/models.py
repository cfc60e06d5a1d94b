"""Built-in PyTorch models: mlp, cnn, linear and logistic regression."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpo.train.task import TaskConfig

_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def _mlp(cfg: TaskConfig, n_in: int, n_out: int) -> nn.Module:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(cfg.depth):
        layers.append(nn.Linear(width, cfg.hidden))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(cfg.hidden))
        layers.append(_ACT[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width = cfg.hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _SmallCNN(nn.Module):
    """Two 3x3 convolutions and a pooling layer for small images given as flat vectors."""

    def __init__(self, cfg: TaskConfig, image_shape: tuple[int, ...], n_out: int) -> None:
        super().__init__()
        c_in, h, w = image_shape
        c = cfg.channels
        act = _ACT[cfg.activation]
        self.image_shape = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c_in, c, 3, padding=1), act(),
            nn.Conv2d(c, 2 * c, 3, padding=1), act(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * c * (h // 2) * (w // 2), cfg.hidden), act(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(x.shape[0], *self.image_shape)))


def build_model(cfg: TaskConfig, n_in: int, n_out: int, image_shape: Any = None,
                config: dict[str, Any] | None = None) -> nn.Module:
    """The model named by ``cfg.model`` for ``n_in`` features and ``n_out`` outputs.

    ``cfg.model`` may be an import path ``package.module:function``: the function gets the
    trial's config and returns an ``nn.Module``; it is also given ``num_features``,
    ``num_outputs`` and ``image_shape`` when its signature takes them.
    """
    if ":" in cfg.model:
        from hpo._imports import accepts, import_callable

        fn = import_callable(cfg.model, "task.model")
        extra = {"num_features": n_in, "num_outputs": n_out, "image_shape": image_shape}
        model = fn(dict(config or {}), **{k: v for k, v in extra.items() if accepts(fn, k)})
        if not isinstance(model, nn.Module):
            raise TypeError(f"task.model {cfg.model!r} must return a torch.nn.Module, got {type(model).__name__}")
        return model
    if cfg.model == "mlp":
        return _mlp(cfg, n_in, n_out)
    if cfg.model == "cnn":
        if image_shape is None:
            raise ValueError(f"model 'cnn' needs an image data set (e.g. digits), got {cfg.dataset!r}")
        return _SmallCNN(cfg, tuple(image_shape), n_out)
    return nn.Linear(n_in, n_out)  # linear (regression) and logistic (classification)
