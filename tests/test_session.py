"""The built-in task's reporter: which epochs go to Ray Tune when, and what rides along."""

from __future__ import annotations

from typing import Any

import pytest

import hpo.session as session
from hpo.session import Reporter
from hpo.wire import HISTORY_KEY, STEP_KEY, ReportPlan, result_steps, with_epoch_step


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from ray import tune

    out: list[dict[str, Any]] = []
    monkeypatch.setattr(tune, "report", lambda payload, checkpoint=None: out.append(payload))
    monkeypatch.setattr(session, "node_id", lambda: "node-a")
    monkeypatch.setattr(session, "gpu", lambda: "none")
    return out


def test_reporter_sends_rung_epochs_and_carries_the_others(sent: list[dict[str, Any]]) -> None:
    report = Reporter(ReportPlan(frozenset({2, 6}), interval_s=3600))
    for epoch in range(1, 8):
        report(epoch, {"val_loss": 1.0 / epoch})
    report.flush()
    assert [p[STEP_KEY] for p in sent] == [2, 6, 7]  # the rungs, then the end
    assert [[e[STEP_KEY] for e in p.get(HISTORY_KEY, [])] for p in sent] == [[1], [3, 4, 5], []]
    # every epoch comes back out, in order, with its own value
    steps = [(s, e["val_loss"]) for p in sent for s, e in result_steps(p)]
    assert steps == [(e, 1.0 / e) for e in range(1, 8)]
    # schedulers see the epoch, not Ray's count of reports
    assert with_epoch_step({**sent[1], "training_iteration": 2})["training_iteration"] == 6


def test_reporter_sends_every_step_without_a_plan_and_with_a_checkpoint(sent: list[dict[str, Any]]) -> None:
    every = Reporter(None)
    for epoch in (1, 2):
        every(epoch, {"loss": 0.5})
    fifo = Reporter(ReportPlan(frozenset(), interval_s=3600))
    fifo(1, {"loss": 0.4})
    fifo(2, {"loss": 0.3}, checkpoint=object())  # a checkpoint is never held back
    fifo(3, {"loss": 0.2})
    fifo.flush()
    fifo.flush()  # nothing pending: nothing sent
    assert [p[STEP_KEY] for p in sent] == [1, 2, 2, 3]
    assert all(p["hpo_node"] == "node-a" and p["hpo_started"] > 0 for p in sent)
