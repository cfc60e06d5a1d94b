"""The scale benchmark's quick mode runs end to end and writes a well-formed JSON and PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, _env

pytestmark = [pytest.mark.slow, pytest.mark.benchmark]


def test_quick_scale_benchmark_writes_sane_results(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "scale_quick.png").stat().st_size > 0
    res = json.loads((tmp_path / "scale_quick.json").read_text())
    assert res["benchmark"] == "scale" and res["quick"] is True
    [run] = res["search"]["variants"]
    assert run["variant"] == "off"
    assert run["trials"] == res["search"]["trials"] == 300
    assert run["completed"] == 300
    assert run["wall_s"] > 0 and run["per_trial_ms"] > 0 and run["trials_per_s"] > 0 and run["driver_cpu_s"] > 0
    rss = run["driver_rss_mb"]
    assert rss["start"] > 0 and rss["end"] > 0 and rss["peak"] >= max(rss["start"], rss["end"])
    assert run["ray_processes_rss_mb"]["start"] > 0 and run["ray_processes_rss_mb"]["end"] > 0
    assert [b["trials_done"] for b in run["blocks"]] == list(range(30, 301, 30))
    assert all(b["rss_mb"] > 0 and b["trials_per_s"] > 0 for b in run["blocks"])
    assert run["rss_samples"] and all(mb > 0 for _, mb in run["rss_samples"])
    s = res["suggest"]
    assert s["sizes"] == [100, 500]
    assert set(s["samplers"]) == {"random", "tpe", "tpe_multivariate", "tpe_mv_window1000"}
    for row in s["samplers"].values():
        assert [p["n_trials"] for p in row["points"]][0] >= 100
        assert len(row["points"]) == 2
        assert all(p["median_ms"] > 0 and p["median_cpu_ms"] > 0 and p["p90_ms"] >= p["median_ms"]
                   for p in row["points"])
        assert row["estimated_total_s"] > 0
    assert res["hpo_caps_suggest_cost"] is False and res["findings"]
