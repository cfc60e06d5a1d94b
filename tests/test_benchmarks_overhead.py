"""The framework-overhead benchmark's quick mode: every way runs end to end and the figures add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_workers_other_than_rays_defaults_are_refused_with_plain_ray_tune() -> None:
    from benchmarks import overhead

    for argv, rule in ((["--workers", "0"], "--workers must be >= 1"),
                       (["--workers", "1", "--ways", "a,b"], "when way b runs: got 1 with ways a,b")):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.overhead", *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and rule in proc.stderr, proc.stderr
    assert overhead.WORKERS == 2


@pytest.mark.slow
@pytest.mark.benchmark
@pytest.mark.parametrize("workers", [2, 1])
def test_overhead_quick_runs_in_process_optuna_and_hpo(tmp_path: Path, workers: int) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--quick", "--ways", "a,c,d",
                           "--workers", str(workers), "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
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
        assert row["workers"] == (1 if row["way"] == "a" else workers)
    hpo_sleep = out["one_second"][0]
    assert all(0.99 <= s <= 1.5 for s in hpo_sleep["own_s"])  # each trial slept one second
