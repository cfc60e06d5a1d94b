"""Built-in data sets split once per machine: later searches read the split from hpo's cache."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpo.train.data import BUILTIN_DATASETS, DataSpec, load_dataset

_FIELDS = [f.name for f in dataclasses.fields(load_dataset("iris")) if not f.name.startswith("_")]


def _same(a, b) -> None:
    for name in _FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        else:
            assert x == y and type(x) is type(y), name


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_a_cached_split_is_the_split_itself(tmp_path, monkeypatch, name) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_dataset(DataSpec(name, seed=3))  # split, and written to the cache
    [written] = (tmp_path / "hpo" / "data").glob(f"{name}-*.npz")
    again = load_dataset(DataSpec(name, seed=3))  # read back
    _same(again, first)
    assert again.splits(0)[0].x_train.shape == first.splits(0)[0].x_train.shape
    assert written.stat().st_size > 0


def test_each_seed_and_split_setting_has_its_own_cached_split(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = load_dataset(DataSpec("wine", seed=0))
    b = load_dataset(DataSpec("wine", seed=1))
    c = load_dataset(DataSpec("wine", seed=0, val_fraction=0.3))
    assert len(list((tmp_path / "hpo" / "data").glob("wine-*.npz"))) == 3
    assert not np.array_equal(a.x_test, b.x_test)
    assert len(c.val_idx) != len(a.val_idx)
    _same(load_dataset(DataSpec("wine", seed=1)), b)


def test_a_damaged_cache_file_is_split_again_and_replaced(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_dataset("digits")
    [path] = (tmp_path / "hpo" / "data").glob("digits-*.npz")
    path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk
    _same(load_dataset("digits"), first)
    with np.load(path, allow_pickle=False) as z:  # written whole again
        assert json.loads(str(z["meta"]))["name"] == "digits"


def test_an_unwritable_cache_costs_only_the_split(tmp_path, monkeypatch) -> None:
    (tmp_path / "hpo").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _same(load_dataset("iris"), load_dataset("iris"))


def test_files_are_never_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.normal(size=(60, 3)), y=rng.integers(0, 2, 60))
    load_dataset(str(path))
    assert not (tmp_path / "cache" / "hpo" / "data").exists()


def test_a_cached_split_loads_without_importing_scikit_learn(tmp_path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    code = ("import sys; from hpo.train.data import load_dataset; ds = load_dataset('digits'); "
            "print(len(ds.x_dev), 'sklearn' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["1437", "True"]  # split with scikit-learn, then cached
    assert second.stdout.split() == ["1437", "False"]
