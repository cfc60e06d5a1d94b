"""Two searches at once on one machine, sharing one MLflow SQLite store and one storage path:
both complete with exact counts and no cross-talk ("database is locked" never reaches the user)."""

from __future__ import annotations

import json

import pytest

from hpo.rundir import find_run_dir
from tests.conftest import start_hpo
from tests.test_lifecycle_search import check_records

pytestmark = pytest.mark.slow


def test_two_searches_share_one_sqlite_store_and_one_storage_path(tmp_path, ray_address):
    db = tmp_path / "mlflow.db"
    procs = []
    for name, n in (("left", 10), ("right", 12)):
        exp = tmp_path / f"{name}.yaml"
        exp.write_text(json.dumps({
            "name": name, "trainable": "tests.trainables:quadratic", "metric": "loss", "mode": "min",
            "space": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 3}, "num_samples": n,
            "strategy": {"searcher": "tpe", "seed": 1}, "max_concurrent": 1,
            "tracking": {"tracking_uri": f"sqlite:///{db}", "flush_interval_s": 0.2}}))
        procs.append((name, n, start_hpo(tmp_path, "run", str(exp), "--address", ray_address, "--json")))
    for name, n, proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["num_trials"] == n
        run_dir = find_run_dir(name, str(tmp_path / "hpo_results"))
        statuses = check_records(run_dir, db, "loss", total=n)
        assert set(statuses.values()) == {"completed"}
