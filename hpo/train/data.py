"""Data for the built-in task: scikit-learn's bundled sets, user files and loader functions.

Nothing is downloaded. A data set is split once, with a seed, into a development part
(train + validation, or k folds of it for cross-validation) and a held-out test part; feature
scaling is fitted on each split's training part only. The driver loads and splits the data
once and puts it in Ray's object store, so a node's trials share one copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpo._imports import import_callable
from hpo.errors import HpoConfigError

BUILTIN_DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes", "synthetic_classification",
                    "synthetic_regression")
FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz")
_BUILTIN_TASKS = {"diabetes": "regression", "synthetic_regression": "regression"}


@dataclass
class Split:
    """One training/validation split with the test part, all scaled by the training part's statistics."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float = 0.0  # regression targets are standardized; metrics are reported in original units
    y_std: float = 1.0


@dataclass
class Dataset:
    """A loaded data set: development and test arrays before scaling, and how to split them.

    Example:
        >>> ds = load_dataset("iris")
        >>> ds.num_classes, ds.num_features, len(ds.splits(0)), len(ds.splits(5))
        (3, 4, 1, 5)
    """

    name: str
    task: str  # "classification" or "regression"
    x_dev: np.ndarray
    y_dev: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    val_idx: np.ndarray  # rows of the development part held out for validation (no cross-validation)
    seed: int
    num_classes: int = 0
    image_shape: tuple[int, ...] | None = None
    feature_names: list[str] | None = None
    classes: list[Any] | None = None  # original labels of class ids 0..n-1
    key: tuple[Any, ...] = ()
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def num_features(self) -> int:
        return int(self.x_dev.shape[1])

    def _scaled(self, train: np.ndarray, val: np.ndarray) -> Split:
        x_tr, x_val = self.x_dev[train], self.x_dev[val]
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        std[std == 0] = 1.0
        ys = [self.y_dev[train], self.y_dev[val], self.y_test]
        y_mean, y_std = 0.0, 1.0
        if self.task == "regression":
            y_mean, y_std = float(ys[0].mean()), float(ys[0].std()) or 1.0
            ys = [((a - y_mean) / y_std).astype(np.float32) for a in ys]
        xs = [((a - mean) / std).astype(np.float32) for a in (x_tr, x_val, self.x_test)]
        return Split(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], mean.astype(np.float32), std.astype(np.float32),
                     y_mean, y_std)

    def splits(self, cv_folds: int = 0) -> list[Split]:
        """The holdout split (``cv_folds`` < 2) or ``cv_folds`` stratified folds of the development part."""
        k = cv_folds if cv_folds >= 2 else 0
        if k not in self._cache:
            n = len(self.x_dev)
            if not k:
                val = np.zeros(n, dtype=bool)
                val[self.val_idx] = True
                self._cache[k] = [self._scaled(np.flatnonzero(~val), self.val_idx)]
            else:
                from sklearn.model_selection import KFold, StratifiedKFold

                cls = StratifiedKFold if self.task == "classification" else KFold
                folds = cls(n_splits=k, shuffle=True, random_state=self.seed).split(self.x_dev, self.y_dev)
                self._cache[k] = [self._scaled(tr, va) for tr, va in folds]
        return list(self._cache[k])

    def refit_split(self) -> Split:
        """All development rows for training (validation shows the holdout rows, now in-sample)."""
        if "refit" not in self._cache:
            self._cache["refit"] = self._scaled(np.arange(len(self.x_dev)), self.val_idx)
        return self._cache["refit"]


@dataclass(frozen=True)
class DataSpec:
    """Where a task's data comes from and how it is split (the keys of ``task`` that choose data)."""

    dataset: str = "digits"
    target: str | None = None
    problem: str = "auto"
    image_shape: tuple[int, ...] | None = None
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DataSpec:
        shape = config.get("image_shape")
        return cls(config.get("dataset", "digits"), config.get("target"), config.get("problem", "auto"),
                   tuple(shape) if shape else None, int(config.get("seed", 0)),
                   float(config.get("val_fraction", 0.2)), float(config.get("test_fraction", 0.2)))


def _builtin(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...] | None]:
    from sklearn import datasets as skd

    if name == "digits":
        d = skd.load_digits()
        return d.data, d.target, "classification", (1, 8, 8)
    if name in ("breast_cancer", "wine", "iris", "diabetes"):
        d = getattr(skd, f"load_{name}")()
        return d.data, d.target, _BUILTIN_TASKS.get(name, "classification"), None
    if name == "synthetic_classification":
        x, y = skd.make_classification(n_samples=2000, n_features=20, n_informative=10, n_classes=3, random_state=seed)
        return x, y, "classification", None
    x, y = skd.make_friedman1(n_samples=2000, n_features=10, noise=0.5, random_state=seed)
    return x, y, "regression", None


def _frame_to_arrays(frame: Any, target: str | None, where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import pandas as pd

    if target is None:
        raise HpoConfigError("task.target", "must name the target column of a table data set", None,
                             f"Columns of {where}: {list(frame.columns)}")
    if target not in frame.columns:
        import difflib

        close = difflib.get_close_matches(str(target), [str(c) for c in frame.columns], n=1)
        raise HpoConfigError("task.target", f"must be a column of {where}; columns: {list(frame.columns)}", target,
                             f"Did you mean {close[0]!r}?" if close else None)
    features = frame.drop(columns=[target])
    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise HpoConfigError("task.dataset", f"features must be numeric; non-numeric columns in {where}: {bad}",
                             where, "Encode them as numbers first, or drop them.")
    if features.isna().any().any():
        cols = [str(c) for c in features.columns[features.isna().any()]]
        raise HpoConfigError("task.dataset", f"features must not be missing; columns with gaps in {where}: {cols}",
                             where, "Fill or drop the missing values first.")
    return features.to_numpy(dtype=np.float32), frame[target].to_numpy(), [str(c) for c in features.columns]


def _from_file(path_str: str, target: str | None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    path = Path(path_str)
    if not path.is_file():
        raise HpoConfigError("task.dataset", "must be an existing file", path_str, f"Looked at {path.resolve()}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            y_key = target or ("y" if "y" in keys else None)
            x_key = next((k for k in ("x", "X", "features") if k in keys), None)
            if y_key not in keys or x_key is None:
                raise HpoConfigError("task.target" if target else "task.dataset",
                                     f"an NPZ file needs a feature array (x, X or features) and a target array "
                                     f"(y or task.target); arrays in {path_str}: {keys}", target or path_str)
            x, y = z[x_key], z[y_key]
        if not np.issubdtype(x.dtype, np.number):
            raise HpoConfigError("task.dataset", f"features must be numeric; array {x_key!r} has dtype {x.dtype}",
                                 path_str)
        return x.reshape(len(x), -1).astype(np.float32), y, None
    import pandas as pd

    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file: say which and why
        raise HpoConfigError("task.dataset", f"must be a readable {suffix[1:]} file", path_str, str(exc)) from None
    x, y, names = _frame_to_arrays(frame, target, path_str)
    return x, y, names


def _from_loader(path: str, target: str | None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    fn = import_callable(path, "task.dataset")
    out = fn()
    if hasattr(out, "columns"):  # a pandas DataFrame
        return _frame_to_arrays(out, target, path)
    if isinstance(out, dict):
        out = (out.get("x", out.get("X")), out.get("y"))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise HpoConfigError("task.dataset", "a loader must return (features, target), {'x': .., 'y': ..} "
                             "or a DataFrame with task.target", path, f"It returned {type(out).__name__}.")
    x, y = np.asarray(out[0]), np.asarray(out[1])
    if not np.issubdtype(x.dtype, np.number):
        raise HpoConfigError("task.dataset", f"features must be numeric, got dtype {x.dtype}", path)
    return x.reshape(len(x), -1).astype(np.float32), y, None


def _labels(y: np.ndarray, problem: str, where: str) -> tuple[np.ndarray, str, list[Any] | None]:
    """Targets as class ids (classification) or floats (regression), with the problem type."""
    numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
    if problem == "auto":
        integral = numeric and np.all(np.mod(y.astype(np.float64), 1) == 0)
        problem = "classification" if (not numeric or (integral and len(np.unique(y)) <= 50)) else "regression"
    if problem == "regression":
        if not numeric:
            raise HpoConfigError("task.problem", f"regression needs a numeric target; {where} has {y.dtype}",
                                 "regression")
        return y.astype(np.float64), "regression", None
    classes, ids = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise HpoConfigError("task.target", "a classification target needs at least 2 classes", classes.tolist())
    return ids.astype(np.int64), "classification", classes.tolist()


def load_dataset(spec: DataSpec | str = "digits", seed: int | None = None, **kw: Any) -> Dataset:
    """Load and split a built-in set, a CSV/Parquet/NPZ file or a ``module:function`` loader.

    Example:
        >>> ds = load_dataset("diabetes")
        >>> ds.task, ds.num_features
        ('regression', 10)
    """
    if isinstance(spec, str):
        spec = DataSpec(spec, seed=seed or 0, **kw)
    if spec.dataset not in BUILTIN_DATASETS:
        return _load_and_split(spec)
    path = _cached_path(spec)
    ds = _read_cached(path, spec) if path is not None else None
    if ds is None:
        ds = _load_and_split(spec)
        if path is not None:
            _write_cached(path, ds)
    return ds


def _load_and_split(spec: DataSpec) -> Dataset:
    from sklearn.model_selection import train_test_split

    name = spec.dataset
    image_shape = spec.image_shape
    names: list[str] | None = None
    if name in BUILTIN_DATASETS:
        x, y, task, builtin_shape = _builtin(name, spec.seed)
        image_shape = image_shape or builtin_shape
        y, task, classes = _labels(y, task, name)
    else:
        if name.lower().endswith(FILE_SUFFIXES):
            x, y, names = _from_file(name, spec.target)
        elif ":" in name:
            x, y, names = _from_loader(name, spec.target)
        else:
            raise HpoConfigError("task.dataset", f"must be one of {list(BUILTIN_DATASETS)}, a file ending in "
                                 f"{list(FILE_SUFFIXES)}, or a 'module:function' loader", name)
        y, task, classes = _labels(y, spec.problem, name)
    x = np.asarray(x, dtype=np.float32)
    if len(x) != len(y):
        raise HpoConfigError("task.dataset", f"features and target must have the same rows ({len(x)} vs {len(y)})",
                             name)
    if image_shape is not None and int(np.prod(image_shape)) != x.shape[1]:
        raise HpoConfigError("task.image_shape", f"must multiply to the {x.shape[1]} features", list(image_shape))
    strat = y if task == "classification" else None
    idx = np.arange(len(x))
    dev, test = train_test_split(idx, test_size=spec.test_fraction, random_state=spec.seed, stratify=strat)
    val_of_dev = spec.val_fraction / (1.0 - spec.test_fraction)
    strat = y[dev] if task == "classification" else None
    _, val_pos = train_test_split(np.arange(len(dev)), test_size=val_of_dev, random_state=spec.seed, stratify=strat)
    return Dataset(name, task, x[dev], y[dev], x[test], y[test], np.sort(val_pos), spec.seed,
                   len(classes) if classes else 0, image_shape, names, classes, key=_key(spec))


# -- built-in sets, split once per machine --------------------------------------------------------
# A built-in set split by its seed is the same arrays every time for given scikit-learn and NumPy
# versions: the first search keeps them in hpo's cache directory and later ones read them back
# (np.load) instead of importing scikit-learn and splitting again, 1-3 s of the driver's CPU at
# start-up on a 2-core machine. Files and loaders are read afresh every time: they can change.

_CACHE_FORMAT = 1
_ARRAYS = ("x_dev", "y_dev", "x_test", "y_test", "val_idx")


def _cached_path(spec: DataSpec) -> Path | None:
    import hashlib
    import json
    from importlib import metadata

    from hpo._cache import cache_dir

    root = cache_dir()
    try:
        versions = [metadata.version("scikit-learn"), np.__version__]
    except metadata.PackageNotFoundError:
        return None
    if root is None:
        return None
    digest = hashlib.sha256(json.dumps([_CACHE_FORMAT, list(_key(spec)), versions], default=str).encode())
    return root / "data" / f"{spec.dataset}-{digest.hexdigest()[:20]}.npz"


def _read_cached(path: Path, spec: DataSpec) -> Dataset | None:
    import json

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ARRAYS}
            meta = json.loads(str(z["meta"]))
    except Exception:  # noqa: BLE001  (none yet, or damaged: split again and write it anew)
        return None
    shape = meta["image_shape"]
    return Dataset(meta["name"], meta["task"], arrays["x_dev"], arrays["y_dev"], arrays["x_test"], arrays["y_test"],
                   arrays["val_idx"], meta["seed"], meta["num_classes"], tuple(shape) if shape else None,
                   meta["feature_names"], meta["classes"], key=_key(spec))


def _write_cached(path: Path, ds: Dataset) -> None:
    import json
    import os

    meta = {"name": ds.name, "task": ds.task, "seed": ds.seed, "num_classes": ds.num_classes,
            "image_shape": list(ds.image_shape) if ds.image_shape else None, "feature_names": ds.feature_names,
            "classes": ds.classes}
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, meta=np.array(json.dumps(meta, default=_plain)), **{k: getattr(ds, k) for k in _ARRAYS})
        os.replace(tmp, path)  # atomic: a reader sees a whole file or none
    except (OSError, TypeError, ValueError):  # a read-only or full disk: the next search splits again
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def _key(spec: DataSpec) -> tuple[Any, ...]:
    return (spec.dataset, spec.target, spec.problem, spec.image_shape, spec.seed, spec.val_fraction,
            spec.test_fraction)


def matches(ds: Any, config: dict[str, Any]) -> bool:
    """Whether a preloaded data set is the one a trial's config asks for."""
    return isinstance(ds, Dataset) and ds.key == _key(DataSpec.from_config(config))
