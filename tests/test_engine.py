"""The training engine's data sources, cross-validation, augmentation, costs, PBT, export, lr-find."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hpo import HpoConfigError
from hpo.train import validate_task
from hpo.train.best import export_model
from hpo.train.data import load_dataset
from hpo.train.loop import TaskRun, augment_images, fit
from hpo.train.lr_find import lr_find
from hpo.train.model_file import load_model, model_payload

TIMING = ("epoch_time_s", "train_time_s", "latency_us")


def _table(n=120):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame["label"] = np.where(frame.a + frame.b > 0, "pos", "neg")
    return frame


def test_csv_parquet_and_npz_load_the_same_rows(tmp_path):
    frame = _table()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    np.savez(tmp_path / "d.npz", x=frame[["a", "b"]].to_numpy(), y=(frame.label == "pos").to_numpy().astype(int))
    csv = load_dataset(str(tmp_path / "d.csv"), target="label")
    pq = load_dataset(str(tmp_path / "d.parquet"), target="label")
    npz = load_dataset(str(tmp_path / "d.npz"))
    assert csv.task == pq.task == npz.task == "classification"
    assert csv.classes == ["neg", "pos"] and csv.feature_names == ["a", "b"]
    np.testing.assert_array_equal(csv.x_dev, pq.x_dev)
    np.testing.assert_array_equal(csv.x_dev, npz.x_dev)
    np.testing.assert_array_equal(csv.y_dev, npz.y_dev)


def test_bad_table_data_is_refused_before_launch(tmp_path):
    frame = _table()
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(HpoConfigError, match=r"task.target: must be a column .* but got 'lable'. Did you mean 'label'"):
        validate_task({"dataset": str(tmp_path / "d.csv"), "target": "lable"}, {})
    frame.assign(city="x").to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(HpoConfigError, match=r"features must be numeric; non-numeric columns .*\['city'\]"):
        validate_task({"dataset": str(tmp_path / "text.csv"), "target": "label"}, {})
    with pytest.raises(HpoConfigError, match="task.dataset: must be an existing file"):
        validate_task({"dataset": str(tmp_path / "missing.csv"), "target": "label"}, {})
    with pytest.raises(HpoConfigError, match="task.dataset: must name an importable module"):
        validate_task({"dataset": "no_such_module:load"}, {})
    with pytest.raises(HpoConfigError, match="task.model: must name an attribute"):
        validate_task({"model": "tests.user_code:nope"}, {})
    with pytest.raises(HpoConfigError, match=r"task.dataset: must be one of \['digits'"):
        validate_task({"dataset": "mnist"}, {})


def test_loader_function_with_string_labels_trains_a_user_model_with_a_user_step():
    from tests import user_code

    user_code.calls.clear()
    cfg = {"dataset": "tests.user_code:blobs", "model": "tests.user_code:tiny_model",
           "train_step": "tests.user_code:doubled_loss_step", "width": 4, "epochs": 3, "lr": 0.05}
    ds = validate_task(cfg, {"width": None})  # user code reads `width`: not an unknown key
    run, history = fit(cfg, ds)
    assert ds.classes == ["a", "b", "c"] and run.trainers[0].param_count == 5 * 4 + 4 + 4 * 3 + 3
    assert user_code.calls and history[-1]["val_accuracy"] > 0.9


def test_user_model_must_return_a_module():
    with pytest.raises(TypeError, match="must return a torch.nn.Module"):
        fit({"dataset": "iris", "model": "tests.user_code:not_a_module", "epochs": 1})


def test_cross_validation_reports_mean_spread_and_every_fold():
    run, history = fit({"dataset": "iris", "epochs": 3, "cv_folds": 4, "hidden": 8})
    last = history[-1]
    folds = [last[f"val_accuracy_fold{i}"] for i in range(4)]
    assert len(run.trainers) == 4
    assert last["val_accuracy"] == pytest.approx(np.mean(folds))
    assert last["val_accuracy_std"] == pytest.approx(np.std(folds))
    val_rows = [set(map(tuple, s.x_val.round(4))) for s in run.ds.splits(4)]
    assert all(not (a & b) for i, a in enumerate(val_rows) for b in val_rows[i + 1:]), "folds overlap"


def test_scaling_is_fitted_on_the_training_part_only():
    ds = load_dataset("wine")
    split = ds.splits(0)[0]
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.abs(split.x_val.mean(axis=0)).max() > 1e-3  # validation rows were not used for the scaler


def test_augmentation_shifts_and_rotates_images():
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 3:5, 3:5] = 1.0
    flat = img.reshape(1, -1)
    gen = torch.Generator().manual_seed(0)
    same = augment_images(flat, (1, 8, 8), 0.0, 0.0, gen)
    torch.testing.assert_close(same, flat, atol=1e-5, rtol=0)
    moved = [augment_images(flat, (1, 8, 8), 2.0, 0.0, gen) for _ in range(20)]
    assert any(not torch.allclose(m, flat, atol=1e-3) for m in moved)
    assert all(m.sum() == pytest.approx(4.0, abs=2.0) for m in moved)  # the square moves, it does not vanish
    with pytest.raises(HpoConfigError, match="augmentation needs image data"):
        validate_task({"dataset": "iris", "augment_shift": 1.0}, {})


def test_same_config_and_seed_give_the_same_metrics_on_cpu():
    cfg = {"dataset": "digits", "epochs": 3, "hidden": 32, "dropout": 0.2, "augment_shift": 0.5, "model": "cnn",
           "channels": 4, "seed": 3}
    a = [{k: v for k, v in h.items() if k not in TIMING} for h in fit(cfg, threads=1)[1]]
    b = [{k: v for k, v in h.items() if k not in TIMING} for h in fit(cfg, threads=1)[1]]
    c = [{k: v for k, v in h.items() if k not in TIMING} for h in fit({**cfg, "seed": 4}, threads=1)[1]]
    assert a == b
    assert a != c


def test_cost_metrics_and_regression_errors_in_target_units():
    run, history = fit({"dataset": "diabetes", "epochs": 2, "hidden": 16, "depth": 1})
    last = history[-1]
    assert last["param_count"] == 10 * 16 + 16 + 16 + 1
    assert last["train_time_s"] == pytest.approx(sum(h["epoch_time_s"] for h in history))
    assert last["latency_us"] > 0
    y_std = run.trainers[0].split.y_std
    assert y_std > 10  # diabetes progression: tens of points
    assert last["val_mse"] == pytest.approx(last["val_loss"] * y_std**2, rel=1e-4)  # MSE loss, standardized


def test_restoring_another_trials_state_applies_this_trials_lr_and_weight_decay():
    base = {"dataset": "iris", "epochs": 4, "optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
            "schedule": "step", "step_size": 1, "gamma": 0.5}
    donor = TaskRun(base)
    list(zip(range(2), donor.epochs()))
    state = donor.state_dict()
    assert donor.trainers[0].optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    child = TaskRun({**base, "lr": 0.2, "weight_decay": 1e-3})
    child.load_state_dict(state)
    group = child.trainers[0].optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.05)  # the schedule's place kept, rescaled by 0.2 / 0.1
    assert group["weight_decay"] == 1e-3 and child.epoch == 2
    metrics = next(child.epochs())
    assert metrics["lr"] == pytest.approx(0.05) and child.epoch == 3


def test_exported_model_takes_raw_features_and_matches_the_trained_one(tmp_path):
    run, _ = fit({"dataset": "wine", "epochs": 3, "hidden": 16})
    torch.save(model_payload(run), tmp_path / "model.pt")
    files = export_model(tmp_path / "model.pt", tmp_path / "out")
    assert sorted(p.name for p in files) == ["config.json", "model.pt", "model.pt2"]
    from sklearn.datasets import load_wine

    raw = torch.tensor(load_wine().data[:20], dtype=torch.float32)
    split = run.trainers[0].split
    expected = run.model.eval()((raw - torch.from_numpy(split.x_mean)) / torch.from_numpy(split.x_std))
    torch.testing.assert_close(load_model(tmp_path / "out")(raw), expected)
    program = torch.export.load(tmp_path / "out" / "model.pt2")
    torch.testing.assert_close(program.module()(raw), expected)


def test_lr_find_proposes_a_range_below_divergence():
    r = lr_find({"dataset": "digits", "optimizer": "adam", "hidden": 64}, steps=80)
    assert r.low < r.steepest_lr <= r.min_loss_lr == r.high
    assert 1e-4 < r.high < 1.0
    assert r.losses[-1] > min(r.losses)  # the test ran past the minimum
    assert math.isclose(r.lrs[1] / r.lrs[0], (1.0 / 1e-6) ** (1 / 79), rel_tol=1e-9)


def test_task_checks_precision_models_and_metrics():
    with pytest.raises(HpoConfigError, match="task.precision: fp16 needs a GPU"):
        validate_task({"precision": "fp16"}, {})
    with pytest.raises(HpoConfigError, match="task.model: cnn needs image data"):
        validate_task({"dataset": "wine", "model": "cnn"}, {})
    with pytest.raises(HpoConfigError, match="metric: the built-in task reports only .* Did you mean 'val_f1'"):
        validate_task({"dataset": "wine"}, {}, ["val_f11"])
    with pytest.raises(HpoConfigError, match="task.cv_folds: must be 0"):
        validate_task({"cv_folds": 1}, {})
    validate_task({"dataset": "breast_cancer", "cv_folds": 3}, {}, ["val_roc_auc_std", "val_f1_fold2", "latency_us"])


def test_bf16_autocast_trains_on_cpu():
    cfg = {"dataset": "digits", "epochs": 5, "hidden": 64, "lr": 3e-3}
    run, half = fit({**cfg, "precision": "bf16"})
    _, full = fit(cfg)
    assert run.trainers[0].amp is torch.bfloat16
    assert half[-1]["val_accuracy"] > 0.85 and abs(half[-1]["val_accuracy"] - full[-1]["val_accuracy"]) < 0.05


def test_batch_norm_trains_when_the_last_batch_would_hold_one_sample():
    # digits' training part has 1077 rows: batch size 4 leaves one row over, folded into the last batch
    run, history = fit({"dataset": "digits", "model": "mlp", "batch_norm": True, "batch_size": 4, "epochs": 1,
                        "hidden": 16, "depth": 1})
    assert history[-1]["val_accuracy"] > 0.5
