"""hpo's shims over Ray internals (hpo/_compat/ray.py, hpo/_compat/ray_start.py): without a Ray
cluster, and on a local Ray (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_TELEMETRY = """
import json, sys
import ray._common.usage.usage_lib as lib
from ray.air._internal import usage
from ray.tune import Callback
from ray.tune.logger import JsonLoggerCallback, LoggerCallback
from hpo._compat.ray_start import lean_callback_telemetry

class Mine(Callback): pass
class MyLogger(LoggerCallback): pass

recorded = []
lib.record_extra_usage_tag = lambda key, value, *a, **k: recorded.append((lib.TagKey.Name(key), value))
callbacks = [Mine(), MyLogger(), JsonLoggerCallback(), Mine()]
original = usage.tag_callbacks
with lean_callback_telemetry():
    usage.tag_callbacks(callbacks)
imported = sorted(m for m in ("mlflow", "wandb", "ray.air.integrations.mlflow", "ray.air.integrations.comet")
                  if m in sys.modules)
restored = usage.tag_callbacks is original
print(json.dumps({"recorded": recorded, "imported": imported, "restored": restored,
                  "ray": dict(usage._count_callbacks(callbacks))}))
"""


def test_callback_telemetry_records_rays_tag_without_importing_the_integrations() -> None:
    out = subprocess.run([sys.executable, "-c", _TELEMETRY], capture_output=True, text=True, check=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["imported"] == []  # Ray's own tag_callbacks imports MLflow, W&B, Comet and Aim's integrations
    assert res["restored"]
    [(key, value)] = res["recorded"]
    assert key == "AIR_CALLBACKS" and json.loads(value) == res["ray"]  # the same tag Ray records
    assert res["ray"] == {"CustomCallback": 2, "CustomLoggerCallback": 1, "JsonLoggerCallback": 1}


_MEANWHILE = """
import json, sys, threading
from hpo._compat.ray_start import import_meanwhile

before = "email.mime.multipart" in sys.modules
thread = import_meanwhile(["email.mime.multipart", "hpo_no_such_module", "json"])
thread.join(60)
failed = None
try:
    import hpo_no_such_module  # noqa: F401
except ModuleNotFoundError as exc:
    failed = str(exc)
print(json.dumps({"before": before, "imported": "email.mime.multipart" in sys.modules, "failed": failed,
                  "thread": thread.name, "nothing_left": import_meanwhile(["json", "email.mime.multipart"]) is None}))
"""


def test_import_meanwhile_imports_in_a_thread_and_leaves_a_failure_to_the_callers_own_import() -> None:
    out = subprocess.run([sys.executable, "-c", _MEANWHILE], capture_output=True, text=True, check=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert not res["before"] and res["imported"]
    assert res["failed"] == "No module named 'hpo_no_such_module'"  # raised where the caller imports it
    assert res["thread"] == "hpo-imports"
    assert res["nothing_left"]  # every name already imported: no thread


_LEAN_START = """
import glob, json, os, ray
from ray._private import node as node_module
from hpo._compat.ray_start import lean_local_start

methods = (node_module.Node.start_api_server, node_module.Node.start_monitor)
with lean_local_start():
    ray.init(include_dashboard=False, num_cpus=1, logging_level="ERROR")
restored = (node_module.Node.start_api_server, node_module.Node.start_monitor) == methods

@ray.remote
def square(x):
    return x * x

value = ray.get(square.remote(7))
kinds = sorted(ray._private.worker._global_node.all_processes)
commands = []
for path in glob.glob("/proc/[0-9]*/cmdline"):  # this Ray's processes: their command lines name its temp dir
    try:
        command = open(path, "rb").read().replace(b"\\0", b" ").decode(errors="replace")
    except OSError:
        continue
    if os.environ["RAY_TMPDIR"] in command:
        commands.append(command)
ray.shutdown()
print(json.dumps({"value": value, "kinds": kinds, "restored": restored,
                  "dashboard": [c for c in commands if "dashboard/dashboard.py" in c],
                  "monitor": [c for c in commands if "autoscaler/_private/monitor.py" in c],
                  "raylet": any("raylet" in c for c in commands)}))
"""


def _start_local_ray(script: str) -> dict:
    # Ray's socket paths must stay short: a temp dir of its own under /tmp, not pytest's long tmp_path
    with tempfile.TemporaryDirectory(prefix="hpo-ray-", dir="/tmp") as tmp:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "RAY_TMPDIR": tmp})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_lean_local_ray_starts_no_api_server_nor_monitor_and_runs_tasks() -> None:
    res = _start_local_ray(_LEAN_START)
    assert res["value"] == 49
    assert res["restored"]
    assert res["raylet"]  # a real local Ray
    assert res["dashboard"] == [] and res["monitor"] == []  # Ray 2.60 starts both (checked below) unless told
    assert "dashboard" not in res["kinds"] and "monitor" not in res["kinds"]
    assert {"gcs_server", "raylet", "log_monitor"} <= set(res["kinds"])


@pytest.mark.slow
def test_without_the_lean_start_ray_starts_its_api_server_and_monitor() -> None:
    # the test above would pass vacuously if Ray stopped starting them on its own
    res = _start_local_ray(_LEAN_START.replace("with lean_local_start():", "if True:"))
    assert res["dashboard"] and res["monitor"]
    assert {"dashboard", "monitor"} <= set(res["kinds"])


def test_trainable_env_vars_are_those_ray_tune_gives_its_trainable_actors(monkeypatch) -> None:
    from ray.tune.execution import class_cache

    from hpo._compat.ray_start import _TRAINABLE_ENV_DEFAULTS, _TRAINABLE_ENV_PROPAGATED, trainable_env_vars

    assert _TRAINABLE_ENV_DEFAULTS == class_cache.DEFAULT_ENV_VARS
    assert set(_TRAINABLE_ENV_PROPAGATED) == set(class_cache.ENV_VARS_TO_PROPAGATE)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.delenv("RAY_CHDIR_TO_TRIAL_DIR", raising=False)

    class Trainable:
        pass

    tune_env = class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]
    assert trainable_env_vars() == tune_env == {"PL_DISABLE_FORK": "1", "AWS_ACCESS_KEY_ID": "key"}


@pytest.mark.slow
def test_a_search_runs_its_trials_in_the_workers_ray_starts_for_it_and_starts_no_others(tmp_path) -> None:
    # Ray starts one worker per CPU as the driver connects; the trials' actors must use them
    # (without the job's env_vars they asked for a runtime environment of their own: 4 starts).
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: w\nmetric: val_accuracy\nmode: max\nstrategy: random\nnum_samples: 4\n"
                   "max_concurrent: 2\ntracking: {enabled: false}\n"
                   "task: {dataset: iris, model: mlp, epochs: 1, test_best: false}\n"
                   "space: {lr: {type: float, low: 0.001, high: 0.1, log: true}}\n"
                   f"storage_path: {tmp_path / 'runs'}\n")
    with tempfile.TemporaryDirectory(prefix="hpo-ray-", dir="/tmp") as tmp:
        out = subprocess.run([sys.executable, "-m", "hpo.cli", "run", str(exp), "--json"], capture_output=True,
                             text=True, timeout=600, env={**os.environ, "RAY_TMPDIR": tmp, "RAY_num_cpus": "2"})
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout.strip().splitlines()[-1])["num_completed"] == 4
        [raylet] = list(Path(tmp).glob("ray/session_2*/logs/raylet.out"))
        started = raylet.read_text().count("Started worker process with pid")
    assert started == 2  # two CPUs: the two workers started as the driver connected, and no more


def test_trainables_use_the_job_workers_only_while_their_env_vars_are_the_workers(monkeypatch) -> None:
    from ray.tune.execution import class_cache

    from hpo._compat.ray_start import local_worker_env, trainables_in_job_workers

    monkeypatch.delenv("PL_DISABLE_FORK", raising=False)
    with local_worker_env() as env:
        assert os.environ["PL_DISABLE_FORK"] == "1"  # inherited by a raylet started meanwhile
    assert "PL_DISABLE_FORK" not in os.environ and env["PL_DISABLE_FORK"] == "1"

    class Trainable:
        pass

    original = class_cache._ActorClassCache.get
    with trainables_in_job_workers(env):
        monkeypatch.setenv("PL_DISABLE_FORK", "1")  # as in the workers
        mine = class_cache._ActorClassCache().get(Trainable)
        assert "runtime_env" not in mine._default_options  # the workers' own environment
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "new")  # not what the workers have: Ray Tune's way
        theirs = class_cache._ActorClassCache().get(Trainable)
        assert theirs._default_options["runtime_env"]["env_vars"]["AWS_ACCESS_KEY_ID"] == "new"
    assert class_cache._ActorClassCache.get is original
