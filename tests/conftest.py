"""Shared fixtures: one real two-node Ray cluster (``ray start`` processes) per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hpo.testing.processes import free_port, proc_table, processes_under, stop_processes_under

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Worker processes import test trainables (tests.*) by reference, like a user's own module.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_AUTH_MODE"] = "disabled"
    env.setdefault("RAY_worker_niceness", "0")  # trials at normal priority, as cluster/*.yaml start nodes
    return env


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Address of a two-node Ray cluster on this machine: a head and a worker, one CPU each."""
    import ray

    port = free_port()
    address = f"127.0.0.1:{port}"
    env = _env()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    common = ["--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    "--include-dashboard=false", *common], check=True, env=env, capture_output=True)
    try:
        subprocess.run([RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                       check=True, env=env, capture_output=True)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(address=address, logging_level="WARNING")
        deadline = time.time() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.time() < deadline, "worker node did not join"
            time.sleep(0.5)
        yield address
    finally:
        ray.shutdown()
        stop_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class LocalCluster:
    """A Ray cluster of ``ray start`` processes on this machine (:func:`ray_cluster`)."""

    address: str
    temp_dir: str
    worker_ports: list[int] = field(default_factory=list)  # each worker node's node-manager port

    def node_id(self, port: int) -> str | None:
        """The Ray node id of the worker node on node-manager port ``port`` (from its raylet's command line)."""
        for _, cmd in proc_table().values():
            if "raylet/raylet" in cmd and f"--node_manager_port={port} " in cmd and self.temp_dir in cmd:
                return cmd.split("--node_id=", 1)[1].split()[0]
        return None

    def kill_node(self, port: int) -> set[int]:
        """``kill -9`` a worker node: its raylet and every process under it (agents, trial workers)."""
        import signal

        pids = processes_under(f"--node_manager_port={port} ")  # a port bound by this node's raylet alone
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids


@contextmanager
def ray_cluster(head_cpus: int, worker_cpus: list[int], env: dict[str, str] | None = None) -> Iterator[LocalCluster]:
    """A head node and one worker node per entry of ``worker_cpus`` (its CPUs), as ``ray start``
    processes sharing a temp dir; every process under it is stopped afterwards, also on failure."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    cluster = LocalCluster(f"127.0.0.1:{port}", temp_dir)
    full_env = {**_env(), **(env or {})}
    common = ["--disable-usage-stats", f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        f"--num-cpus={head_cpus}", *common], check=True, env=full_env, capture_output=True)
        for cpus in worker_cpus:  # one after the other: started at once on a busy machine, one times out
            nm_port = free_port()
            subprocess.run([RAY, "start", f"--address={cluster.address}", f"--num-cpus={cpus}",
                            f"--node-manager-port={nm_port}", *common], check=True, env=full_env, capture_output=True)
            cluster.worker_ports.append(nm_port)
        yield cluster
    finally:
        stop_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh directory, so mlflow.db and hpo_results land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def hpo_cli(*args: str, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``hpo`` command in a subprocess. One still running after ``timeout`` is killed and
    fails the test with the end of its output (pytest's own report of the timeout cuts it short)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out, err = (s.decode(errors="replace") if isinstance(s, bytes) else s or "" for s in (exc.stdout, exc.stderr))
        raise AssertionError(f"hpo {' '.join(args)} still running after {timeout:g} s (killed); the end of its "
                             f"output:\n{out[-3000:]}\n{err[-12000:]}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"hpo {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def quick_benchmark(module: str, out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m benchmarks.<module> --quick --out OUT [ARGS]``; fail with its output when it fails."""
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--quick", "--out", str(out), *args],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def start_hpo(cwd: Path, *args: str) -> subprocess.Popen:
    """Start the ``hpo`` command in the background, in its own process group (killable as one)."""
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def read_until(proc: subprocess.Popen, text: str) -> str:
    """Read ``proc``'s stderr (a :func:`start_hpo` process) up to the first line holding ``text``,
    e.g. the progress line of a first completed trial; returns what it read. Fails if ``proc``
    ends first. Files are no such signal: Ray copies ``result.json`` to the storage path only now
    and then, on a fast machine not before most of a short search is done."""
    seen = []
    for line in proc.stderr:  # type: ignore[union-attr]
        seen.append(line)
        if text in line:
            break
    assert proc.poll() is None, f"exited before a line with {text!r}:\n{''.join(seen)[-3000:]}"
    return "".join(seen)


def wait_for(cond: Any, proc: subprocess.Popen, timeout: float = 180, what: str = "") -> None:
    """Poll ``cond()`` until true; fail if ``proc`` exits first (with its stderr) or on timeout."""
    import sqlite3

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}:\n{proc.communicate()[1][-3000:]}")
        try:
            if cond():
                return
        except sqlite3.Error:  # a store being written by the other process
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
