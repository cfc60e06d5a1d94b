"""A real ``mlflow server`` subprocess over HTTP, one per test session."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import _env, _proc_table, stop_processes_under

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="hpo-mlflow-srv-")
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        cmd = [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{self.dir}/mlflow.db",
               "--artifacts-destination", f"{self.dir}/artifacts", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        self.proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/log", "w"),
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, Path(f"{self.dir}/log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server did not come up: {Path(f'{self.dir}/log').read_text()[-3000:]}")

    def pids(self) -> set[int]:
        """The server and every process it started (workers, job runners)."""
        table = _proc_table()
        pids = {pid for pid, (_, cmd) in table.items() if self.dir in cmd}
        grew = True
        while grew:
            more = {pid for pid, (ppid, _) in table.items() if ppid in pids} - pids
            grew, pids = bool(more), pids | more
        return pids

    def stop(self) -> None:
        stop_processes_under(self.dir)


@pytest.fixture(scope="session")
def mlflow_server():
    server = MlflowServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
