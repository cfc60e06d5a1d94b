"""`hpo report` of a real search (TPE + ASHA, most trials pruned) recorded on a real `mlflow server`:
HTML and Markdown from MLflow, the leaderboard in order with links to the trials' runs, every plot
of the parent run, the page in headless Chromium; and the optimization history the parent run
logs as metrics (`trial_value`, `best_so_far`), once however often the search is replayed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import hpo
from hpo import Float
from tests import trainables
from tests.conftest import hpo_cli
from tests.tracking.conftest import ARTIFACTS, chromium, needs_chromium

pytestmark = pytest.mark.slow
NAME = "reported"


@pytest.fixture(scope="module")
def search(tmp_path_factory, ray_address, mlflow_server):
    """One search and its report, shared by this module's tests."""
    root = tmp_path_factory.mktemp("report")
    results = hpo.run(name=NAME, trainable=trainables.quadratic, space={"x": Float(0.0, 1.0), "steps": 4},
                      metric="loss", mode="min", num_samples=8, max_concurrent=2, address=ray_address,
                      strategy={"searcher": "tpe", "scheduler": {"name": "asha", "reduction_factor": 2},
                                "max_t": 4, "seed": 0},
                      storage_path=str(root / "hpo_results"), tracking={"tracking_uri": mlflow_server.uri})
    out = hpo_cli("report", NAME, "--tracking-uri", mlflow_server.uri, "--out", "reports", cwd=root).stdout
    return SimpleNamespace(root=root, results=results, out=out, uri=mlflow_server.uri,
                           html=root / "reports" / f"{NAME}-report.html", md=root / "reports" / f"{NAME}-report.md")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _table(md: str) -> list[dict[str, str]]:
    """The leaderboard rows of the Markdown report."""
    lines = [ln for ln in md.split("## Leaderboard", 1)[1].splitlines() if ln.startswith("|")]
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(cols, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def test_report_has_the_best_config_the_leaderboard_in_order_and_every_plot_of_the_parent_run(search):
    results, md, page = search.results, search.md.read_text(), search.html.read_text()
    assert results.parent_run_id in search.out
    assert results.count("completed") >= 1 and results.count("pruned") >= 1, [t.status for t in results.trials]
    for t in results.trials:
        assert t.trial_id in page and t.trial_id in md
    assert f"{results.best_config['x']}" in md  # the exact configuration, to copy

    rows = _table(md)
    statuses = [r["status"] for r in rows]
    done = statuses.count("completed")
    assert statuses[:done] == ["completed"] * done and set(statuses[done:]) <= {"pruned", "cut"}
    losses = [float(r["loss"]) for r in rows]
    assert losses[:done] == sorted(losses[:done]) and losses[done:] == sorted(losses[done:])
    assert rows[0]["trial"] == results.best_trial.trial_id
    by_id = {t.trial_id: t for t in results.trials}
    assert all(r["loss"] == f"{by_id[r['trial']].metrics['loss']:.4g}" for r in rows)  # 4 significant digits
    assert all(int(r["epochs"]) == by_id[r["trial"]].steps for r in rows)
    assert "ranked by their loss at the step they stopped (the epochs column)" in md
    # each row links to its trial's run page on the tracking server
    client = _client(search.uri)
    runs = {r.data.tags["hpo.trial_id"]: r.info.run_id for r in client.search_runs(
        [results.mlflow_experiment_id], f"tags.mlflow.parentRunId = '{results.parent_run_id}'")}
    for r in rows:
        url = f"{search.uri}/#/experiments/{results.mlflow_experiment_id}/runs/{runs[r['trial']]}"
        assert r["run"] == f"[{runs[r['trial']]}]({url})" and f"href='{url}'" in page

    pngs = sorted(a.path for a in client.list_artifacts(results.parent_run_id) if a.path.endswith(".png"))
    assert {"optimization_history.png", "learning_curves.png"} <= set(pngs)
    assert page.count("<img ") == len(pngs) and page.count("data:image/png;base64,") == len(pngs)
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert sorted(Path(p).name for p in linked) == pngs and linked[0].endswith("optimization_history.png")
    assert all((search.md.parent / p).is_file() for p in linked)  # the Markdown's plots are next to it
    attached = {a.path for a in client.list_artifacts(results.parent_run_id, "report")}
    assert {f"report/{NAME}-report.html", f"report/{NAME}-report.md", f"report/{NAME}-report-plots"} == attached
    bad = hpo_cli("report", "no-such-search", "--tracking-uri", search.uri, cwd=search.root, check=False)
    assert bad.returncode == 2 and "no-such-search" in bad.stderr


@needs_chromium
def test_report_renders_in_headless_chromium_with_every_image(search):
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium("1400,4000") as driver:
        driver.get(search.html.as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert driver.title.startswith(f"hpo search {NAME}")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == search.html.read_text().count("<img ") >= 2
        assert all(done and w > 0 and h > 0 for _, done, w, h in images), images
        rows = driver.find_elements("css selector", "table tr")
        assert len(rows) == len(search.results.trials) + 1
        shot = search.root / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "hpo_report.png")
        # the best trial's link opens its run in the MLflow UI
        best = search.results.best_trial.trial_id
        link = driver.find_element("css selector", "table tr:nth-child(2) a")
        driver.get(link.get_attribute("href"))
        assert driver.current_url.startswith(f"{search.uri}/#/experiments/")
        WebDriverWait(driver, 60).until(lambda d: best in d.page_source)


def test_parent_run_charts_trial_value_and_best_so_far_once_however_often_replayed(search):
    results, client = search.results, _client(search.uri)

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(results.parent_run_id, key))

    values, best = history("trial_value"), history("best_so_far")
    reported = [t for t in results.trials if "loss" in t.metrics]
    steps = results.step_histories()
    in_start_order = sorted(reported, key=lambda t: steps[t.trial_id][0].time)
    assert values == [(n, pytest.approx(t.metrics["loss"])) for n, t in enumerate(in_start_order, 1)]
    expected, so_far = [], None
    for n, t in enumerate(in_start_order, 1):
        if t.status == "completed":
            so_far = t.metrics["loss"] if so_far is None else min(so_far, t.metrics["loss"])
        if so_far is not None:
            expected.append((n, pytest.approx(so_far)))
    assert best == expected and best[-1][1] == pytest.approx(results.best_metric)
    assert client.get_run(results.parent_run_id).data.metrics["best_loss"] == pytest.approx(results.best_metric)

    hpo_cli("sync-mlflow", results.storage_path, "--tracking-uri", search.uri, cwd=search.root)
    assert history("trial_value") == values and history("best_so_far") == best  # nothing logged twice
