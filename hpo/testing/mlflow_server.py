"""A local ``mlflow server`` subprocess over HTTP, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hpo.testing.processes import free_port, processes_under, stop_processes_under


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite store in a fresh temporary directory.

    Example::

        server = MlflowServer(); server.start()   # waits on /health (about 25 s here)
        ...  # tracking_uri=server.uri
        server.stop()
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="hpo-mlflow-srv-")
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def log(self) -> str:
        p = Path(self.dir, "server.log")
        return p.read_text()[-3000:] if p.exists() else ""

    def start(self, timeout: float = 120) -> None:
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.dir}/mlflow.db",
               "--artifacts-destination", f"{self.dir}/artifacts", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        # MLflow 3.17's job runner (GenAI jobs, not needed for tracking) keeps seven polling
        # processes busy: about half a core on this machine even when idle.
        env = {**(self.env or os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(Path(self.dir, "server.log"), "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mlflow server did not come up in {timeout} s: {self.log}")

    def pids(self) -> set[int]:
        """The server and every process it started (workers, job runners)."""
        return processes_under(self.dir)

    def stop(self) -> None:
        stop_processes_under(self.dir)
