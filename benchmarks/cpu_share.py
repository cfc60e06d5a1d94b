"""Where the CPU goes during a benchmark run: every process below one root, sampled from /proc.

    with ProcessCpu(proc.pid) as cpu:
        proc.wait()
    cpu.by_role()  # {"driver": 12.1, "trial workers": 24.9, "raylet": 1.2, ...} in CPU seconds

Linux only (reads ``/proc``); elsewhere :meth:`ProcessCpu.by_role` is empty. Samples are
``interval`` seconds apart and each sample's CPU is put under the role the process has then (a
Ray worker's title changes as it takes a trial); what a process spends after its last sample is
missed, so the totals are a floor, good to a few tenths of a second per process.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# first match wins: (role, substring of the command line or of the process name)
ROLES = (
    ("hpo driver", "hpo run"),
    ("hpo driver", "hpo resume"),
    ("trial workers", "ray::ImplicitFunc"),
    ("trial workers", "ray::_Inner"),
    ("trial workers", "ray::FunctionTrainable"),
    ("idle Ray workers", "ray::IDLE"),
    ("MLflow model helper", "hpo.train.model_logger"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs_server"),
    ("Ray log monitor", "log_monitor.py"),
    ("Ray dashboard/agents", "dashboard"),
    ("Ray dashboard/agents", "runtime_env"),
    ("Ray monitor", "monitor.py"),
    ("other Ray workers", "ray::"),
    ("optuna workers", "--child optuna-worker"),
    ("Python (benchmark child)", "--child"),
)


def _role(cmdline: str, root: bool) -> str:
    if root and "--child" not in cmdline:
        return "driver"
    for role, needle in ROLES:
        if needle in cmdline:
            return role
    return "other"


def proc_stat(path: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) from a ``/proc/<pid>/stat`` or ``/proc/<pid>/task/<tid>/stat`` file;
    None if it is gone."""
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class ProcessCpu:
    """Samples the CPU time of ``root`` and all its descendants until the ``with`` block ends."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root, self.interval = root, interval
        self.last: dict[int, float] = {}  # pid -> CPU seconds at its last sample
        self.spent: dict[str, float] = {}  # role -> CPU seconds, each sample's delta under the role it had then
        self.timeline: list[tuple[float, str, float]] = []  # (sample time, role, CPU seconds since the last)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = self.t1 = time.time()

    def __enter__(self) -> ProcessCpu:
        self.t0 = time.time()
        if Path("/proc/self/stat").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.t1 = time.time()

    def _sample(self) -> None:
        now = time.time()
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                st = proc_stat(f"/proc/{entry.name}/stat")
                if st is not None:
                    parents[int(entry.name)], cpu[int(entry.name)] = st
        below = {self.root}
        grew = True
        while grew:  # descendants of the root
            grew = False
            for pid, ppid in parents.items():
                if ppid in below and pid not in below:
                    below.add(pid)
                    grew = True
        for pid in below & cpu.keys():
            # a Ray worker changes its title (ray::IDLE -> ray::ImplicitFunc): the role of each sample
            role = _role(_cmdline(pid), pid == self.root)
            self.spent[role] = self.spent.get(role, 0.0) + cpu[pid] - self.last.get(pid, 0.0)
            if cpu[pid] > self.last.get(pid, 0.0):
                self.timeline.append((now, role, cpu[pid] - self.last.get(pid, 0.0)))
            self.last[pid] = cpu[pid]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def by_role(self, start: float | None = None, end: float | None = None) -> dict[str, float]:
        """CPU seconds per role, largest first: all of them, or those of the samples taken
        between ``start`` and ``end`` (wall-clock times; a sample covers the interval before it)."""
        if start is None and end is None:
            spent = self.spent
        else:
            spent = {}
            for t, role, secs in self.timeline:
                if (start is None or t > start) and (end is None or t <= end + self.interval):
                    spent[role] = spent.get(role, 0.0) + secs
        return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
