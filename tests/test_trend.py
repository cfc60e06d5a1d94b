"""``hpo nightly-report``: the trend across nights from their ``night.json`` files — rows, the
Markdown and HTML tables, the PNG plot, MLflow artifacts on each night's parent run, the command.
Nights are written directly (no Ray), as ``hpo nightly`` leaves them."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpo.cli import main
from hpo.errors import HpoConfigError
from hpo.rundir import NIGHT_FILE, night_run_dir, write_json
from hpo.trend import log_trend, nightly_report, trend_rows, write_trend
from tests.conftest import _env

NAME = "mlp"
OLD = {"data_fingerprint": "aaaa", "best_metric": 0.80}  # before champion promotion: no decision keys
NIGHTS: dict[str, dict[str, Any]] = {
    "2026-11-01": {**OLD, "lineage": "hpo-mlp-1", "new_lineage": True, "parent_run_id": "p1"},
    "2026-11-02": {"best_metric": 0.85, "decision": "promoted", "challenger_score": 0.85, "champion_score": 0.82,
                   "champion_before": "1", "champion_after": "2", "parent_run_id": "p2"},
    "2026-11-03": {"data_fingerprint": "bbbb", "best_metric": 0.83, "decision": "no_improvement",
                   "challenger_score": 0.83, "champion_score": 0.86, "champion_before": "2", "champion_after": "2",
                   "parent_run_id": "p3"},
    "2026-11-04": {"lineage": "hpo-mlp-2", "new_lineage": True, "previous_lineage": "hpo-mlp-1",
                   "best_metric": None, "decision": None, "trials_this_night": 0, "exit_code": 1,
                   "stop_reason": None, "error": "the night failed: boom", "parent_run_id": None},
}


def _write_nights(root: Path, name: str = NAME, nights: dict[str, dict[str, Any]] = NIGHTS) -> None:
    """night.json files as ``hpo nightly`` writes them: the record, then the summary once the night ended.
    Each night carries on the lineage, fingerprint and exit code of the one before unless it says otherwise."""
    carried: dict[str, Any] = {"lineage": "hpo-mlp-1", "data_fingerprint": "aaaa", "exit_code": 0}
    in_study = 0
    for date, changes in nights.items():
        in_study += changes.get("trials_this_night", 4)
        s = {"name": name, "night": date, "new_lineage": False, "previous_lineage": carried["lineage"],
             "trials_this_night": 4, "trials_in_study": in_study, "best_config": {"lr": 0.01},
             "metric": "val_accuracy", "mode": "max", "stop_reason": "time budget", "resumed": False,
             "skipped": False, "run_dir": str(night_run_dir(root, name, date)), "storage": "sqlite:///x/optuna.db",
             "mlflow_experiment_id": "1", "error": None, **carried, **changes}
        if "decision" in changes:  # a night.json since champion promotion (older ones lack these keys)
            s = {"compared_on": "test_accuracy", "registered_model": "mlp-model", "champion_before": None,
                 "champion_after": None, "challenger_score": None, "champion_score": None, **s}
        carried = {k: s[k] for k in carried}
        d = night_run_dir(root, name, date)
        d.mkdir(parents=True)
        record = {k: s[k] for k in ("night", "lineage", "new_lineage", "previous_lineage", "data_fingerprint")}
        write_json(d / NIGHT_FILE, {**record, "exit_code": s["exit_code"], "summary": s})


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _write_nights(root)
    _write_nights(root, "mlp-small", {"2026-11-09": {"data_fingerprint": "zzzz"}})  # another experiment
    (root / "mlp-2026-11-10").mkdir()  # named like a night, but hpo nightly never wrote it
    d = night_run_dir(root, NAME, "2026-11-05")  # a night that is running (or was killed): no summary yet
    d.mkdir()
    write_json(d / NIGHT_FILE, {"night": "2026-11-05", "lineage": "hpo-mlp-2", "new_lineage": False,
                                "previous_lineage": "hpo-mlp-2", "data_fingerprint": "bbbb"})
    return root


def test_rows_follow_the_nights_in_date_order_with_their_marks(runs: Path) -> None:
    rows = trend_rows(runs, NAME)
    assert [r["night"] for r in rows] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    by = {r["night"]: r for r in rows}
    assert by["2026-11-01"]["decision"] is None and by["2026-11-01"]["champion_score"] is None  # older file
    assert by["2026-11-02"]["decision"] == "promoted" and by["2026-11-02"]["champion_after"] == "2"
    assert (by["2026-11-02"]["challenger_score"], by["2026-11-02"]["champion_score"]) == (0.85, 0.82)
    assert [r["data_changed"] for r in rows] == [False, False, True, False, False]
    assert [r["new_lineage"] for r in rows] == [True, False, False, True, False]
    assert [r["lineage_changed"] for r in rows] == [False, False, False, True, False]
    assert by["2026-11-04"]["exit_code"] == 1 and by["2026-11-04"]["best_metric"] is None
    assert by["2026-11-05"]["ended"] is False and by["2026-11-05"]["exit_code"] is None
    assert all(r["metric"] == "val_accuracy" and r["mode"] == "max" for r in rows[:4])


def test_markdown_and_html_tables_and_the_png_plot(runs: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    t = write_trend(runs, NAME, tmp_path / "out")
    assert t["files"] == [tmp_path / "out" / f for f in ("trend.html", "trend.md", "trend.png")]
    assert t["parent_run_ids"] == ["p1", "p2", "p3"]
    md = t["markdown"].read_text()
    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]]
             for ln in md.splitlines() if re.match(r"\| 2026-", ln)}
    assert list(lines) == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    header = next(ln for ln in md.splitlines() if ln.startswith("| night"))
    cols = [c.strip() for c in header.split("|")[1:-1]]
    assert cols == ["night", "lineage", "new lineage", "trials night / study", "best val_accuracy (max)", "decision",
                    "challenger", "champion", "champion after", "data", "exit", "stop reason"]
    row = {d: dict(zip(cols, cells)) for d, cells in lines.items()}
    assert row["2026-11-02"] == {
        "night": "2026-11-02", "lineage": "hpo-mlp-1", "new lineage": "", "trials night / study": "4 / 8",
        "best val_accuracy (max)": "0.85", "decision": "promoted", "challenger": "0.85", "champion": "0.82",
        "champion after": "2", "data": "aaaa", "exit": "0", "stop reason": "time budget"}
    assert row["2026-11-03"]["data"] == "bbbb (data changed)" and row["2026-11-03"]["decision"] == "no_improvement"
    assert [d for d, r in row.items() if "data changed" in r["data"]] == ["2026-11-03"]
    assert [d for d, r in row.items() if r["new lineage"] == "new"] == ["2026-11-01", "2026-11-04"]
    assert row["2026-11-01"]["decision"] == "" and row["2026-11-01"]["champion"] == ""  # older night.json
    assert row["2026-11-04"]["exit"] == "1" and row["2026-11-04"]["best val_accuracy (max)"] == ""
    assert row["2026-11-05"]["stop reason"] == "not ended (running or killed)"
    assert "**promotions**: 1" in md and "**nights whose data changed**: 1" in md and "![trend](trend.png)" in md
    assert "mlp-small" not in md and "zzzz" not in md

    page = t["html"].read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page and "<th>champion after</th>" in page
    assert "<td>bbbb (data changed)</td>" in page and "<td>promoted</td>" in page
    embedded = re.search(r"src='data:image/png;base64,([^']+)'", page)
    assert embedded and base64.b64decode(embedded.group(1)) == t["png"].read_bytes()  # self-contained

    png = t["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(t["png"])
    assert image.shape[:2] == (450, 900) and image.std() > 0.01  # 9 x 4.5 inches at 100 dpi, not blank


def test_the_plot_carries_promotions_champion_scores_and_vertical_marks(runs: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    figures: list[Any] = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    write_trend(runs, NAME, tmp_path / "out")
    axes = figures[0].axes
    labels = {ln.get_label(): ln for ax in axes for ln in ax.get_lines()}
    assert {"best val_accuracy of the night", "promoted", "champion score (test_accuracy)", "data changed",
            "new lineage"} <= set(labels)
    assert list(labels["promoted"].get_xdata()) == [1]  # 2026-11-02
    assert list(labels["data changed"].get_xdata()) == [2, 2] and list(labels["new lineage"].get_xdata()) == [3, 3]
    assert len(axes) == 2  # the champion is scored on test_accuracy, not val_accuracy: its own y axis
    monkeypatch.undo()
    plt.close(figures[0])


def test_a_dry_run_promotion_is_shown_as_such_and_not_counted(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _write_nights(root, nights={"2026-11-01": {}, "2026-11-02": {"decision": "promoted", "dry_run": True,
                                                                 "challenger_version": "3", "champion_after": "2"}})
    t = write_trend(root, NAME, tmp_path / "out")
    assert t["rows"][1]["dry_run"] is True and t["rows"][1]["challenger_version"] == "3"
    md = t["markdown"].read_text()
    assert "| promoted (dry run) |" in md and "**promotions**: 0" in md


def test_a_name_without_nights_is_an_error_naming_it_and_the_storage(tmp_path: Path, runs: Path) -> None:
    with pytest.raises(HpoConfigError, match=r"name: must name an experiment with nights.*" + re.escape(str(runs))
                       + r".*'nope'"):
        write_trend(runs, "nope", tmp_path / "out")
    with pytest.raises(HpoConfigError, match="'ml'"):
        trend_rows(runs, "ml")  # a prefix of a name is not that name
    assert not (tmp_path / "out").exists()


def test_logs_the_files_on_each_nights_parent_run_and_again_without_duplicates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment(NAME, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_tracking_uri(uri)
    try:
        parents = []
        for date in list(NIGHTS)[:3]:
            with mlflow.start_run(experiment_id=exp_id, run_name=f"{NAME}-{date}") as run:
                parents.append(run.info.run_id)
    finally:
        mlflow.set_tracking_uri(None)
    nights = {date: {**changes, "parent_run_id": parents[i] if i < 3 else None}
              for i, (date, changes) in enumerate(NIGHTS.items())}
    nights["2026-11-02"]["parent_run_id"] = parents[0]  # a resumed night keeps its parent: logged once
    root = tmp_path / "runs"
    _write_nights(root, nights=nights)
    expected = {f"trend/{f}" for f in ("trend.html", "trend.md", "trend.png")}
    for _ in range(2):
        t = nightly_report(NAME, str(root), tracking_uri=uri)
        assert t["logged"] == {parents[0]: None, parents[2]: None}
        for run_id in (parents[0], parents[2]):
            listed = client.list_artifacts(run_id, "trend")
            assert {a.path for a in listed} == expected and len(listed) == 3
            assert client.list_artifacts(run_id) and {a.path for a in client.list_artifacts(run_id)} == {"trend"}
        assert client.list_artifacts(parents[1]) == []
    html_copy = Path(client.download_artifacts(parents[2], "trend/trend.html", str(tmp_path / "dl")))
    assert html_copy.read_text() == t["html"].read_text()
    # a run this store does not have is reported, not raised (the report must never fail a night) ...
    done = log_trend(uri, t["files"], [None, "0" * 32, parents[0]])
    assert done[parents[0]] is None and "0" * 32 in done and done["0" * 32]
    # ... and the command exits 1 (its files written all the same)
    _write_nights(root, nights={"2026-11-06": {"parent_run_id": "0" * 32}})
    assert main(["nightly-report", NAME, "--storage-path", str(root), "--tracking-uri", uri]) == 1
    out, err = capsys.readouterr()
    assert "not logged on 1 of 3 parent runs" in err and "5 nights of mlp" in out


def test_the_command_with_an_experiment_file_and_with_a_plain_name(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _write_nights(root)
    (tmp_path / "exp.yaml").write_text(f"name: {NAME}\ntrainable: tests.trainables:quadratic\nmetric: loss\n"
                                       f"mode: min\nspace: {{x: {{type: float, low: 0, high: 1}}}}\n"
                                       f"storage_path: {root}\n")

    def hpo(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hpo.cli", "nightly-report", *args], cwd=tmp_path, env=_env(),
                              capture_output=True, text=True, timeout=120)

    ok = hpo("exp.yaml", "--no-mlflow", "--json")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout.strip().splitlines()[-1])
    assert out["name"] == NAME and len(out["rows"]) == 4 and out["logged"] == {} and out["tracking_uri"] is None
    assert Path(out["png"]) == root / f"{NAME}-trend" / "trend.png" and Path(out["png"]).stat().st_size > 1000
    assert [r["decision"] for r in out["rows"]] == [None, "promoted", "no_improvement", None]

    missing = hpo("other", "--storage-path", str(root), "--no-mlflow", "--json")
    assert missing.returncode == 2 and "'other'" in missing.stderr and str(root) in missing.stderr
    assert missing.stdout == ""
