"""Starting and stopping local service processes (Ray nodes, MLflow servers) by pid."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_table() -> dict[int, tuple[int, str]]:
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


def processes_under(marker: str) -> set[int]:
    """Pids whose command line names ``marker``, and all their descendants (Ray's agents and
    workers, MLflow's job runners rename themselves)."""
    table = proc_table()
    pids = {pid for pid, (_, cmd) in table.items() if marker in cmd and pid != os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in pids} - pids
        grew, pids = bool(more), pids | more
    return pids


def stop_processes_under(marker: str, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, each of :func:`processes_under` by pid; other processes are left alone."""
    pids = processes_under(marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
