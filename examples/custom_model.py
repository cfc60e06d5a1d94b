"""Your own model, data and training step through the Python API.

Run it with ``python examples/custom_model.py [--json]``. It writes scikit-learn's wine data to
a CSV file (your data would already be one), then tunes a residual MLP defined below with a
mixup training step, all named by import path so every Ray worker builds them itself.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import hpo


class ResidualMLP(nn.Module):
    """An input projection, ``blocks`` residual blocks and a linear head."""

    def __init__(self, num_features: int, num_outputs: int, width: int, blocks: int) -> None:
        super().__init__()
        self.proj = nn.Linear(num_features, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()) for _ in range(blocks)
        )
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def build(config: dict, num_features: int, num_outputs: int) -> nn.Module:
    """task.model: takes the trial's config (and the data's shape) and returns an nn.Module."""
    return ResidualMLP(num_features, num_outputs, config["width"], config["blocks"])


def mixup_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, config: dict) -> torch.Tensor:
    """task.train_step: returns the batch loss; hpo does backward, clipping, the optimizer and schedule."""
    alpha = config["mixup_alpha"]
    if alpha <= 0:
        return loss_fn(model(x), y)
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x))
    out = model(lam * x + (1 - lam) * x[perm])
    return lam * loss_fn(out, y) + (1 - lam) * loss_fn(out, y[perm])


def write_wine_csv(path: Path) -> Path:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame  # 13 numeric features and a "target" column
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})  # string labels work too
    frame.to_csv(path, index=False)
    return path


def main(as_json: bool = False) -> hpo.Results:
    data = write_wine_csv(Path(tempfile.mkdtemp(prefix="hpo-wine-")) / "wine.csv")
    results = hpo.run(
        name="custom_model",
        task={"dataset": str(data), "target": "target", "model": "custom_model:build",
              "train_step": "custom_model:mixup_step", "epochs": 15, "batch_size": 16},
        space={
            "width": hpo.Int(16, 128, log=True),
            "blocks": hpo.Int(1, 3),
            "mixup_alpha": hpo.Float(0.0, 0.4),
            "lr": hpo.Float(1e-3, 3e-2, log=True),
        },
        metric="val_accuracy",
        mode="max",
        strategy="tpe+asha",
        num_samples=12,
    )
    if as_json:
        print(json.dumps(results.summary(), default=str))
    else:
        print(f"best val_accuracy {results.best_metric:.3f}, test {results.test_metrics}, config {results.best_config}")
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))  # so `custom_model:build` imports here as in the workers
    main("--json" in sys.argv)
