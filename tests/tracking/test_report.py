"""`hpo report` builds HTML and Markdown from MLflow and attaches them to the search's parent run."""

from __future__ import annotations

import pytest

import hpo
from hpo import Float
from tests import trainables
from tests.conftest import hpo_cli

pytestmark = pytest.mark.slow


def test_report_from_mlflow_has_best_config_leaderboard_and_plots(in_tmp, ray_address):
    from mlflow.tracking import MlflowClient

    results = hpo.run(name="reported", trainable=trainables.quadratic, space={"x": Float(0.0, 1.0), "steps": 3},
                      metric="loss", mode="min", strategy="tpe", num_samples=5, address=ray_address)
    out = hpo_cli("report", "reported", "--out", "reports", cwd=in_tmp).stdout
    assert results.parent_run_id in out
    page = (in_tmp / "reports" / "reported-report.html").read_text()
    md = (in_tmp / "reports" / "reported-report.md").read_text()
    for t in results.trials:
        assert t.trial_id in page and t.trial_id in md
    assert f"{results.best_config['x']}" in md and "data:image/png;base64," in page
    assert "optimization_history.png" in md
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    attached = {a.path for a in client.list_artifacts(results.parent_run_id, "report")}
    assert attached == {"report/reported-report.html", "report/reported-report.md"}
    bad = hpo_cli("report", "no-such-search", cwd=in_tmp, check=False)
    assert bad.returncode == 2 and "no-such-search" in bad.stderr
