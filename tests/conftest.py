"""Shared fixtures: one real two-node Ray cluster (``ray start`` processes) per test session."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Worker processes import test trainables (tests.*) by reference, like a user's own module.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), read from /proc."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            table[int(d.name)] = (ppid, cmd)
    return table


def stop_processes_under(marker: str) -> None:
    """Stop, by pid, every process whose command line names ``marker`` and all their descendants
    (Ray's agents and workers rename themselves), leaving other Ray clusters on the machine alone."""
    table = _proc_table()
    pids = {pid for pid, (_, cmd) in table.items() if marker in cmd and pid != os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in pids} - pids
        grew, pids = bool(more), pids | more
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Address of a two-node Ray cluster on this machine: a head and a worker, one CPU each."""
    import ray

    port = _free_port()
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


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh directory, so mlflow.db and hpo_results land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def hpo_cli(*args: str, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``hpo`` command in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"hpo {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
