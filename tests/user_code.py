"""A user's own model, training step and data loader, named by import path in tests."""

from __future__ import annotations

import numpy as np
from torch import nn

calls: list[str] = []


def tiny_model(config, num_features, num_outputs):
    return nn.Sequential(nn.Linear(num_features, config.get("width", 8)), nn.ReLU(),
                         nn.Linear(config.get("width", 8), num_outputs))


def doubled_loss_step(model, x, y, loss_fn):
    calls.append("step")
    return 2 * loss_fn(model(x), y)


def not_a_module(config):
    return "a string"


def blobs():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=300, centers=3, n_features=5, random_state=0)
    return x, np.array(["a", "b", "c"])[y]


def picky_model(config, num_features, num_outputs):
    """Fails for one width: a configuration that errors while the others train."""
    if config.get("width") == 13:
        raise ValueError("width 13 is unlucky")
    return tiny_model(config, num_features, num_outputs)
