"""``hpo nightly``: input checked before launch, one run directory and MLflow parent per date,
one Optuna study per lineage warm-starting every night, idempotent dates, the lock, and the
data fingerprint. Fast tests drive the pieces directly; the slow ones run ``hpo nightly`` on the
real two-node Ray cluster, with the study on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import optuna
import pytest
from optuna.trial import TrialState

from hpo.config import Experiment, load_experiment, parse_duration
from hpo.errors import HpoConfigError
from hpo.lineage import NightLocked, database_url, study_name
from hpo.nightly import data_fingerprint, night_lock, night_seed, plan_night, reconcile
from hpo.rundir import NIGHT_FILE, night_run_dir, night_run_dirs, write_json
from hpo.strategies import TaggedStudy
from hpo.tracking.search_record import space_hash
from tests.conftest import ROOT, _env, hpo_cli, start_hpo, wait_for

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _exp(tmp_path: Path, **kw: Any) -> Experiment:
    fields: dict[str, Any] = dict(
        name="night", trainable="tests.trainables:quadratic", metric="loss", mode="min", num_samples=4,
        space={"x": {"type": "float", "low": 0, "high": 1}, "steps": 2, "sleep": 0},
        strategy={"searcher": "tpe", "seed": 0}, storage_path=str(tmp_path / "runs"),
        tracking={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    fields.update(kw)
    return Experiment.from_dict(fields)


# -- input, checked before anything is launched ------------------------------------------------------


@pytest.mark.parametrize("date", ["2026-13-01", "2026-02-30", "29.11.2026", "2026-1-5", "today"])
def test_a_bad_date_is_an_error_naming_the_flag(tmp_path, date):
    with pytest.raises(HpoConfigError, match="YYYY-MM-DD") as err:
        plan_night(_exp(tmp_path), date)
    assert err.value.key == "--date" and err.value.value == date


def test_the_default_date_is_today_in_the_configured_time_zone(tmp_path):
    for tz in ("UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11: different dates
        plan = plan_night(_exp(tmp_path, nightly={"timezone": tz}))
        assert plan.date in {(dt.datetime.now(ZoneInfo(tz)) + dt.timedelta(seconds=s)).date().isoformat()
                             for s in (-5, 0)}


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("30m", 1800), ("90s", 90), ("1h30m", 5400),
                                          ("0.5h", 1800), ("1d", 86400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["2 hours", "2", "h", "", "0m", "1h 30m", "-5m"])
def test_a_bad_duration_is_an_error_naming_its_key(tmp_path, text):
    with pytest.raises(HpoConfigError) as err:
        _exp(tmp_path, nightly={"time_budget": text})
    assert err.value.key == "nightly.time_budget"
    with pytest.raises(HpoConfigError) as err:
        plan_night(_exp(tmp_path), "2026-11-29", time_budget=text)
    assert err.value.key == "--time-budget"


def test_the_nights_time_budget_comes_from_the_flag_then_the_nightly_block_then_time_budget_s(tmp_path):
    exp = _exp(tmp_path, time_budget_s=50, nightly={"time_budget": "2m"})
    assert plan_night(exp, "2026-11-29", "1h").exp.time_budget_s == 3600
    assert plan_night(exp, "2026-11-29").exp.time_budget_s == 120
    assert plan_night(_exp(tmp_path, time_budget_s=50), "2026-11-29").exp.time_budget_s == 50


def test_a_time_budget_flag_also_applies_to_a_continued_night(tmp_path):
    """--time-budget is kept apart on the plan: a killed night continued with it gets the new
    budget (hpo.runner.resume(time_budget_s=...) sets the restored collector's)."""
    assert plan_night(_exp(tmp_path), "2026-11-29", "90s").new_budget_s == 90
    assert plan_night(_exp(tmp_path, nightly={"time_budget": "1h"}), "2026-11-29").new_budget_s is None


@pytest.mark.parametrize("tz", ["Mars/Olympus", "utc+2", ""])
def test_a_bad_time_zone_is_an_error(tmp_path, tz):
    with pytest.raises(HpoConfigError) as err:
        _exp(tmp_path, nightly={"timezone": tz})
    assert err.value.key == "nightly.timezone"


@pytest.mark.parametrize("url", ["redis://localhost:6379", "/tmp/optuna.db", "file:///tmp/o.db",
                                 "sqlite:///:memory:", "sqlite:////no/such/dir/optuna.db",
                                 "mongodb://u:secret@host/db"])
def test_a_storage_that_is_not_a_relational_database_file_or_server_is_an_error(tmp_path, url):
    with pytest.raises(HpoConfigError) as err:
        _exp(tmp_path, nightly={"storage": url})
    assert err.value.key == "nightly.storage"
    assert "secret" not in str(err.value)


@pytest.mark.parametrize("url", ["postgresql://hpo@db:5432/optuna", "postgresql+psycopg2://u@h/d",
                                 "mysql+pymysql://u@h/d"])
def test_postgresql_and_mysql_storages_are_accepted(tmp_path, url):
    assert plan_night(_exp(tmp_path, nightly={"storage": url}), "2026-11-29").storage.split("://")[1] == \
        url.split("://")[1]


def test_a_bare_postgresql_url_gets_the_installed_driver(tmp_path):
    import importlib.util

    storage = plan_night(_exp(tmp_path, nightly={"storage": POSTGRES}), "2026-11-29").storage
    if importlib.util.find_spec("psycopg") is None:  # SQLAlchemy 2.1 reads postgresql:// as psycopg 3
        assert storage == POSTGRES.replace("postgresql://", "postgresql+psycopg2://")
    else:
        assert storage == POSTGRES


def test_the_default_storage_is_an_sqlite_file_beside_the_run_directories(tmp_path):
    plan = plan_night(_exp(tmp_path), "2026-11-29")
    assert plan.storage == f"sqlite:///{(tmp_path / 'runs').resolve() / 'optuna.db'}"
    assert plan.run_dir == (tmp_path / "runs").resolve() / "night-2026-11-29"
    assert plan.lock_path == (tmp_path / "runs").resolve() / "night.nightly.lock"


def test_a_searcher_that_is_not_an_optuna_sampler_cannot_warmstart_hpo(tmp_path):
    exp = _exp(tmp_path, strategy={"searcher": "grid"},
               space={"x": {"type": "grid", "values": [0.1, 0.2]}, "steps": 2})
    with pytest.raises(HpoConfigError, match="Optuna sampler") as err:
        plan_night(exp, "2026-11-29")
    assert err.value.key == "strategy.searcher" and err.value.value == "grid"


def test_pbt_cannot_warmstart_hpo(tmp_path):
    exp = Experiment.from_dict({"name": "p", "task": {"dataset": "iris", "epochs": 4},
                                "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
                                "metric": "val_accuracy", "strategy": {"searcher": "random", "scheduler": "pbt"}})
    with pytest.raises(HpoConfigError) as err:
        plan_night(exp, "2026-11-29")
    assert err.value.key == "strategy.scheduler"


def test_bad_input_exits_2_before_anything_is_written(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text((ROOT / "examples" / "nightly.yaml").read_text())
    proc = hpo_cli("nightly", str(exp), "--date", "2026-02-30", cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2 and "--date" in proc.stderr
    proc = hpo_cli("nightly", str(exp), "--date", "2026-02-03", "--time-budget", "soon", cwd=tmp_path, check=False,
                   timeout=120)
    assert proc.returncode == 2 and "--time-budget" in proc.stderr
    assert not (tmp_path / "hpo_results").exists() and not (tmp_path / "mlflow.db").exists()


# -- lineage, seed, run directories ---------------------------------------------------------------


def test_the_study_is_named_by_experiment_and_space_never_optunas_default(tmp_path):
    a = _exp(tmp_path)
    assert study_name(a) == f"hpo-night-{space_hash(a)}"
    assert study_name(_exp(tmp_path, num_samples=9)) == study_name(a)  # same space: same lineage
    assert study_name(_exp(tmp_path, name="other")) != study_name(a)  # two projects never merge
    changed = _exp(tmp_path, space={"x": {"type": "float", "low": 0, "high": 2}, "steps": 2, "sleep": 0})
    assert study_name(changed) != study_name(a)  # a changed space is a new lineage


def test_each_night_has_its_own_seed_derived_from_the_experiments(tmp_path):
    exp = _exp(tmp_path)
    one, two = plan_night(exp, "2026-11-29"), plan_night(exp, "2026-11-30")
    assert one.exp.strategy.seed == night_seed(0, "2026-11-29") == plan_night(exp, "2026-11-29").exp.strategy.seed
    assert one.exp.strategy.seed != two.exp.strategy.seed
    assert exp.strategy.seed == 0  # the experiment itself is unchanged


def test_night_run_directories_are_found_by_exact_name(tmp_path):
    for name in ("mlp-2026-11-28", "mlp-2026-11-29", "mlp-small-2026-11-29", "mlp-20261129-101500", "mlp-x"):
        (tmp_path / name).mkdir()
    assert list(night_run_dirs(tmp_path, "mlp")) == ["2026-11-28", "2026-11-29"]
    assert night_run_dir(tmp_path, "mlp", "2026-11-29") == (tmp_path / "mlp-2026-11-29").resolve()


def test_a_tagged_study_tags_every_trial_it_asks_for_also_after_pickling(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="s", storage=storage)
    study = TaggedStudy("s", storage, optuna.samplers.RandomSampler(seed=0), {"night": "2026-11-29"})
    study.tell(study.ask(), 1.0)
    again = pickle.loads(pickle.dumps(study))
    again.tell(again.ask(), 2.0)
    assert [t.user_attrs for t in optuna.load_study(study_name="s", storage=storage).trials] == \
        [{"night": "2026-11-29"}] * 2


def test_a_tagged_study_creates_each_new_trial_with_its_tags_in_one_storage_call(tmp_path, monkeypatch):
    """A night killed just after a trial was created left it untagged (tagging was a second write):
    a new trial is created with its tags, so no tag is written after it; an enqueued one is tagged
    as it starts."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="s", storage=storage)
    study = TaggedStudy("s", storage, optuna.samplers.RandomSampler(seed=0), {"night": "2026-11-29"})
    writes: list[tuple[Any, ...]] = []
    backend = type(study._storage)

    def no_tag_after_creation(self: Any, *args: Any) -> None:
        writes.append(args)
        raise RuntimeError("the process was killed here")

    with monkeypatch.context() as m:
        m.setattr(backend, "set_trial_user_attr", no_tag_after_creation)
        trial = study.ask()
    assert writes == [] and trial.user_attrs == {"night": "2026-11-29"}
    assert "create_new_trial" not in vars(study._storage)  # the storage as it was
    study.enqueue_trial({"x": 0.5})
    queued = study.ask()
    assert queued.user_attrs == {"night": "2026-11-29"} and queued.number == 1
    assert [t.user_attrs for t in optuna.load_study(study_name="s", storage=storage).trials] == \
        [{"night": "2026-11-29"}] * 2


def test_the_data_fingerprint_hashes_the_built_in_tasks_data(tmp_path):
    def exp(dataset: str, seed: int = 0) -> Experiment:
        return Experiment.from_dict({"name": "d", "task": {"dataset": dataset, "seed": seed, "epochs": 2},
                                     "space": {"lr": 0.1}, "metric": "val_accuracy"})

    iris = data_fingerprint(exp("iris"))
    assert iris is not None and len(iris) == 16 and iris == data_fingerprint(exp("iris"))
    assert data_fingerprint(exp("wine")) != iris
    assert data_fingerprint(exp("iris", seed=1)) != iris  # another split: scores are not comparable
    assert data_fingerprint(_exp(tmp_path)) is None  # a custom trainable's data is its own


# -- reconciling trials a killed night left RUNNING ---------------------------------------------------


def test_reconcile_fails_orphaned_running_trials_and_keeps_those_a_resume_continues(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="lin", storage=storage)
    killed = TaggedStudy("lin", storage, None, {"night": "2026-11-28"})
    ended = [killed.ask() for _ in range(2)]  # a killed night whose date has since run to its end
    interrupted = TaggedStudy("lin", storage, None, {"night": "2026-11-29"})
    kept, orphan = interrupted.ask(), interrupted.ask()
    done = interrupted.ask()
    interrupted.tell(done, 0.5)
    old = night_run_dir(tmp_path, "exp", "2026-11-28")
    old.mkdir()
    (old / "trials.json").write_text("{}")
    write_json(old / NIGHT_FILE, {"exit_code": 0})
    night = night_run_dir(tmp_path, "exp", "2026-11-29")
    night.mkdir()  # killed: no exit code; its saved searcher state knows one running trial
    (night / "searcher-state-2026-11-29_01-00-00.pkl").write_bytes(pickle.dumps({"trials": {"abc": kept.number}}))
    failed = reconcile(storage, "lin", tmp_path, "exp")
    assert sorted(failed) == sorted([t.number for t in ended] + [orphan.number])
    states = {t.number: t.state for t in optuna.load_study(study_name="lin", storage=storage).trials}
    assert states[kept.number] == TrialState.RUNNING and states[done.number] == TrialState.COMPLETE
    assert all(states[n] == TrialState.FAIL for n in failed)
    assert reconcile(storage, "lin", tmp_path, "exp") == []
    assert reconcile(storage, "no-such-study", tmp_path, "exp") == []


def test_reconcile_reads_a_packed_searchers_state(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="lin", storage=storage)
    study = TaggedStudy("lin", storage, None, {"night": "2026-11-29"})
    kept = study.ask()
    night = night_run_dir(tmp_path, "exp", "2026-11-29")
    night.mkdir()
    inner = pickle.dumps({"trials": {"abc.0": kept.number}})
    (night / "searcher-state-x.pkl").write_bytes(pickle.dumps({"state": {}, "inner": inner}))
    assert reconcile(storage, "lin", tmp_path, "exp") == []


# -- the lock ---------------------------------------------------------------------------------------


def test_the_lock_lets_one_night_in_and_the_second_fails_at_once(tmp_path):
    path = tmp_path / "x.nightly.lock"
    with night_lock(path):
        start = time.monotonic()
        with pytest.raises(NightLocked, match=f"process {os.getpid()}"), night_lock(path):
            pass
        assert time.monotonic() - start < 1
    with night_lock(path):  # released when the night ends
        pass


def test_a_killed_nights_lock_is_released_by_the_os(tmp_path):
    path = tmp_path / "x.nightly.lock"
    code = (f"from hpo.nightly import night_lock\nimport time\nwith night_lock({str(path)!r}):\n"
            "    print('locked', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(NightLocked), night_lock(path):
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with night_lock(path):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- whole nights on the real cluster -------------------------------------------------------------------


def _yaml(tmp_path: Path, **extra: Any) -> Path:
    body: dict[str, Any] = {
        "name": "nights", "trainable": "tests.trainables:quadratic", "metric": "loss", "mode": "min",
        "space": {"params": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 2, "sleep": 0}},
        "strategy": {"searcher": "tpe", "seed": 0}, "num_samples": 4, "storage_path": str(tmp_path / "runs"),
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    body.update(extra)
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def _night(tmp_path: Path, exp: Path, address: str, date: str, *more: str, check: bool = True
           ) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    proc = hpo_cli("nightly", str(exp), "--date", date, "--address", address, "--json", *more, cwd=tmp_path,
                   check=check, timeout=400)
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def _mlflow_runs(db: Path) -> list[tuple[str, str, dict[str, str]]]:
    """(run id, experiment name, tags) of every active MLflow run."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT r.run_uuid, e.name FROM runs r JOIN experiments e ON e.experiment_id=r.experiment_id "
                       "WHERE r.lifecycle_stage='active'").fetchall()
    return [(rid, ename, dict(con.execute("SELECT key, value FROM tags WHERE run_uuid=?", (rid,)).fetchall()))
            for rid, ename in rows]


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory, ray_address):
    """Two consecutive nights of a tiny search, then the first date again."""
    tmp = tmp_path_factory.mktemp("nights")
    exp = _yaml(tmp)
    out: dict[str, Any] = {"tmp": tmp, "exp": exp}
    out["first"] = _night(tmp, exp, ray_address, "2026-11-28")[1]
    out["second"] = _night(tmp, exp, ray_address, "2026-11-29")[1]
    out["runs_before_repeat"] = _mlflow_runs(tmp / "mlflow.db")
    proc, out["repeat"] = _night(tmp, exp, ray_address, "2026-11-28")
    out["repeat_stderr"] = proc.stderr
    out["runs_after_repeat"] = _mlflow_runs(tmp / "mlflow.db")
    out["changed"] = _night(tmp, exp, ray_address, "2026-11-30", "--set", "space.params.x.high=2",
                            "--set", "nightly.carry_over=true")[1]
    return out


def _study(summary: dict[str, Any]) -> Any:
    storage = f"sqlite:///{Path(summary['run_dir']).parent / 'optuna.db'}"
    return optuna.load_study(study_name=summary["lineage"], storage=storage)


@pytest.mark.slow
def test_the_second_night_warm_starts_from_the_first_in_one_study(two_nights):
    first, second = two_nights["first"], two_nights["second"]
    assert first["exit_code"] == second["exit_code"] == 0
    assert first["lineage"] == second["lineage"] == study_name(load_experiment(two_nights["exp"]))
    assert first["new_lineage"] is True and second["new_lineage"] is False
    assert first["previous_lineage"] is None and second["previous_lineage"] == first["lineage"]
    assert (first["trials_this_night"], first["trials_in_study"]) == (4, 4)
    assert (second["trials_this_night"], second["trials_in_study"]) == (4, 8)
    trials = _study(second).trials
    assert sorted(t.user_attrs.get("night") for t in trials) == ["2026-11-28"] * 4 + ["2026-11-29"] * 4
    assert all(t.state == TrialState.COMPLETE for t in trials)
    xs = {night: {t.params["x"] for t in trials if t.user_attrs["night"] == night}
          for night in ("2026-11-28", "2026-11-29")}
    assert not xs["2026-11-28"] & xs["2026-11-29"]  # the second night drew new configurations
    assert second["best_metric"] == min(t.value for t in trials if t.user_attrs["night"] == "2026-11-29")
    assert second["data_fingerprint"] is None  # a custom trainable
    assert Path(first["run_dir"]).name == "nights-2026-11-28" and Path(second["run_dir"]).name == "nights-2026-11-29"


@pytest.mark.slow
def test_each_night_is_a_parent_run_in_the_experiments_one_mlflow_experiment(two_nights):
    parents = {tags["hpo.night"]: (rid, ename, tags) for rid, ename, tags in two_nights["runs_before_repeat"]
               if "hpo.night" in tags}
    assert set(parents) == {"2026-11-28", "2026-11-29"}
    rid, ename, tags = parents["2026-11-29"]
    assert ename == "nights" == parents["2026-11-28"][1]
    assert rid == two_nights["second"]["parent_run_id"]
    assert tags["hpo.lineage"] == two_nights["second"]["lineage"] and tags["hpo.data_fingerprint"] == "none"
    name = sqlite3.connect(two_nights["tmp"] / "mlflow.db").execute("SELECT name FROM runs WHERE run_uuid=?",
                                                                     (rid,)).fetchone()[0]
    assert name == "nights-2026-11-29"
    children = [r for r in two_nights["runs_before_repeat"] if r[2].get("mlflow.parentRunId") == rid]
    assert len(children) == 4


@pytest.mark.slow
def test_the_same_date_again_adds_no_trial_and_no_mlflow_run(two_nights):
    repeat = two_nights["repeat"]
    assert repeat["exit_code"] == two_nights["first"]["exit_code"] and repeat["skipped"] is True
    assert "already ended" in two_nights["repeat_stderr"]
    assert len(_study(repeat).trials) == 8
    assert len(two_nights["runs_after_repeat"]) == len(two_nights["runs_before_repeat"])


@pytest.mark.slow
def test_a_changed_space_starts_a_new_lineage(two_nights):
    changed, before = two_nights["changed"], two_nights["second"]
    assert changed["exit_code"] == 0 and changed["new_lineage"] is True
    assert changed["lineage"] != before["lineage"] and changed["previous_lineage"] == before["lineage"]
    # nightly.carry_over: the old lineage's 8 trials (x in [0, 1]) fit the new space (x in [0, 2])
    assert (changed["carried_over"], changed["carry_skipped"]) == (8, 0)
    assert (changed["trials_this_night"], changed["trials_in_study"]) == (4, 12)
    carried = [t for t in _study(changed).trials if "carried_from" in t.user_attrs]
    assert len(carried) == 8 and {t.user_attrs["carried_from"] for t in carried} == {before["lineage"]}
    assert len(_study(before).trials) == 8  # the old lineage is left as it was


def _running_trials(storage: Path, lineage: str) -> list[Any]:
    try:
        study = optuna.load_study(study_name=lineage, storage=f"sqlite:///{storage}")
    except Exception:  # noqa: BLE001 - not created yet
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


@pytest.mark.slow
def test_a_second_night_while_one_runs_exits_3_and_an_interrupted_night_continues(tmp_path, ray_address):
    exp = _yaml(tmp_path, space={"params": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 10,
                                            "sleep": 0.5}}, max_concurrent=1)
    lineage = study_name(load_experiment(exp))
    first = start_hpo(tmp_path, "nightly", str(exp), "--date", "2026-11-29", "--address", ray_address, "--json")
    try:
        wait_for(lambda: _running_trials(tmp_path / "runs" / "optuna.db", lineage), first, what="a trial")
        start = time.monotonic()
        second = hpo_cli("nightly", str(exp), "--date", "2026-11-30", "--address", ray_address, "--json",
                         cwd=tmp_path, check=False, timeout=60)
        assert second.returncode == 3, second.stderr
        assert time.monotonic() - start < 15  # the CLI's own start-up included
        assert "another night of this experiment is running" in second.stderr
        assert json.loads(second.stdout.strip().splitlines()[-1])["exit_code"] == 3
        assert not (tmp_path / "runs" / "nights-2026-11-30").exists()
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(120)
        assert first.returncode == 143
        assert json.loads(first.stdout.read().strip().splitlines()[-1])["exit_code"] == 143
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    # the same date again continues the interrupted night in the same study and MLflow parent
    proc, again = _night(tmp_path, exp, ray_address, "2026-11-29")
    assert again["exit_code"] == 0 and again["resumed"] is True and again["skipped"] is False
    trials = optuna.load_study(study_name=lineage, storage=f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}").trials
    assert len(trials) == 4 and {t.user_attrs["night"] for t in trials} == {"2026-11-29"}
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    parents = [r for r in _mlflow_runs(tmp_path / "mlflow.db") if r[2].get("hpo.night") == "2026-11-29"]
    assert len(parents) == 1


def _saved_trial_numbers(run_dir: Path) -> set[int]:
    """The Optuna trials the newest saved searcher state of a search knows (what a resume continues)."""
    saved = sorted(run_dir.glob("searcher-state-*.pkl"))
    if not saved:
        return set()
    try:
        state = pickle.loads(saved[-1].read_bytes())
    except Exception:  # noqa: BLE001 - being written
        return set()
    return set(state.get("trials", {}).values())


@pytest.mark.slow
def test_a_killed_night_continues_and_its_orphaned_trials_end_failed(tmp_path, ray_address):
    exp = _yaml(tmp_path, space={"params": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 6,
                                            "sleep": 0.5}}, max_concurrent=2, num_samples=8)
    lineage = study_name(load_experiment(exp))
    db, run_dir = tmp_path / "runs" / "optuna.db", tmp_path / "runs" / "nights-2026-11-29"

    def orphans() -> set[int]:  # running now, but started after Ray's last save of the searcher
        if not _saved_trial_numbers(run_dir):
            return set()
        return {t.number for t in _running_trials(db, lineage)} - _saved_trial_numbers(run_dir)

    proc = start_hpo(tmp_path, "nightly", str(exp), "--date", "2026-11-29", "--address", ray_address, "--json")
    try:
        wait_for(lambda: orphans(), proc, what="a trial started after Ray's last save")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = {t.number for t in _running_trials(db, lineage)}
    unknown = left - _saved_trial_numbers(run_dir)
    assert unknown  # the killed night left RUNNING trials that its resume will not know
    _, again = _night(tmp_path, exp, ray_address, "2026-11-29")
    assert again["exit_code"] == 0 and again["resumed"] is True
    assert set(again["reconciled"]) == unknown
    study = optuna.load_study(study_name=lineage, storage=f"sqlite:///{db}")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert all(study.trials[n].state == TrialState.FAIL for n in unknown)
    # every trial the resumed night ran or continued completed: 8 in all, plus the orphans, which failed
    assert sum(1 for t in study.trials if t.state == TrialState.COMPLETE) == 8
    assert len(study.trials) == 8 + len(unknown)
    assert {t.user_attrs["night"] for t in study.trials} == {"2026-11-29"}


@pytest.fixture
def pg_role():
    """A PostgreSQL role whose password has ``{``, ``}``, ``@``, ``%`` and ``/`` in it (Optuna and
    SQLAlchemy must not format or split the URL on them); dropped afterwards."""
    import urllib.parse

    import sqlalchemy

    role, password = f"hpo_pw_{uuid.uuid4().hex[:6]}", "p{w}@d%5/x"
    admin = sqlalchemy.create_engine(database_url(POSTGRES))
    with admin.begin() as c:
        c.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'p{{w}}@d%%5/x'")
        for what in ("SCHEMA public", "ALL TABLES IN SCHEMA public", "ALL SEQUENCES IN SCHEMA public"):
            c.exec_driver_sql(f"GRANT ALL ON {what} TO {role}")  # Optuna's tables may exist already
    try:
        yield role, password, f"postgresql://{role}:{urllib.parse.quote(password, safe='')}@127.0.0.1:5432/test"
    finally:
        with admin.begin() as c:
            c.exec_driver_sql(f"REASSIGN OWNED BY {role} TO postgres")
            c.exec_driver_sql(f"DROP OWNED BY {role}")
            c.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()


@pytest.mark.slow
def test_two_experiments_nights_at_once_on_postgresql_with_a_special_password(tmp_path, ray_address, pg_role):
    """Two ``hpo nightly`` processes of two experiments write to one PostgreSQL database at the
    same time: no trial lost or duplicated; the password never reaches the summary or MLflow."""
    role, password, url = pg_role
    names = [f"pg-{uuid.uuid4().hex[:6]}-{i}" for i in range(2)]
    dirs = [tmp_path / n for n in names]
    exps = []
    for n, d in zip(names, dirs):
        d.mkdir()
        exps.append(_yaml(d, name=n, nightly={"storage": url}))
    storage = database_url(url)
    lineages = [study_name(load_experiment(e)) for e in exps]
    try:
        procs = [start_hpo(d, "nightly", str(e), "--date", "2026-11-28", "--address", ray_address, "--json")
                 for d, e in zip(dirs, exps)]
        outs = [p.communicate(timeout=400) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
        summaries = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
        _, second = _night(dirs[0], exps[0], ray_address, "2026-11-29")
        for lineage, n in zip(lineages, (8, 4)):
            study = optuna.load_study(study_name=lineage, storage=storage)
            assert len(study.trials) == n and sorted(t.number for t in study.trials) == list(range(n))
            assert all(t.state == TrialState.COMPLETE for t in study.trials)
        assert second["trials_in_study"] == 8 and second["new_lineage"] is False
        for out, err in outs:
            assert password not in out and urllib_quote(password) not in out and password not in err
        assert all(s["storage"].startswith(f"postgresql+psycopg2://{role}:***@") for s in summaries)
        db = dirs[0] / "mlflow.db"
        con = sqlite3.connect(db)
        texts = [v for (v,) in con.execute("SELECT value FROM params UNION ALL SELECT value FROM tags")]
        assert texts and not any(urllib_quote(password) in v or password in v for v in texts)
        artifacts = list(dirs[0].glob("mlruns/**/experiment.yaml"))
        assert artifacts and all(urllib_quote(password) not in a.read_text() for a in artifacts)
        assert not (dirs[0] / "runs" / "optuna.db").exists()
    finally:
        for lineage in lineages:
            if lineage in optuna.get_all_study_names(storage=storage):
                optuna.delete_study(study_name=lineage, storage=storage)


def urllib_quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


def test_the_postgresql_advisory_lock_keeps_nights_on_two_machines_apart_and_dies_with_its_holder(tmp_path):
    """Two machines have two file locks; the database they share has one advisory lock per
    experiment. A killed holder's lock is released by the server."""
    from hpo.lineage import advisory_key, storage_lock

    name = f"adv-{uuid.uuid4().hex[:6]}"
    code = ("import sys, time\nfrom hpo.lineage import storage_lock\n"
            f"with storage_lock({database_url(POSTGRES)!r}, {name!r}):\n"
            "    print('locked', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(NightLocked, match=f"advisory lock {advisory_key(name)}"), \
                storage_lock(database_url(POSTGRES), name):
            pass
        assert time.monotonic() - t0 < 5
        with storage_lock(database_url(POSTGRES), name + "-other"):  # another experiment is not blocked
            pass
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while True:  # the server notices the closed connection
            try:
                with storage_lock(database_url(POSTGRES), name):
                    break
            except NightLocked:
                assert time.monotonic() < deadline, "the killed holder's advisory lock was not released"
                time.sleep(0.2)
        with storage_lock(f"sqlite:///{tmp_path / 'o.db'}", name), storage_lock(f"sqlite:///{tmp_path / 'o.db'}", name):
            pass  # SQLite: the file lock alone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_first_nights_of_three_experiments_on_a_new_postgresql_database_create_optunas_tables_once():
    """Optuna creates its tables without a lock: three processes opening a new database at once
    failed all but one (``CREATE TYPE studydirection``: unique violation) before hpo's lock."""
    import sqlalchemy

    db = f"hpo_new_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(database_url(POSTGRES), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {db}")
    url = database_url(POSTGRES.rsplit("/", 1)[0] + "/" + db)
    code = ("import sys, optuna\nfrom hpo.lineage import storage_lock\n"
            f"with storage_lock({url!r}, 'exp' + sys.argv[1]):\n"
            f"    optuna.create_study(study_name='s' + sys.argv[1], storage={url!r})\n")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stderr=subprocess.PIPE, text=True, env=_env())
                 for i in range(3)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [e[-1500:] for e in errs]
        assert sorted(optuna.get_all_study_names(storage=url)) == ["s0", "s1", "s2"]
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.dispose()


@pytest.mark.slow
def test_the_nightly_example_runs_a_night_and_promotes_its_first_champion(tmp_path, ray_address):
    """The example file as shipped (consecutive nights, warm starts and later decisions are the
    tests above and below, on smaller searches)."""
    exp = ROOT / "examples" / "nightly.yaml"
    _, first = _night(tmp_path, exp, ray_address, "2026-11-28")
    assert (first["decision"], first["exit_code"], first["champion_before"]) == ("promoted", 0, None)
    assert first["champion_after"] == first["challenger_version"] == "1" and first["compared_on"] == "test_accuracy"
    assert first["trials_this_night"] == first["trials_in_study"] == 6
    assert first["data_fingerprint"] == data_fingerprint(load_experiment(exp))
    assert 0 < first["best_metric"] <= 1 and "lr" in first["best_config"]
    parents = [r for r in _mlflow_runs(tmp_path / "mlflow.db") if "hpo.night" in r[2]]
    assert [(r[1], r[2]["hpo.data_fingerprint"]) for r in parents] == [("nightly-iris", first["data_fingerprint"])]


@pytest.mark.slow
def test_the_time_budget_ends_the_night_with_what_it_had(tmp_path, ray_address):
    exp = _yaml(tmp_path, space={"params": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 20,
                                            "sleep": 0.5}}, max_concurrent=2)
    _, night = _night(tmp_path, exp, ray_address, "2026-11-29", "--time-budget", "4s")
    assert night["exit_code"] == 0 and night["stop_reason"] == "time budget"
    trials = _study(night).trials
    assert trials and all(t.user_attrs["night"] == "2026-11-29" for t in trials)
    assert {t.state for t in trials} == {TrialState.PRUNED}  # cut trials are told PRUNED, none left RUNNING
    records = json.loads((Path(night["run_dir"]) / "trials.json").read_text())["trials"]
    assert records and {r["status"] for r in records} == {"cut"}


def _iris_yaml(tmp_path: Path) -> Path:
    """The built-in task on iris: the night's best model is compared with the registered champion."""
    body = {"name": "champ", "task": {"dataset": "iris", "epochs": 30, "batch_size": 16},
            "space": {"lr": {"type": "float", "low": 0.02, "high": 0.05}, "hidden": 32},
            "metric": "val_accuracy", "mode": "max", "strategy": {"searcher": "random", "seed": 0},
            "num_samples": 2, "storage_path": str(tmp_path / "runs"),
            "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    path = tmp_path / "champ.yaml"
    path.write_text(json.dumps(body))
    return path


@pytest.mark.slow
def test_a_better_night_is_promoted_a_worse_one_is_not_and_the_champion_is_rescored_on_new_data(
        tmp_path, ray_address):
    from mlflow import MlflowClient

    from hpo.champion import load_version, score_model
    from hpo.train.builtin import load_data

    exp = _iris_yaml(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, first = _night(tmp_path, exp, ray_address, "2026-11-01")
    assert (first["decision"], first["exit_code"], first["champion_after"]) == ("promoted", 0, "1")
    assert first["champion_score"] is None and first["challenger_score"] > 0.8
    # a much worse night (a learning rate that cannot learn in one epoch) on a new split of the data
    worse = ("--set", "space.lr.low=1e-7", "--set", "space.lr.high=2e-7", "--set", "task.epochs=1",
             "--set", "task.seed=7")
    proc, second = _night(tmp_path, exp, ray_address, "2026-11-02", *worse, "--set",
                          "nightly.alert_regression=10%", "--dry-run", check=False)
    assert (second["decision"], second["exit_code"], proc.returncode) == ("regressed", 5, 5), proc.stderr[-2000:]
    assert "regressed" in proc.stderr and second["champion_before"] == second["champion_after"] == "1"
    assert second["dry_run"] is True  # "no improvement" (worse within alert_regression): tests/test_champion.py
    assert second["data_fingerprint"] != first["data_fingerprint"]
    # the champion was re-scored on the second night's test rows, not compared by its old number
    night2 = load_experiment(exp, [f"{a}" for a in worse[1::2]] + ["nightly.alert_regression=10%"])
    rescored = score_model(load_version(uri, "champ", "1"), load_data(night2), "test_accuracy")
    assert second["champion_score"] == pytest.approx(rescored)
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("champ", "champion").version) == "1"
    tags = client.get_model_version("champ", "2").tags
    assert tags["hpo.decision"] == "regressed" and tags["hpo.night"] == "2026-11-02"
    assert tags["hpo.dry_run"] == "true" and client.get_model_version("champ", "1").tags["hpo.dry_run"] == "false"
    assert float(tags["hpo.champion_score"]) == pytest.approx(rescored)
    parent = client.get_run(second["parent_run_id"]).data
    assert parent.tags["hpo.decision"] == "regressed" and "champion_test_accuracy" in parent.metrics
    # the same date again: no new version, no new run, the same exit code
    versions = len(client.search_model_versions("name='champ'"))
    proc, again = _night(tmp_path, exp, ray_address, "2026-11-02", *worse, "--dry-run", check=False)
    assert (proc.returncode, again["skipped"]) == (5, True)
    assert len(client.search_model_versions("name='champ'")) == versions
    # the trend report across the nights is logged on each night's parent run
    arts = {a.path for a in client.list_artifacts(second["parent_run_id"], "trend")}
    assert {"trend/trend.html", "trend/trend.md", "trend/trend.png"} <= arts


def test_a_changed_space_carries_over_the_trials_that_fit_it(tmp_path):
    """Trials of the previous lineage move to the new study when the new space holds their
    configuration exactly: values, intermediate values and state kept; the rest skipped."""
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import create_trial

    from hpo.lineage import carry_over
    from hpo.space import SearchSpace

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    old_space = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}, "n": {"type": "int", "low": 1,
                                       "high": 8}, "epochs": 3})
    old = optuna.create_study(study_name="old", storage=storage)
    dists = {"x": FloatDistribution(0, 1), "n": IntDistribution(1, 8)}
    old.add_trials([
        create_trial(params={"x": 0.2, "n": 2}, distributions=dists, value=0.5, user_attrs={"night": "d1"}),
        create_trial(params={"x": 0.4, "n": 3}, distributions=dists, state=TrialState.PRUNED,
                     intermediate_values={1: 0.9}, user_attrs={"night": "d1"}),
        create_trial(params={"x": 0.8, "n": 2}, distributions=dists, value=0.1),  # x outside the new range
        create_trial(params={"x": 0.3, "n": 8}, distributions=dists, value=0.2),  # n outside the new range
        create_trial(params={"x": 0.1, "n": 1}, distributions=dists, state=TrialState.FAIL),  # failed: not carried
    ])
    new_space = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 0.5}, "n": {"type": "int", "low": 1,
                                       "high": 4}, "epochs": 3})
    assert carry_over(storage, "old", "new", old_space, new_space, ["minimize"]) == (2, 2)
    new = optuna.load_study(study_name="new", storage=storage)
    got = sorted((t.params["x"], t.params["n"], t.state, t.value, t.intermediate_values) for t in new.trials)
    assert got == [(0.2, 2, TrialState.COMPLETE, 0.5, {}), (0.4, 3, TrialState.PRUNED, None, {1: 0.9})]
    assert {t.user_attrs["carried_from"] for t in new.trials} == {"old"}
    assert all(t.user_attrs["night"] == "d1" for t in new.trials)  # not counted as tonight's
    assert new.trials[0].distributions["x"] == FloatDistribution(0, 0.5)  # the new space's distributions
    assert carry_over(storage, "old", "new", old_space, new_space, ["minimize"]) == (0, 0)  # once only
    changed_fixed = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}, "n": {"type": "int",
                                           "low": 1, "high": 8}, "epochs": 5})
    assert carry_over(storage, "old", "other", old_space, changed_fixed, ["minimize"]) == (0, 4)


def test_two_writers_of_one_study_on_postgresql_lose_and_duplicate_no_trial(tmp_path):
    """Two processes asking and telling trials of one lineage study at once (as two drivers on two
    machines would): every trial is there once, numbered without gaps, each writer's own."""
    storage, name = database_url(POSTGRES), f"hpo-writers-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=storage)
    code = ("import sys, optuna\nfrom hpo.strategies import TaggedStudy\n"
            "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
            f"s = TaggedStudy({name!r}, {storage!r}, optuna.samplers.RandomSampler(), {{'night': sys.argv[1]}})\n"
            "for _ in range(25):\n    t = s.ask()\n    s.tell(t, t.suggest_float('x', 0, 1))\n")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, w], env=_env()) for w in ("a", "b")]
        assert [p.wait(120) for p in procs] == [0, 0]
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert sorted(t.number for t in trials) == list(range(50))
        assert sorted(t.user_attrs["night"] for t in trials) == ["a"] * 25 + ["b"] * 25
        assert {t.state for t in trials} == {TrialState.COMPLETE}
    finally:
        optuna.delete_study(study_name=name, storage=storage)
