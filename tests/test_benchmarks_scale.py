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
    assert run["records"]["exact"] and run["records"]["trials_json"] == 300
    assert run["wall_s"] > 0 and run["per_trial_ms"] > 0 and run["trials_per_s"] > 0 and run["driver_cpu_s"] > 0
    rss = run["driver_rss_mb"]
    assert rss["start"] > 0 and rss["end"] > 0 and rss["peak"] >= max(rss["start"], rss["end"])
    assert run["ray_processes_rss_mb"]["start"] > 0 and run["ray_processes_rss_mb"]["end"] > 0
    assert [b["trials_done"] for b in run["blocks"]] == list(range(30, 301, 30))
    assert all(b["rss_mb"] > 0 and b["trials_per_s"] > 0 for b in run["blocks"])
    assert run["rss_samples"] and all(mb > 0 for _, mb in run["rss_samples"])
    # the driver's CPU by thread: Tune's loop with hpo's callbacks and the searcher run in the main thread
    split = run["driver_cpu_ms_per_trial_by_thread"]
    assert split["main: Tune's loop, hpo's callbacks, the searcher"] > 0 and "MLflow writer (hpo-mlflow)" not in split
    assert sum(split.values()) <= run["driver_cpu_ms_per_trial"] * 1.1 + 0.5
    _check_suggest(res)
    assert res["findings"][0].startswith("search (off): 300/300 trials")


def _check_suggest(res: dict) -> None:
    s = res["suggest"]
    assert s["sizes"] == [100, 1200] and s["asks"] == 10 and s["repeats"] == 1
    assert set(s["samplers"]) == {"random", "tpe", "tpe_uncapped", "tpe_multivariate", "tpe_multivariate_uncapped"}
    for row in s["samplers"].values():
        assert [p["n_trials"] for p in row["points"]] == [100, 1200]
        assert all(p["median_ms"] > 0 and p["median_cpu_ms"] > 0 and p["p90_ms"] >= p["median_ms"]
                   and p["asks"] == 10 and len(p["round_median_ms"]) == 1 for p in row["points"])
        assert row["estimated_total_s"] > 0 and row["hpo_options"].startswith("searcher:")
    assert s["tpe_max_history"] == 1000 < 1200  # the larger study is past hpo's cap
    assert res["hpo_caps_suggest_cost"] is True
    assert any("uncapped" in line for line in res["findings"]) and "max_history=1000" in res["findings"][-1]


def test_suggest_only_updates_the_suggestion_section_and_keeps_the_search(tmp_path: Path) -> None:
    search = json.loads((ROOT / "benchmarks" / "results" / "scale_quick.json").read_text())["search"]
    earlier = {"benchmark": "scale", "quick": True, "machine": {"cpus": 2}, "search": search,
               "suggest": {"stale": True}, "hpo_caps_suggest_cost": False, "findings": ["stale"]}
    (tmp_path / "scale_quick.json").write_text(json.dumps(earlier))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--quick", "--suggest-only", "--out",
                           str(tmp_path)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "scale_quick.json").read_text())
    assert res["search"] == earlier["search"] and res["machine"] == earlier["machine"]
    _check_suggest(res)
    assert res["suggest"]["estimate_for_trials"] == search["trials"] and "stale" not in res["findings"]
    assert res["findings"][0].startswith("search (off)")
    assert (tmp_path / "scale_quick.png").stat().st_size > 0


def test_cap_quality_compares_capped_and_uncapped_searches() -> None:
    from benchmarks.scale import measure_cap_quality

    q = measure_cap_quality(trials=120, cap=100, seeds=1)
    assert q["trials"] == 120 and q["max_history"] == 100 and q["seeds"] == 1
    for name in ("capped", "uncapped"):
        [run] = q["runs"][name]
        assert list(run["best"]) == ["30", "60", "120"] and run["wall_s"] >= 0
        assert run["best"]["120"] <= run["best"]["60"] <= run["best"]["30"]
    assert q["capped_at_least_as_good"] in (0, 1)
