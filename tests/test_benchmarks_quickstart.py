"""The quickstart benchmark's quick mode: hpo and its plain-Optuna peer run end to end and the figures add up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import quick_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.benchmark]


def test_quick_quickstart_benchmark_times_hpo_and_plain_optuna_consistently(tmp_path: Path) -> None:
    proc = quick_benchmark("quickstart", tmp_path)
    out = json.loads((tmp_path / "quickstart_quick.json").read_text())
    assert out["benchmark"] == "quickstart" and out["quick"] is True
    assert (out["trials"], out["workers"], out["repeats"]) == (6, 2, 1)
    assert out["commands"]["hpo"].startswith("hpo run ") and "--set num_samples=6" in out["commands"]["hpo"]
    # the table: every figure, both ways and the ratio, as printed
    for label in out["figures"].values():
        assert label in proc.stdout
    assert "hpo/optuna" in proc.stdout and "Start-up of hpo" in proc.stdout and "Start-up of optuna" in proc.stdout
    for way in ("hpo", "optuna"):
        [run] = out["runs"][way]
        assert out["median"][way] == {k: run[k] for k in out["figures"]}  # one run: its own figures
        assert run["trials"] == 6 and run["completed"] + run["pruned"] + run["other"] == 6
        assert run["completed"] >= 1 and 1 <= run["trials_timed"] <= 6
        # the three spans cover the command exactly; start-up ends after the first trial's first epoch
        assert run["pre_search_s"] + run["search_s"] + run["end_s"] == pytest.approx(run["wall_s"], abs=0.01)
        assert 0 < run["pre_search_s"] < run["startup_s"] < run["wall_s"]
        assert run["startup_s"] + run["search_s"] + run["end_s"] == pytest.approx(
            run["wall_s"], abs=run["startup_s"] - run["pre_search_s"] + 0.01)
        assert 0 < run["efficiency"] <= 1.05
        assert 0 < run["train_sum_s"] < run["own_sum_s"]
        assert 0 < run["best_val_accuracy"] <= 1
        # the start-up breakdown accounts for the whole start-up, segment by segment
        segments = run["startup_breakdown"]
        assert len(segments) >= 3 and all(s >= 0 for _, s in segments)
        assert sum(s for _, s in segments) == pytest.approx(run["startup_s"], abs=0.01 * len(segments))
    # time to quality: the target is the lower best of the two ways, so each of the single runs reaches it,
    # at the end of its first completed trial that does (seconds from the command's start)
    target = out["quality_target"]["value"]
    assert target == min(out["runs"][w][0]["best_val_accuracy"] for w in ("hpo", "optuna"))
    for way in ("hpo", "optuna"):
        [run] = out["runs"][way]
        results = run["results"]
        assert results == sorted(results) and len(results) == run["completed"]
        assert max(v for _, v in results) == pytest.approx(run["best_val_accuracy"])
        first = next(t for t, v in results if v >= target)
        assert run["time_to_target_s"] == first and run["pre_search_s"] < first <= run["wall_s"]
    assert "Time to quality: target val_accuracy" in proc.stdout
    hpo = out["runs"]["hpo"][0]
    assert [label for label, _ in hpo["startup_breakdown"]][0].startswith("python, imports, validation")
    assert sum(s for _, s in hpo["end_breakdown"]) == pytest.approx(hpo["end_s"], abs=0.05)
    assert set(out["ratio"]) == {k for k in out["figures"] if k not in ("completed", "pruned", "other")}
    assert out["ratio"]["wall_s"] == pytest.approx(out["median"]["hpo"]["wall_s"] / out["median"]["optuna"]["wall_s"],
                                                   rel=1e-3)
