"""The MLflow writer's own cost, as ``python -m benchmarks.tracking --writer`` measures it."""

from __future__ import annotations

from benchmarks import tracking


def test_writer_costs_times_both_ways_on_the_same_events() -> None:
    res = tracking.writer_costs(trials=6, window=4, repeats=2)
    assert set(res["runs"]) == {"run by run", "one transaction per window"}
    for way, runs in res["runs"].items():
        assert len(runs) == 2 and all(ms > 0 for ms in runs), (way, runs)
    assert res["cpu_ms_per_trial"]["one transaction per window"] < res["cpu_ms_per_trial"]["run by run"]
