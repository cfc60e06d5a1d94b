"""The search-quality benchmark's quick mode: runs end to end and writes sane numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.benchmark
def test_quality_quick(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.quality", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "targets:" in proc.stdout
    res = json.loads((tmp_path / "quality_quick.json").read_text())
    assert (tmp_path / "quality_quick.png").stat().st_size > 0
    assert res["quick"] is True
    seeds, trials = res["seeds"], res["trials"]
    assert set(res["tasks"]) == {"branin", "hartmann6"}
    for name, task in res["tasks"].items():
        assert task["optimum_source"] == "known"
        # the known optimum is a lower bound for every result; random's mean lies above it
        assert task["random_expected_final"] > task["optimum"]
        assert set(task["strategies"]) == {"random+fifo", "tpe+fifo", "tpe+asha"}
        for label, row in task["strategies"].items():
            runs = row["runs"]
            assert len(runs) == seeds
            for run in runs:
                assert run["trials"] == trials
                assert run["completed"] + run["pruned"] + run["failed"] == trials
                assert run["final_best"] is not None and run["final_best"] >= task["optimum"] - 1e-9
                cum = [c for c, _ in run["curve"]]
                assert cum == sorted(cum) and cum[-1] == run["trial_epochs"]
                bests = [b for _, b in run["curve"] if b is not None]
                assert bests == sorted(bests, reverse=True) and bests[-1] == run["final_best"]
                if label.endswith("fifo"):  # every trial runs the full budget
                    assert run["trial_epochs"] == trials * task["steps_per_trial"]
                else:
                    assert run["trial_epochs"] <= trials * task["steps_per_trial"]
            assert all(math.isfinite(s) and s <= 100 + 1e-6 for s in row["scores"]), (name, label, row["scores"])
            assert math.isfinite(row["score_mean"])
            assert row["ratio"] is None or row["ratio"] > 0
        # Bayesmark normalization: random search's expected score is 0 by construction
        assert abs(task["strategies"]["random+fifo"]["score_mean"]) < 1e-6
    assert set(res["overall"]) == {"random+fifo", "tpe+fifo", "tpe+asha"}
    assert abs(res["overall"]["random+fifo"]["score_mean"]) < 1e-6
    assert [t["met"] in (True, False) for t in res["targets"]] == [True, True]
