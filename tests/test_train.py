"""The built-in training engine: metrics, losses, schedules, regularization, early stopping."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

import hpo
from hpo import HpoConfigError
from hpo.train.loop import classification_metrics, loss_function
from hpo.train.optim import Schedule, build_optimizer
from hpo.train.task import TaskConfig, validate_task


def test_classification_metrics_match_scikit_learn():
    g = torch.Generator().manual_seed(0)
    for classes in (2, 4):
        logits = torch.randn(200, classes, generator=g)
        y = torch.randint(0, classes, (200,), generator=g)
        m = classification_metrics(logits, y, classes)
        pred = logits.argmax(1).numpy()
        assert math.isclose(m["f1"], f1_score(y, pred, average="macro", zero_division=0), rel_tol=1e-9)
        assert math.isclose(m["precision"], precision_score(y, pred, average="macro", zero_division=0), rel_tol=1e-9)
        assert math.isclose(m["recall"], recall_score(y, pred, average="macro", zero_division=0), rel_tol=1e-9)
        if classes == 2:
            assert math.isclose(m["roc_auc"], roc_auc_score(y, torch.softmax(logits, 1)[:, 1]), rel_tol=1e-9)
        else:
            assert "roc_auc" not in m


def test_regression_losses():
    out, y = torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])
    assert float(loss_function("auto", False)(out, y)) == pytest.approx(2.5)  # MSE
    assert float(loss_function("mae", False)(out, y)) == pytest.approx(1.5)
    assert float(loss_function("huber", False)(out, y)) == pytest.approx(1.0)  # both residuals > 1: |r| - 0.5


def _lrs(schedule: str, epochs: int = 6, **kw) -> list[float]:
    cfg = TaskConfig(lr=0.1, epochs=epochs, schedule=schedule, **kw)
    opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    sched = Schedule(cfg, opt, batches_per_epoch=4)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        for _ in range(4):
            opt.step()
            sched.after_batch()
        sched.after_epoch(val_loss=1.0)
    return lrs


def test_learning_rate_schedules():
    assert _lrs("constant") == [0.1] * 6
    assert _lrs("step", step_size=2, gamma=0.5) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert _lrs("exponential", gamma=0.5)[:3] == pytest.approx([0.1, 0.05, 0.025])
    cos = _lrs("cosine", warmup_epochs=2, min_lr=0.001)
    assert cos[0] < cos[1] < cos[2] == pytest.approx(0.1) and cos[2] > cos[3] > cos[4] > cos[5] >= 0.001
    one = _lrs("onecycle")
    assert max(one) > one[0] and one[-1] < max(one)
    plateau = _lrs("plateau", step_size=1, gamma=0.5)  # val_loss never improves
    assert plateau[0] == 0.1 and plateau[-1] < 0.1


def test_task_validation_names_schedules_losses_and_mismatches():
    with pytest.raises(HpoConfigError, match="schedule"):
        validate_task({"schedule": "cosin"}, {})
    with pytest.raises(HpoConfigError, match="cross_entropy needs a classification"):
        validate_task({"dataset": "diabetes", "loss": "cross_entropy"}, {})
    with pytest.raises(HpoConfigError, match="need a regression"):
        validate_task({"dataset": "digits"}, {"loss": ["mae", "huber"]})
    validate_task({"dataset": "diabetes"}, {"loss": ["mse", "mae", "huber"], "schedule": ["cosine", "plateau"]})


@pytest.mark.slow
def test_binary_task_with_schedule_l1_and_patience_reports_f1_and_roc_auc(tmp_path, ray_address):
    results = hpo.run(
        name="bc", task={"dataset": "breast_cancer", "epochs": 12, "schedule": "cosine", "warmup_epochs": 1,
                         "l1": 1e-4, "patience": 2, "lr": 0.05},
        space={"hidden": hpo.Int(8, 32)}, metric="val_roc_auc", mode="max", strategy="random", num_samples=2,
        storage_path=str(tmp_path / "runs"), tracking={"enabled": False}, address=ray_address,
    )
    for t in results.trials:
        assert t.status == "completed"
        assert {"val_f1", "val_precision", "val_recall", "val_roc_auc", "lr"} <= set(t.metrics)
        assert 0.8 < t.metrics["val_roc_auc"] <= 1.0
        assert t.steps == 12 or t.metrics.get("early_stopped") == 1


@pytest.mark.slow
def test_regression_task_with_huber_loss(tmp_path, ray_address):
    results = hpo.run(
        name="reg", task={"dataset": "diabetes", "epochs": 4, "model": "linear", "loss": "huber"},
        space={"lr": hpo.Float(1e-3, 1e-2, log=True)}, metric="val_r2", mode="max", strategy="random",
        num_samples=2, storage_path=str(tmp_path / "runs"), tracking={"enabled": False}, address=ray_address,
    )
    assert results.count("completed") == 2
    assert all({"val_mse", "val_mae", "val_r2"} <= set(t.metrics) for t in results.trials)
