"""The framework-overhead benchmark's quick mode: every way runs end to end and the figures add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.benchmark
def test_overhead_quick_runs_in_process_optuna_and_hpo(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--quick", "--ways", "a,c,d",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "overhead_quick.json").read_text())
    assert (tmp_path / "overhead_quick.png").stat().st_size > 0
    assert [r["way"] for r in out["digits"]] == ["a", "c", "d"]
    assert [r["way"] for r in out["one_second"]] == ["d"]
    for row in out["digits"] + out["one_second"]:
        assert row["trials"] == (10 if row in out["one_second"] else 16)
        # every trial's own time lies inside the search's span: efficiency is a share of the workers' time
        assert 0 < row["efficiency"] <= 1.0 + 1e-6
        assert row["startup_s"] > 0 and row["search_wall_s"] > 0
        assert len(row["done_at_s"]) == row["trials"]
    hpo_sleep = out["one_second"][0]
    assert all(0.99 <= s <= 1.5 for s in hpo_sleep["own_s"])  # each trial slept one second
