"""User code shipped with a Ray ``runtime_env`` working directory (``working_dir:`` /
``--working-dir``): checked before launch, imported by the driver from the directory itself and by
the trials from Ray's unpacked copy on every node, and shipped again by ``hpo resume``."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from hpo.config import Experiment, load_experiment
from hpo.errors import HpoConfigError
from hpo.validate import check_working_dir, validate
from tests.conftest import hpo_cli, start_hpo, wait_for

RAY_COPY = "/runtime_resources/working_dir_files/_ray_pkg_"  # where Ray unpacks a working_dir on a node

# The user's module: it says which file it was imported from, in each trial.
TRAINABLE = '''import os
import time

import hpo


def train(config):
    if config.get("meet"):  # wait (up to 2 min) until that many trials run at once: on that many 1-CPU nodes
        open(os.path.join(config["meet"], f"{os.getpid()}-{time.time()}"), "w").close()
        deadline = time.time() + 120
        while len(os.listdir(config["meet"])) < config["meet_n"] and time.time() < deadline:
            time.sleep(0.05)
    time.sleep(config["sleep"])
    hpo.report({"loss": config["x"], "source_file": os.path.abspath(__file__)})
    if config.get("marks"):  # a trial done, for a test waiting on it
        open(os.path.join(config["marks"], f"{os.getpid()}-{time.time()}"), "w").close()
'''


def _code(tmp_path: Path, module: str = "wd_trainable") -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{module}.py").write_text(TRAINABLE)
    return code


def _experiment(name: str, module: str = "wd_trainable", **extra: object) -> dict:
    return {"name": name, "trainable": f"{module}:train", "metric": "loss", "mode": "min",
            "space": {"x": {"type": "float", "low": 0, "high": 1}, "sleep": 1.0},
            "strategy": {"searcher": "random", "seed": 0}, "num_samples": 4, "tracking": {"enabled": False},
            **extra}


def _source_files(run_dir: Path) -> list[str]:
    """The ``source_file`` of every result Ray's JSON logger kept, in every trial of the run."""
    files = []
    for f in run_dir.glob("*/result.json"):
        files += [json.loads(line)["source_file"] for line in f.read_text().splitlines() if line.strip()]
    return files


# -- before launch (no Ray) ---------------------------------------------------------------------


def test_working_dir_is_relative_to_the_experiment_file_and_recorded_absolute(tmp_path: Path) -> None:
    (tmp_path / "exps").mkdir()
    f = tmp_path / "exps" / "exp.yaml"
    f.write_text("name: w\ntrainable: m:train\nspace: {x: 1}\nmetric: loss\nworking_dir: ../code\n")
    exp = load_experiment(f)
    assert exp.working_dir == str(tmp_path / "code")
    assert exp.to_record()["working_dir"] == str(tmp_path / "code")
    assert load_experiment(f, ["working_dir=/elsewhere"]).working_dir == "/elsewhere"
    assert Experiment.from_dict({"name": "w", "space": {"x": 1}, "metric": "m"}).working_dir is None


def test_a_missing_directory_or_a_file_is_refused_naming_working_dir(tmp_path: Path) -> None:
    with pytest.raises(HpoConfigError, match=r"^working_dir: must be an existing directory, but got '.*nowhere'"):
        check_working_dir(str(tmp_path / "nowhere"))
    (tmp_path / "f.py").write_text("")
    with pytest.raises(HpoConfigError, match=r"^working_dir: must be a directory"):
        check_working_dir(str(tmp_path / "f.py"))


def test_what_ray_would_ship_must_be_under_its_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_max_grpc_message_size", str(64 * 1024))  # Ray's limit, read as Ray reads it
    code = _code(tmp_path)
    (code / "data").mkdir()
    (code / "data" / "big.bin").write_bytes(b"\0" * 100_000)
    with pytest.raises(HpoConfigError, match=r"^working_dir: must hold less than Ray's 0 MiB limit .* with 0\.1 "
                                             r"MiB to ship \(largest: data 0\.1 MiB"):
        check_working_dir(str(code))
    (code / ".rayignore").write_text("data/\n")  # Ray's own packaging leaves it out: so does the check
    check_working_dir(str(code))
    (code / ".rayignore").unlink()
    (code / "data").rename(code / "hpo_results")  # never shipped: run directories, stores, .git, .venv
    check_working_dir(str(code))
    (code / "hpo_results").rename(code / "runs")
    check_working_dir(str(code), storage_path=str(code / "runs"))  # the search's own storage path is left out
    with pytest.raises(HpoConfigError, match="largest: runs"):
        check_working_dir(str(code), storage_path=str(tmp_path / "elsewhere"))


def test_the_excludes_leave_out_storage_stores_and_version_control_as_ray_reads_them(tmp_path: Path) -> None:
    from hpo._compat.ray import shipped_bytes
    from hpo.ray_env import runtime_env_of

    code = _code(tmp_path)
    for junk in (".git/HEAD", ".venv/bin/python", "hpo_results/r/x", "sub/mlruns/0/m", "mlflow.db", "runs/a/b",
                 "store/t.db", "pkg/__pycache__/m.pyc"):
        (code / junk).parent.mkdir(parents=True, exist_ok=True)
        (code / junk).write_text("junk")
    (code / "pkg" / "helpers.py").write_text("")
    exp = Experiment.from_dict(_experiment("w", working_dir=str(code), storage_path=str(code / "runs"),
                                           tracking={"enabled": True, "tracking_uri": f"sqlite:///{code}/store/t.db"}))
    env = runtime_env_of(exp, exp.tracking.tracking_uri)
    assert env is not None and env["working_dir"] == str(code)
    assert {"/runs", "/store/t.db", ".git", ".venv", "hpo_results", "mlruns", "mlflow.db"} <= set(env["excludes"])
    shipped = shipped_bytes(str(code), env["excludes"])  # Ray's own traversal and pattern matching
    assert sorted(shipped) == ["pkg", "wd_trainable.py"]  # pkg/helpers.py, not its __pycache__
    assert runtime_env_of(Experiment.from_dict(_experiment("w"))) is None


def test_the_driver_imports_a_trainable_that_lives_only_in_the_working_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    code = _code(tmp_path, module="wd_only_here")
    with pytest.raises(HpoConfigError, match=r"^trainable: must name an importable module"):
        validate(Experiment.from_dict(_experiment("w", module="wd_only_here")))
    validate(Experiment.from_dict(_experiment("w", module="wd_only_here", working_dir=str(code))))
    assert sys.path[0] == str(code)
    assert sys.modules["wd_only_here"].__file__ == str(code / "wd_only_here.py")


def test_hpo_run_with_a_missing_working_dir_exits_2_with_nothing_written(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(json.dumps(_experiment("w")))
    proc = hpo_cli("run", str(f), "--working-dir", "no-such-dir", cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2
    assert f"working_dir: must be an existing directory, but got '{tmp_path / 'no-such-dir'}'" in proc.stderr
    assert not (tmp_path / "hpo_results").exists()


def test_a_working_dir_inside_a_ray_job_with_its_own_is_refused_before_ray_init(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.ray_env import ray_session

    # what Ray's job supervisor hands a driver started by `ray job submit --working-dir code`
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}}))
    with pytest.raises(HpoConfigError, match=r"^working_dir: must not be given inside a Ray job that has a "
                                             r"working directory of its own"):
        with ray_session("127.0.0.1:1", {"working_dir": str(tmp_path), "excludes": []}):
            pass  # never reached: nothing is started or joined


# -- on the real two-node cluster ----------------------------------------------------------------


@pytest.mark.slow
def test_a_trainable_shipped_with_working_dir_runs_from_rays_copy_on_every_node(tmp_path: Path,
                                                                                ray_address: str) -> None:
    code = _code(tmp_path)
    (tmp_path / "exps").mkdir()
    (tmp_path / "cwd").mkdir()
    exp = tmp_path / "exps" / "exp.yaml"
    # The first trial waits for a second one to run at the same time, which only the other node can
    # hold (one CPU each): both nodes run trials, however slowly the second one's worker starts.
    meet = tmp_path / "meet"
    meet.mkdir()
    exp.write_text(json.dumps(_experiment("shipped", space={"x": {"type": "float", "low": 0, "high": 1},
                                                            "sleep": 0.5, "meet": str(meet), "meet_n": 2})))
    # From a directory that is neither the code's nor the file's; the cluster's PYTHONPATH has only the repository.
    out = hpo_cli("run", str(exp), "--working-dir", str(code), "--address", ray_address, "--json",
                  cwd=tmp_path / "cwd")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["num_completed"] == 4 and summary["nodes"] == 2
    run_dir = Path(summary["storage_path"])
    files = _source_files(run_dir)
    assert len(files) == 4
    assert all(RAY_COPY in f and f.endswith("/wd_trainable.py") and not f.startswith(str(code)) for f in files), files
    assert json.loads((run_dir / "hpo_state.json").read_text())["experiment"]["working_dir"] == str(code)


@pytest.mark.slow
def test_resume_ships_the_recorded_working_dir_again(tmp_path: Path, ray_address: str) -> None:
    code = _code(tmp_path)
    (tmp_path / "exps").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "resume").mkdir()
    exp = tmp_path / "exps" / "exp.yaml"
    marks = tmp_path / "marks"
    marks.mkdir()
    exp.write_text(json.dumps(_experiment("again", working_dir="../code", num_samples=8, max_concurrent=2,
                                          space={"x": {"type": "float", "low": 0, "high": 1}, "sleep": 1.5,
                                                 "marks": str(marks)})))
    proc = start_hpo(tmp_path / "run", "run", str(exp), "--address", ray_address, "--json")
    wait_for(lambda: len(list(marks.iterdir())) >= 2, proc, what="two trials done")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    first = json.loads(out.strip().splitlines()[-1])
    assert first["num_trials"] < 8
    run_dir = Path(first["storage_path"])
    # From another directory, without --working-dir: the run's state says what to ship.
    out2 = hpo_cli("resume", str(run_dir), "--address", ray_address, "--json", cwd=tmp_path / "resume")
    summary = json.loads(out2.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 8 and summary["num_errored"] == 0
    assert summary["num_completed"] + summary["num_cut"] == 8 and summary["num_completed"] > first["num_completed"]
    files = _source_files(run_dir)
    assert len(files) >= summary["num_completed"]
    assert all(RAY_COPY in f and not f.startswith(str(code)) for f in files), files


@pytest.mark.slow
def test_a_working_dir_needs_hpo_to_start_or_join_ray_itself(tmp_path: Path, ray_address: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import hpo

    monkeypatch.setattr(sys, "path", list(sys.path))
    code = _code(tmp_path, module="wd_in_process")
    with pytest.raises(HpoConfigError, match=r"^working_dir: needs hpo to start or join Ray itself"):
        hpo.run(_experiment("inproc", module="wd_in_process", storage_path=str(tmp_path / "runs")),
                working_dir=code, address=ray_address)  # this test process's Ray was started without one
    assert not (tmp_path / "runs").exists()
