"""The scale-out benchmark's quick mode: fresh 1- and 2-node clusters, one search each, a table
with a row per node count, and no Ray process of its clusters left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.testing.processes import proc_table
from tests.conftest import ROOT, _env

pytestmark = [pytest.mark.slow, pytest.mark.benchmark]


def test_quick_scale_out_benchmark_prints_a_row_per_node_count_and_stops_its_clusters(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale_out", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "scale_out_quick.json").read_text())
    assert res["benchmark"] == "scale_out" and res["quick"] is True and res["repeats"] == 1
    assert "4 trials x 0.2 s" in res["search"] and "tracking off" in res["search"]
    assert [r["nodes"] for r in res["rows"]] == [1, 2] and sorted(r["nodes"] for r in res["runs"]) == [1, 2]
    for row in res["rows"]:
        run = next(r for r in res["runs"] if r["nodes"] == row["nodes"])
        assert row["runs"] == 1 and row["trials"] == run["trials"] == 4
        assert run["trial_s_sum"] >= 4 * 0.2 and sum(run["trials_per_node"]) == 4
        assert 1 <= run["nodes_used"] <= row["nodes"] and len(run["trials_per_node"]) == run["nodes_used"]
        # efficiency is the trials' own time over the nodes' time during the search: at most 1
        assert row["search_s"] == run["search_s"] >= 0.2 and 0 < row["efficiency"] <= 1
        assert row["efficiency"] == pytest.approx(run["trial_s_sum"] / (row["nodes"] * run["search_s"]), rel=1e-3)
        assert run["wall_s"] > run["search_s"] and row["ideal_search_s"] == pytest.approx(0.8 / row["nodes"])
    assert res["rows"][0]["speedup"] == 1.0
    lines = proc.stdout.strip().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Scale-out ("))
    assert lines[head + 1].split()[:4] == ["nodes", "runs", "trials", "wall"]
    assert [line.split()[0] for line in lines[head + 2:head + 4]] == ["1", "2"]
    for run in res["runs"]:  # every process of its clusters was stopped
        assert run["ray_temp_dir"].startswith("/tmp/so")
        assert not [cmd for _, cmd in proc_table().values() if run["ray_temp_dir"] in cmd]
