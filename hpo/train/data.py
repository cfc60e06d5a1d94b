"""Built-in data sets (shipped with scikit-learn; nothing is downloaded) and seeded splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpo.train.task import DATASETS


@dataclass
class Dataset:
    """Standardized train/validation/test arrays (scaling fitted on the training part only)."""

    name: str
    task: str  # "classification" or "regression"
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 0
    image_shape: tuple[int, ...] | None = None

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def _raw(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...] | None]:
    from sklearn import datasets as skd

    if name == "digits":
        d = skd.load_digits()
        return d.data, d.target, "classification", (1, 8, 8)
    if name in ("breast_cancer", "wine", "iris"):
        d = getattr(skd, f"load_{name}")()
        return d.data, d.target, "classification", None
    if name == "diabetes":
        d = skd.load_diabetes()
        return d.data, d.target, "regression", None
    if name == "synthetic_classification":
        x, y = skd.make_classification(n_samples=2000, n_features=20, n_informative=10, n_classes=3, random_state=seed)
        return x, y, "classification", None
    if name == "synthetic_regression":
        x, y = skd.make_friedman1(n_samples=2000, n_features=10, noise=0.5, random_state=seed)
        return x, y, "regression", None
    raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")


def load_dataset(name: str, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Dataset:
    """Load a built-in data set and split it with a seed (stratified for classification).

    Example:
        >>> ds = load_dataset("iris")
        >>> ds.num_classes, ds.num_features
        (3, 4)
    """
    from sklearn.model_selection import train_test_split

    x, y, task, image_shape = _raw(name, seed)
    x = x.astype(np.float32)
    strat = y if task == "classification" else None
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)
    strat = y_rest if task == "classification" else None
    val_of_rest = val_fraction / (1.0 - test_fraction)
    x_tr, x_val, y_tr, y_val = train_test_split(
        x_rest, y_rest, test_size=val_of_rest, random_state=seed, stratify=strat
    )
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0
    x_tr, x_val, x_test = ((a - mean) / std for a in (x_tr, x_val, x_test))
    if task == "classification":
        ys = [a.astype(np.int64) for a in (y_tr, y_val, y_test)]
        num_classes = int(y.max()) + 1
    else:
        y_mean, y_std = y_tr.mean(), y_tr.std() or 1.0
        ys = [((a - y_mean) / y_std).astype(np.float32) for a in (y_tr, y_val, y_test)]
        num_classes = 0
    return Dataset(name, task, x_tr.astype(np.float32), ys[0], x_val.astype(np.float32), ys[1],
                   x_test.astype(np.float32), ys[2], num_classes, image_shape)
