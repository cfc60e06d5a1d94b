"""The chaos benchmark runs end to end: killed twice, resumed, every record checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, _env

pytestmark = [pytest.mark.slow, pytest.mark.benchmark]


def test_chaos_benchmark_kills_resumes_and_checks_every_record(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos", "--kills", "2", "--trials", "12", "--out",
                           str(tmp_path)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "chaos.json").read_text())
    # (an attempt that ends before its drawn moment is not killed)
    assert 1 <= res["kills"] <= 2 and res["attempts"] == res["kills"] + 1 and res["ok"] is True
    assert len(res["checks"]) == 6 and all(res["checks"].values())
