"""The run directory's Optuna study (``optuna.journal``) and ``hpo dashboard``: built from made-up
records and result files (fast), and opened by optuna-dashboard after a real search (slow)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

import hpo
from hpo.config import Experiment
from hpo.results import TrialRecord
from hpo.rundir import OUTCOMES_FILE, TRIALS_FILE, write_json
from hpo.space import Float, Grid
from hpo.study_file import STUDY_FILE, export_study, write_study
from hpo.testing.processes import free_port
from hpo.wire import HISTORY_KEY, NODE_KEY, PACK_KEY, STARTED_KEY, STEP_KEY, SUB_KEY, TIME_KEY
from tests import trainables
from tests.conftest import _env, hpo_cli

T0 = 1_790_000_000.0  # the made-up search's first report, seconds since the epoch

GRID = {"x": Grid([0.1, 0.3]), "opt": Grid(["sgd", "adam"]), "mom": Grid([0.0, 0.9], when={"opt": "sgd"}),
        "hidden": Grid([[64], [64, 64]]), "seed": 0}


def _exp(**kw: Any) -> Experiment:
    fields = dict(name="grid-search", trainable="tests.trainables:quadratic", metric="loss", mode="min", space=GRID,
                  strategy="grid", tracking={"enabled": False})
    return Experiment.from_dict({**fields, **kw})


def _trial_dir(run_dir: Path, name: str, config: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    d = run_dir / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(config))
    (d / "result.json").write_text("".join(json.dumps(ln) + "\n" for ln in lines))


def _steps(tid: str, losses: list[float], t: float, node: str = "node-a", per_line: int = 1) -> list[dict[str, Any]]:
    """Result lines as the built-in task writes them: ``per_line`` epochs per Ray result, the
    earlier ones under ``hpo_history``."""
    entries = [{"loss": v, STEP_KEY: i + 1, TIME_KEY: t + i + 1, STARTED_KEY: t} for i, v in enumerate(losses)]
    lines = []
    for k in range(0, len(entries), per_line):
        chunk = entries[k:k + per_line]
        lines.append({**chunk[-1], HISTORY_KEY: chunk[:-1], "trial_id": tid, "training_iteration": len(lines) + 1,
                      NODE_KEY: node, "timestamp": int(chunk[-1][TIME_KEY])})
    return lines


def _fake_grid_search(run_dir: Path) -> list[TrialRecord]:
    """A grid search's run directory: result files and the records ``trials.json`` would hold.

    One trial of each terminal state, one cut before it started, and a packed Ray trial that
    carried two trials (one completed, one raised)."""
    c = [{"x": 0.1, "opt": "sgd", "mom": 0.9, "hidden": [64], "seed": 0},
         {"x": 0.3, "opt": "adam", "hidden": [64, 64], "seed": 0},
         {"x": 0.1, "opt": "adam", "hidden": [64], "seed": 0},
         {"x": 0.3, "opt": "sgd", "mom": 0.0, "hidden": [64], "seed": 0},
         {"x": 0.3, "opt": "sgd", "mom": 0.9, "hidden": [64, 64], "seed": 0},
         {"x": 0.1, "opt": "sgd", "mom": 0.0, "hidden": [64, 64], "seed": 0},
         {"x": 0.3, "opt": "sgd", "mom": 0.9, "hidden": [64], "seed": 0},
         {"x": 0.1, "opt": "sgd", "mom": 0.0, "hidden": [64], "seed": 0}]
    _trial_dir(run_dir, "t0", c[0], _steps("g_00000", [1.0, 0.8, 0.6, 0.5], T0, per_line=2))
    _trial_dir(run_dir, "t1", c[1], _steps("g_00001", [1.2, 1.1], T0 + 1))
    _trial_dir(run_dir, "t2", c[2], _steps("g_00002", [0.9], T0 + 2, node="node-b"))
    _trial_dir(run_dir, "t3", c[3], _steps("g_00003", [2.0], T0 + 5.2))  # started after g_00006.0
    _trial_dir(run_dir, "t4", c[4], _steps("g_00004", [3.0, float("nan")], T0 + 4))
    # g_00005: cut before it started (pending when the time budget ran out): no result file
    sub = [{"loss": 0.7, STEP_KEY: 1, TIME_KEY: T0 + 6, STARTED_KEY: T0 + 5, SUB_KEY: "g_00006.0"},
           {"loss": 0.4, STEP_KEY: 2, TIME_KEY: T0 + 7, STARTED_KEY: T0 + 5, SUB_KEY: "g_00006.0", "hpo_sub_end": True},
           {"loss": 0.9, STEP_KEY: 1, TIME_KEY: T0 + 8, STARTED_KEY: T0 + 7.5, SUB_KEY: "g_00006.1"}]
    _trial_dir(run_dir, "t6", {PACK_KEY: [["g_00006.0", c[6]], ["g_00006.1", c[7]]]},
               [{**sub[-1], HISTORY_KEY: sub[:-1], "trial_id": "g_00006", "training_iteration": 1, NODE_KEY: "node-b"}])
    return [
        TrialRecord("g_00000", c[0], {"loss": 0.5}, "completed", steps=4, node="node-a"),
        TrialRecord("g_00001", c[1], {"loss": 1.1}, "pruned", steps=2, pruned_at=2, node="node-a"),
        TrialRecord("g_00002", c[2], {"loss": 0.9}, "cut", steps=1, node="node-b", cut_at=1, cut_reason="time budget"),
        TrialRecord("g_00003", c[3], {"loss": 2.0}, "errored", steps=1, error="ValueError: boom", node="node-a"),
        TrialRecord("g_00004", c[4], {"loss": float("nan")}, "diverged", steps=2, node="node-a"),
        TrialRecord("g_00005", c[5], {}, "cut", steps=0, cut_at=0, cut_reason="time budget"),
        TrialRecord("g_00006.0", c[6], {"loss": 0.4}, "completed", steps=2, node="node-b"),
        TrialRecord("g_00006.1", c[7], {"loss": 0.9}, "errored", steps=1, error="RuntimeError: bad", node="node-b"),
    ]


def _load(run_dir: Path, name: str = "grid-search") -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE)))
    return optuna.load_study(study_name=name, storage=storage)


def _by_id(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    return {t.user_attrs["hpo.trial_id"]: t for t in study.trials}


def test_a_grid_search_becomes_a_study_with_every_trial_in_its_state(tmp_path):
    records = _fake_grid_search(tmp_path)
    path = write_study(tmp_path, _exp(), records)
    assert path == tmp_path / STUDY_FILE
    study = _load(tmp_path)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] and study.metric_names == ["loss"]
    assert study.user_attrs["hpo.searcher"] == "grid"
    trials = _by_id(study)
    # numbered as they started; the one that never reported last
    assert [t.user_attrs["hpo.trial_id"] for t in study.trials] == [
        "g_00000", "g_00001", "g_00002", "g_00004", "g_00006.0", "g_00003", "g_00006.1", "g_00005"]
    states = {tid: t.state for tid, t in trials.items()}
    assert states == {"g_00000": TrialState.COMPLETE, "g_00001": TrialState.PRUNED, "g_00002": TrialState.PRUNED,
                      "g_00003": TrialState.FAIL, "g_00004": TrialState.FAIL, "g_00005": TrialState.PRUNED,
                      "g_00006.0": TrialState.COMPLETE, "g_00006.1": TrialState.FAIL}
    assert trials["g_00000"].value == 0.5 and trials["g_00006.0"].value == 0.4
    assert study.best_trial.user_attrs["hpo.trial_id"] == "g_00006.0"  # completed trials only
    # a pruned or cut trial's value is its last intermediate value, as Optuna's tell(PRUNED) keeps it
    assert {tid: t.values for tid, t in trials.items() if t.state != TrialState.COMPLETE} == {
        "g_00001": [1.1], "g_00002": [0.9], "g_00005": None, "g_00003": None, "g_00004": None, "g_00006.1": None}

    # every epoch of the first metric (two epochs per Ray result for g_00000; NaN left out)
    inter = {tid: t.intermediate_values for tid, t in trials.items()}
    assert inter["g_00000"] == {1: 1.0, 2: 0.8, 3: 0.6, 4: 0.5}
    assert inter["g_00001"] == {1: 1.2, 2: 1.1} and inter["g_00002"] == {1: 0.9}
    assert inter["g_00004"] == {1: 3.0} and inter["g_00005"] == {}
    assert inter["g_00006.0"] == {1: 0.7, 2: 0.4} and inter["g_00006.1"] == {1: 0.9}  # the pack split

    # parameters with the space's distributions; an inactive conditional absent; a list choice by index
    t0, t1 = trials["g_00000"], trials["g_00001"]
    assert t0.params == {"x": 0.1, "opt": "sgd", "mom": 0.9, "hidden": 0}
    assert t0.distributions["x"] == CategoricalDistribution([0.1, 0.3])
    assert t0.distributions["hidden"] == CategoricalDistribution([0, 1])
    assert t1.params == {"x": 0.3, "opt": "adam", "hidden": 1}
    assert json.loads(t1.user_attrs["hpo.config"]) == records[1].config  # fixed values and the real choice

    status = {tid: t.user_attrs["hpo.status"] for tid, t in trials.items()}
    assert status["g_00001"] == "pruned at epoch 2" and status["g_00002"] == "cut at epoch 1 (time budget)"
    assert status["g_00003"] == "errored: ValueError: boom" and status["g_00004"] == "diverged"
    assert status["g_00005"] == "cut at epoch 0 (time budget)" and status["g_00000"] == "completed"
    assert trials["g_00002"].user_attrs["hpo.node"] == "node-b" and "hpo.node" not in trials["g_00005"].user_attrs
    assert trials["g_00000"].user_attrs["hpo.steps"] == 4

    # times from the trials' own reports
    assert trials["g_00000"].datetime_start.timestamp() == pytest.approx(T0)
    assert trials["g_00000"].datetime_complete.timestamp() == pytest.approx(T0 + 4)
    assert trials["g_00006.1"].datetime_start.timestamp() == pytest.approx(T0 + 7.5)
    # cut before it started: shown ending with the search's last report
    assert trials["g_00005"].datetime_complete.timestamp() == pytest.approx(T0 + 8)


def test_the_study_is_rewritten_whole_never_appended_to(tmp_path):
    records = _fake_grid_search(tmp_path)
    write_study(tmp_path, _exp(), records)
    write_study(tmp_path, _exp(), records)  # a resumed search that added nothing
    assert len(_load(tmp_path).trials) == len(records)
    more = [*records, TrialRecord("g_00007", {"x": 0.1, "opt": "adam", "hidden": [64, 64], "seed": 0},
                                  {"loss": 0.3}, "completed", steps=4)]
    write_study(tmp_path, _exp(), more)  # a resumed search that ran one more trial
    study = _load(tmp_path)
    assert len(study.trials) == len(more) and study.best_value == 0.3
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [STUDY_FILE]  # no temporary file left


def test_a_failed_rename_leaves_the_earlier_study_whole(tmp_path, monkeypatch):
    records = _fake_grid_search(tmp_path)
    write_study(tmp_path, _exp(), records[:2])
    before = (tmp_path / STUDY_FILE).read_bytes()

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_study(tmp_path, _exp(), records)
    assert (tmp_path / STUDY_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [STUDY_FILE]


def test_export_warns_instead_of_raising(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hpo"):
        assert export_study(tmp_path / "gone", _exp(), []) is None
    assert "could not write the Optuna study" in caplog.text


def test_records_default_to_trials_json_then_to_a_killed_search_s_outcomes(tmp_path):
    records = _fake_grid_search(tmp_path)
    write_json(tmp_path / TRIALS_FILE, {"trials": [asdict(r) for r in records], "stop_reason": "time budget"})
    write_study(tmp_path, _exp())
    assert {t.user_attrs["hpo.trial_id"]: t.state.name for t in _load(tmp_path).trials} == \
        {r.trial_id: {"completed": "COMPLETE", "errored": "FAIL", "diverged": "FAIL"}.get(r.status, "PRUNED")
         for r in records}

    killed = tmp_path / "killed"  # kill -9: no trials.json, only what outcomes.json had saved
    records = _fake_grid_search(killed)
    write_json(killed / OUTCOMES_FILE, {"outcomes": {"pruned": {"g_00001": 2}, "rungs": {},
                                                     "cut": {"g_00002": [1, "SIGTERM"]}},
                                        "ended": {"g_00000": "completed", "g_00001": "pruned", "g_00002": "cut",
                                                  "g_00003": "errored"}})
    write_study(killed, _exp())
    trials = _by_id(_load(killed))
    assert {tid: t.state.name for tid, t in trials.items()} == {
        "g_00000": "COMPLETE", "g_00001": "PRUNED", "g_00002": "PRUNED", "g_00003": "FAIL",
        "g_00004": "RUNNING", "g_00006.0": "RUNNING", "g_00006.1": "RUNNING"}  # unended: hpo resume goes on
    assert trials["g_00000"].value == 0.5 and trials["g_00001"].intermediate_values == {1: 1.2, 2: 1.1}
    assert trials["g_00002"].user_attrs["hpo.status"] == "cut at epoch 1 (SIGTERM)"
    assert trials["g_00004"].user_attrs["hpo.status"] == "running"


def test_several_metrics_give_a_multi_objective_study(tmp_path):
    exp = _exp(metric=["loss", "score"], mode=["min", "max"], space={"x": Float(0.0, 1.0)}, strategy="random")
    _trial_dir(tmp_path, "a", {"x": 0.2}, [{"loss": 0.1, "score": 0.4, "trial_id": "r_00000", "training_iteration": 1,
                                           "timestamp": T0}])
    records = [TrialRecord("r_00000", {"x": 0.2}, {"loss": 0.1, "score": 0.4}, "completed", steps=1),
               TrialRecord("r_00001", {"x": 0.9}, {"loss": 0.3}, "completed", steps=1)]  # never reported score
    write_study(tmp_path, exp, records)
    study = _load(tmp_path)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    assert study.metric_names == ["loss", "score"]
    trials = _by_id(study)
    assert trials["r_00000"].values == [0.1, 0.4] and trials["r_00000"].intermediate_values == {}
    assert trials["r_00000"].distributions == {"x": FloatDistribution(0.0, 1.0)}
    assert trials["r_00001"].state == TrialState.FAIL  # as the Optuna searcher tells a missing value


def test_a_value_outside_the_space_is_kept_in_the_config_only(tmp_path):
    exp = _exp(space={"lr": Float(1e-3, 1e-1, log=True), "wd": Float(0.0, 0.1), "opt": Grid(["sgd", "adam"]),
                      "mom": Float(0.0, 0.9, when={"opt": "sgd"})}, strategy="random")
    # PBT mutated lr past the space's upper bound; Ray filled the inactive momentum with None
    config = {"lr": 0.25, "wd": 0.05, "opt": "adam", "mom": None}
    write_study(tmp_path, exp, [TrialRecord("p_00000", config, {"loss": 0.2}, "completed", steps=3)])
    (trial,) = _load(tmp_path).trials
    assert trial.params == {"wd": 0.05, "opt": "adam"} and trial.user_attrs["hpo.outside_space"] == ["lr"]
    assert json.loads(trial.user_attrs["hpo.config"]) == config


# -- hpo dashboard ------------------------------------------------------------------------------


def _get_json(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a local test server
        return resp.status, json.loads(resp.read())


def _serve(run_dir: Path, cwd: Path) -> tuple[subprocess.Popen, int]:
    """``hpo dashboard RUN_DIR --port P`` in the background, once it listens."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "dashboard", str(run_dir), "--port", str(port)],
                            cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""  # printed once it listens
    if f"http://127.0.0.1:{port}/dashboard/studies/" not in line:
        proc.kill()
        raise AssertionError(f"no URL from hpo dashboard: {line!r}\n{proc.communicate()[1][-3000:]}")
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the command ends quietly
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _study_over_http(port: int, name: str) -> dict[str, Any]:
    status, studies = _get_json(f"http://127.0.0.1:{port}/api/studies")
    assert status == 200
    (summary,) = [s for s in studies["study_summaries"] if s["study_name"] == name]
    status, detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
    assert status == 200
    return detail


def test_dashboard_serves_the_study_of_a_run_directory(tmp_path):
    run_dir = tmp_path / "grid-search-20261129-101500"
    records = _fake_grid_search(run_dir)
    write_json(run_dir / "hpo_state.json", {"experiment": {}})  # what makes it a run directory
    write_study(run_dir, _exp(), records)
    proc, port = _serve(run_dir, tmp_path)
    try:
        detail = _study_over_http(port, "grid-search")
        assert len(detail["trials"]) == len(records)
        assert sorted(t["state"] for t in detail["trials"]) == sorted(
            ["Complete"] * 2 + ["Pruned"] * 3 + ["Fail"] * 3)
    finally:
        _stop(proc)
    assert proc.returncode == 0  # Ctrl-C ends it quietly


def test_dashboard_listens_on_127_0_0_1_unless_told_otherwise(tmp_path):
    from hpo.dashboard import Dashboard

    write_study(tmp_path, _exp(), _fake_grid_search(tmp_path))
    board = Dashboard(tmp_path / STUDY_FILE, port=0)
    try:
        assert board.server.server_address[0] == "127.0.0.1" and board.port > 0
        assert board.url == f"http://127.0.0.1:{board.port}/dashboard/studies/{board.study_id}"
        assert board.study_name == "grid-search"
    finally:
        board.server.server_close()


def test_dashboard_names_a_missing_run_directory_or_study_with_exit_code_2(tmp_path):
    proc = hpo_cli("dashboard", "nosuch", "--storage-path", str(tmp_path), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "nosuch" in proc.stderr and "run directory" in proc.stderr
    run_dir = tmp_path / "s-20261129-101500"
    run_dir.mkdir()
    write_json(run_dir / "hpo_state.json", {"experiment": {}})
    proc = hpo_cli("dashboard", "s", "--storage-path", str(tmp_path), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and STUDY_FILE in proc.stderr and "hpo sync-mlflow" in proc.stderr


def test_dashboard_without_optuna_dashboard_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from hpo.cli import main

    run_dir = tmp_path / "s-20261129-101500"
    write_study(run_dir, _exp(), _fake_grid_search(run_dir))
    write_json(run_dir / "hpo_state.json", {"experiment": {}})
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed: its import fails
    assert main(["dashboard", str(run_dir), "--port", "0"]) == 2
    assert "pip install optuna-dashboard" in capsys.readouterr().err


def test_dashboard_on_a_busy_port_is_an_error_naming_the_port(tmp_path, capsys):
    import socket

    from hpo.cli import main

    run_dir = tmp_path / "s-20261129-101500"
    write_study(run_dir, _exp(), _fake_grid_search(run_dir))
    write_json(run_dir / "hpo_state.json", {"experiment": {}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["dashboard", str(run_dir), "--port", str(taken.getsockname()[1])]) == 2
    assert "--port" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_search_s_study_opens_in_optuna_dashboard(tmp_path, ray_address):
    """A grid search on the cluster, resumed (the study rewritten, not doubled), then
    ``hpo dashboard`` on its run directory: the API answers 200 with every trial."""
    results = hpo.run(name="dash", trainable=trainables.fails_when_large, metric="loss", mode="min",
                      space={"x": Grid([0.1, 0.3, 0.7]), "steps": Grid([2, 3])}, strategy="grid",
                      storage_path=str(tmp_path / "runs"), tracking={"enabled": False}, address=ray_address)
    run_dir = Path(results.storage_path)
    assert len(results.trials) == 6 and results.count("errored") == 2  # x = 0.7 raises
    first = _by_id(_load(run_dir, "dash"))
    # a finished search: nothing new runs, and the study is rewritten
    hpo.resume(str(run_dir), trainable=trainables.fails_when_large, address=ray_address)
    trials = _by_id(_load(run_dir, "dash"))
    assert sorted(trials) == sorted(first) == sorted(t.trial_id for t in results.trials)
    for t in results.trials:
        got = trials[t.trial_id]
        assert got.state.name == {"completed": "COMPLETE", "errored": "FAIL"}[t.status]
        assert got.params == {"x": t.config["x"], "steps": t.config["steps"]}
        if t.status == "completed":
            assert math.isclose(got.value, t.metrics["loss"])
            assert sorted(got.intermediate_values) == list(range(1, t.config["steps"] + 1))

    proc, port = _serve(run_dir, tmp_path)
    try:
        start = time.time()
        detail = _study_over_http(port, "dash")
        assert len(detail["trials"]) == len(results.trials)
        assert time.time() - start < 10
    finally:
        _stop(proc)


@pytest.mark.slow
def test_an_optuna_search_s_study_file_matches_the_study_it_searched_with(tmp_path, ray_address):
    """TPE + ASHA stopped by an epoch budget: each trial (matched by its sampled x) has the same
    state, value and intermediate values in the study file as in the Optuna searcher's own study."""
    results = hpo.run(name="tpe-asha", trainable=trainables.quadratic, metric="loss", mode="min",
                      space={"x": Float(0.0, 1.0), "steps": 9, "sleep": 0.05},
                      strategy={"searcher": "tpe", "scheduler": "asha", "max_t": 9}, num_samples=12,
                      max_concurrent=2, epoch_budget=40, storage_path=str(tmp_path / "runs"),
                      tracking={"enabled": False}, address=ray_address)
    assert results.stop_reason == "epoch budget"
    assert results.count("pruned") + results.count("cut") > 0  # (ASHA's prunes depend on the order of reports)

    def view(study: optuna.Study) -> dict[float, tuple[str, Any, dict[int, float]]]:
        return {t.params["x"]: (t.state.name, t.values, t.intermediate_values) for t in study.trials}

    exported = view(_load(Path(results.storage_path), "tpe-asha"))
    assert len(exported) == len(results.trials)
    assert exported == view(results.study)
