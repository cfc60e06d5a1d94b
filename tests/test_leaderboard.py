"""The leaderboard (one module for the parent run's leaderboard files, `hpo report` and the table
`hpo run` prints), the optimization history the parent run logs as metrics, and the report's plots
— with made-up trials, no Ray and no MLflow store."""

from __future__ import annotations

import csv
import doctest
import io
import math
from types import SimpleNamespace
from typing import Any

import pytest

import hpo.leaderboard
import hpo.pages
from hpo.leaderboard import Leaderboard, run_url, sig, state_of, value_history
from hpo.pages import Link
from hpo.results import Results, Step, TrialRecord

RAW = 0.9666666388511658


def _trial(tid: str, status: str, value: float | None, steps: int, **config: Any) -> TrialRecord:
    metrics = {} if value is None else {"val_accuracy": value, "val_loss": 1.0 - (value if math.isfinite(value) else 0)}
    return TrialRecord(tid, {"lr": 0.012345678, "hidden": 64, "seed": 0, **config}, metrics, status, steps=steps)


def _results(trials: list[TrialRecord], mode: str = "max", histories: dict | None = None) -> Results:
    return Results("digits", ["val_accuracy"], [mode], trials, "/nonexistent", histories=histories)


MIXED = [
    _trial("p-high", "pruned", 0.99, 2, lr=0.1),
    _trial("c-good", "completed", RAW, 20, lr=0.02),
    _trial("err", "errored", 0.95, 3, lr=0.3),
    _trial("c-ok", "completed", 0.9, 20, lr=0.03),
    _trial("div", "diverged", float("nan"), 4, lr=0.5),
    _trial("cut-mid", "cut", 0.97, 5, lr=0.04),
    _trial("p-low", "pruned", 2.375538334127419e-06, 2, lr=0.05),
    _trial("c-none", "completed", None, 20, lr=0.06),
]


def test_completed_trials_come_first_best_on_top_then_stopped_ones_by_value_then_failed_ones():
    board = Leaderboard.from_results(_results(MIXED))
    assert [e.trial for e in board.entries] == [
        "c-good", "c-ok",  # completed, best first, even though pruned p-high reached 0.99 at epoch 2
        "p-high", "cut-mid", "p-low",  # pruned and cut, by their value where they stopped
        "c-none",  # no value
        "err", "div",  # errored and diverged last, whatever value they had (0.95 here)
    ]
    low_first = Leaderboard.from_results(_results(MIXED, mode="min"))
    assert [e.trial for e in low_first.entries][:5] == ["c-ok", "c-good", "p-low", "cut-mid", "p-high"]


def test_a_stopped_trial_that_went_further_ranks_first_among_equal_values():
    trials = [_trial("early", "pruned", 0.5, 1), _trial("later", "cut", 0.5, 3)]
    assert [e.trial for e in Leaderboard.from_results(_results(trials)).entries] == ["later", "early"]


def test_rows_show_four_significant_digits_status_epochs_and_only_the_hyperparameters_that_vary():
    rows = Leaderboard.from_results(_results(MIXED)).rows()
    first = rows[0]
    assert first == {"#": 1, "trial": "c-good", "status": "completed", "val_accuracy": "0.9667", "epochs": 20,
                     "lr": "0.02"}  # hidden and seed are the same in every trial: not columns
    assert next(r for r in rows if r["trial"] == "p-low")["val_accuracy"] == "2.376e-06"
    assert next(r for r in rows if r["trial"] == "div")["val_accuracy"] == "nan"
    assert next(r for r in rows if r["trial"] == "c-none")["val_accuracy"] == ""


def test_sig_rounds_floats_and_float_strings_and_leaves_everything_else():
    assert [sig(v) for v in (RAW, 123456.789, 1e-05, 3, True, None, "0.00012345678", "1e-3", "relu", "elu",
                             "leaky_relu", "64")] == [
        "0.9667", "1.235e+05", "1e-05", "3", "True", "", "0.0001235", "0.001", "relu", "elu", "leaky_relu", "64"]


def test_the_note_under_the_table_says_how_stopped_trials_are_ranked_and_what_is_fixed():
    board = Leaderboard.from_results(_results(MIXED))
    note = board.note()
    assert "pruned and cut trials, ranked by their val_accuracy at the step they stopped (the epochs column)" in note
    assert "errored and diverged trials last" in note and "4 significant digits" in note
    assert "The same in every trial: hidden=64, seed=0." in note
    md = board.markdown()
    assert md[-1] == note and md[0].startswith("| # | trial | status | val_accuracy | epochs | lr |")
    assert note.replace("(", "") in board.html().replace("(", "")


def test_rows_link_to_their_mlflow_run_on_an_http_server_without_its_credentials():
    url = run_url("https://alice:s3cret@mlflow.example.org/prefix/", "7", "run1")
    assert url == "https://mlflow.example.org/prefix/#/experiments/7/runs/run1"
    assert run_url("http://127.0.0.1:5000", "0", "r") == "http://127.0.0.1:5000/#/experiments/0/runs/r"
    assert run_url("sqlite:///mlflow.db", "7", "run1") is None
    assert run_url("file:///tmp/mlruns", "7", "run1") is None and run_url("http://h", None, "r") is None

    runs = {t.trial_id: hpo.leaderboard.run_link("https://alice:s3cret@mlflow.example.org", "7", f"run-{t.trial_id}")
            for t in MIXED}
    board = Leaderboard.from_results(_results(MIXED), runs)
    html, md = board.html(), "\n".join(board.markdown())
    assert "s3cret" not in html + md and "alice" not in html + md
    assert "<a href='https://mlflow.example.org/#/experiments/7/runs/run-c-good'>run-c-good</a>" in html
    assert "[run-c-good](https://mlflow.example.org/#/experiments/7/runs/run-c-good)" in md

    local = {t.trial_id: hpo.leaderboard.run_link("sqlite:///mlflow.db", "7", f"run-{t.trial_id}") for t in MIXED}
    board = Leaderboard.from_results(_results(MIXED), local)
    assert board.rows()[0]["run"] == Link("run-c-good", None)
    assert "<a " not in board.html() and "run-c-good" in board.html() and "](" not in "\n".join(board.markdown())
    assert "run" not in Leaderboard.from_results(_results(MIXED)).rows()[0]  # no MLflow: no run column


def test_the_csv_keeps_full_precision_every_metric_and_parameter_in_leaderboard_order(tmp_path):
    runs = {"c-good": Link("abc", "http://h/#/experiments/1/runs/abc")}
    path = Leaderboard.from_results(_results(MIXED), runs).write_csv(tmp_path / "leaderboard.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["trial_id"] for r in rows][:3] == ["c-good", "c-ok", "p-high"]
    assert rows[0]["val_accuracy"] == repr(RAW) and rows[0]["config/lr"] == "0.02" and rows[0]["config/seed"] == "0"
    assert rows[0]["status"] == "completed" and rows[0]["steps"] == "20" and rows[0]["rank"] == "1"
    assert float(rows[0]["val_loss"]) == pytest.approx(1 - RAW)
    assert rows[0]["run_id"] == "abc" and rows[0]["run_url"] == "http://h/#/experiments/1/runs/abc"
    assert rows[1]["run_id"] == ""


def test_the_terminal_table_shows_the_top_five_completed_trials():
    trials = [_trial(f"c{i}", "completed", 0.8 + i / 100 + 1e-9, 20, lr=i / 1000, hidden=32 * (i + 1))
              for i in range(7)] + [_trial("p", "pruned", 0.999, 2, lr=0.5)]
    text = Leaderboard.from_results(_results(trials)).text(top=5)
    lines = text.splitlines()
    assert lines[0] == "top 5 of 7 completed trials by val_accuracy (max):"
    assert lines[1].split() == ["#", "val_accuracy", "epochs", "lr", "hidden", "trial"]  # in the configs' order
    assert [ln.split()[-1] for ln in lines[2:]] == ["c6", "c5", "c4", "c3", "c2"]  # the pruned 0.999 is not shown
    assert lines[2].split()[:5] == ["1", "0.86", "20", "0.006", "224"]
    assert Leaderboard.from_results(_results([_trial("p", "pruned", 0.9, 2)])).text() == "no completed trial"


def test_the_terminal_table_shows_at_most_six_hyperparameters():
    trials = [_trial(f"c{i}", "completed", i / 10, 5, **{f"p{k}": i + k for k in range(8)}) for i in range(3)]
    lines = Leaderboard.from_results(_results(trials)).text().splitlines()
    assert lines[1].split() == ["#", "val_accuracy", "epochs", "p0", "p1", "p2", "p3", "p4", "p5", "trial"]
    assert lines[-1] == " (+2 more hyperparameters in the leaderboard)"  # p6 and p7


def test_a_leaderboard_from_mlflow_child_runs_reads_state_epochs_and_latest_values():
    def run(tid: str, status: str, value: float, last: str, lr: str) -> Any:
        return SimpleNamespace(info=SimpleNamespace(run_id=f"r-{tid}", run_name=tid),
                               data=SimpleNamespace(tags={"hpo.trial_id": tid, "hpo.status": status,
                                                          "hpo.last_step": last},
                                                    metrics={"loss": value, "other": 1.0}, params={"lr": lr}))

    runs = [run("a", "pruned at epoch 2", 0.1, "2", "0.0123456789"), run("b", "completed", 0.3, "9", "0.5"),
            run("c", "errored: ValueError('x')", 0.05, "1", "0.7"), run("d", "cut at epoch 3 (time budget)", 0.2, "3",
                                                                       "0.9")]
    board = Leaderboard.from_runs(runs, ["loss"], ["min"], "http://mlflow:5000", "4")
    assert [(e.trial, e.status, e.epochs) for e in board.entries] == [
        ("b", "completed", 9), ("a", "pruned", 2), ("d", "cut", 3), ("c", "errored", 1)]
    assert board.rows()[1]["lr"] == "0.01235"
    assert board.rows()[0]["run"] == Link("r-b", "http://mlflow:5000/#/experiments/4/runs/r-b")
    assert [state_of(s) for s in ("running", "diverged", "")] == ["running", "diverged", "?"]


def test_the_optimization_history_numbers_trials_in_start_order_and_keeps_the_best_completed_so_far():
    trials = [_trial("a", "completed", 0.7, 3), _trial("b", "pruned", 0.9, 1), _trial("c", "completed", 0.8, 3),
              _trial("d", "errored", 0.6, 1), _trial("e", "completed", 0.75, 3)]

    def steps(start: float, values: list[float]) -> list[Step]:
        return [Step(i, {"val_accuracy": v}, start + i) for i, v in enumerate(values, 1)]

    # started in the order d, c, b, e, a (trial ids do not say when a trial started)
    histories = {"a": steps(50, [0.5, 0.6, 0.7]), "b": steps(30, [0.9]), "c": steps(20, [0.7, 0.75, 0.8]),
                 "d": steps(10, [0.6]), "e": steps(40, [0.7, 0.7, 0.75])}
    points = value_history(_results(trials, histories=histories))
    assert [(p.number, p.trial, p.value, p.best) for p in points] == [
        (1, "d", 0.6, None), (2, "c", 0.8, 0.8), (3, "b", 0.9, 0.8), (4, "e", 0.75, 0.8), (5, "a", 0.7, 0.8)]
    assert [p.time for p in points] == [11, 23, 31, 43, 53]  # when each reported its last value
    low = value_history(Results("s", ["val_accuracy"], ["min"], trials, "/none", histories=histories))
    assert [p.best for p in low] == [None, 0.8, 0.8, 0.75, 0.7]


class _FakeClient:
    """What ``MlflowTracker._log_history`` asks of an MLflow client: metric histories and batches."""

    def __init__(self) -> None:
        self.logged: list[Any] = []

    def get_metric_history(self, run_id: str, key: str) -> list[Any]:
        return [m for m in self.logged if m.key == key]

    def log_batch(self, run_id: str, params: list, metrics: list, tags: list) -> None:
        self.logged += metrics


def test_the_parent_run_logs_trial_value_and_best_so_far_once_whatever_replays_them(tmp_path):
    from hpo.strategies import TrialOutcomes
    from hpo.tracking.mlflow import MlflowTracker

    trials = [_trial("a", "completed", 0.7, 1), _trial("b", "pruned", 0.9, 1)]
    histories = {"a": [Step(1, {"val_accuracy": 0.7}, 100.0)], "b": [Step(1, {"val_accuracy": 0.9}, 200.5)]}
    tracker = MlflowTracker("sqlite:///unused.db", "e", "r", str(tmp_path / "state.json"), TrialOutcomes())
    tracker.client = client = _FakeClient()
    tracker._log_history("parent", _results(trials, histories=histories))
    assert sorted((m.key, m.step, m.value, m.timestamp) for m in client.logged) == [
        ("best_so_far", 1, 0.7, 100000), ("best_so_far", 2, 0.7, 200500),
        ("trial_value", 1, 0.7, 100000), ("trial_value", 2, 0.9, 200500)]
    tracker._log_history("parent", _results(trials, histories=histories))  # hpo sync-mlflow, a resume's end
    assert len(client.logged) == 4
    trials.append(_trial("c", "completed", 0.8, 1))  # a resumed search ran one more trial
    histories["c"] = [Step(1, {"val_accuracy": 0.8}, 300.0)]
    tracker._log_history("parent", _results(trials, histories=histories))
    assert sorted((m.key, m.step, m.value) for m in client.logged[4:]) == [("best_so_far", 3, 0.8),
                                                                          ("trial_value", 3, 0.8)]


def test_the_report_shows_every_png_of_the_parent_run_history_first_then_by_name():
    from hpo.reports import plot_names

    paths = ["leaderboard.html", "zz_custom.png", "param_importances.png", "learning_curves.png",
             "optimization_history.png", "report", "best_model", "a_first.PNG", "summary.json"]
    assert plot_names(paths) == ["optimization_history.png", "learning_curves.png", "param_importances.png",
                                 "a_first.PNG", "zz_custom.png"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_hpo_run_ends_with_the_top_trials_table_and_on_a_terminal_no_json_config_line(monkeypatch, tty):
    from hpo import cli

    out = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    cli._print_summary(_results(MIXED), as_json=False)
    text = out.getvalue()
    assert "top 2 of 2 completed trials by val_accuracy (max):" in text
    assert ("best val_accuracy: 0.9667\n" in text) is tty and ("best config: {" in text) is not tty
    assert f"best val_accuracy: {RAW}" in text or tty


def test_json_output_is_unchanged_by_the_table(monkeypatch):
    import json

    from hpo import cli

    out = _Terminal()
    monkeypatch.setattr("sys.stdout", out)
    cli._print_summary(_results(MIXED), as_json=True)
    assert out.getvalue().count("\n") == 1 and json.loads(out.getvalue())["best_metric"] == RAW


@pytest.mark.parametrize("module", [hpo.leaderboard, hpo.pages])
def test_the_docstring_examples_run(module):
    assert doctest.testmod(module).failed == 0
