"""The MLflow writer process: every request to the tracking store happens here.

The search's driver runs Ray Tune's control loop; MLflow's client (SQLAlchemy for SQLite,
HTTP + JSON for a server) is CPU-heavy Python that would hold the driver's GIL and delay Tune.
So the driver only sends small pickled events over a pipe, and this process, at a lower CPU
priority than the trials, batches them into MLflow: per trial and flush window at most one
create, one ``log_batch`` and one end request. It retries a down or slow server with backoff.

Protocol on stdin: length-prefixed pickles: first the config dict, then events
``(kind, trial_id, payload)``; ``("finish", "", {...})`` ends it, and the reply (experiment id,
parent run id, what could not be recorded) is one pickle on stdout. EOF without "finish"
(the driver was killed) flushes what arrived and exits.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import queue
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("hpo.tracking")

TRIAL_TAG = "hpo.trial_id"
PARENT_TAG = "mlflow.parentRunId"
_MAX_PARAMS, _MAX_METRICS = 100, 1000


def send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    (n,) = struct.unpack("!I", head)
    return pickle.loads(stream.read(n))


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested keys become ``a.b``; values are strings MLflow accepts (6000 characters at most)."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_params(v, f"{key}."))
        else:
            out[key] = str(v)[:6000]
    return out


class Writer:
    """Holds the MLflow client and the map of trials to child runs."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri: str = cfg["tracking_uri"]
        self.experiment_name: str = cfg["experiment_name"]
        self.run_name: str = cfg["run_name"]
        self.state_path: str = cfg["state_path"]
        self.parent_params: dict[str, Any] = cfg["parent_params"]
        self.parent_tags: dict[str, str] = cfg["parent_tags"]
        self.artifacts: dict[str, str] = cfg["artifacts"]
        self.flush_interval_s: float = cfg["flush_interval_s"]
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._runs: dict[str, str] = {}  # trial id -> child run id
        self._logged_step: dict[str, int] = {}  # trial id -> last step already in MLflow

    def _read_state(self) -> dict[str, Any]:
        p = Path(self.state_path)
        return json.loads(p.read_text()) if p.exists() else {}

    def _write_state(self, **updates: Any) -> None:
        p = Path(self.state_path)
        state = {**self._read_state(), **updates}
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, default=str))
        tmp.replace(p)  # a crash never leaves a half-written state file

    def _open(self) -> None:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        self.experiment_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(
                self.experiment_name, tags={"mlflow.experimentKind": "custom_model_development"}
            )
        )
        self.parent_run_id = self._read_state().get("parent_run_id")
        if self.parent_run_id:
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self._find_children()
        else:
            run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=self.parent_tags)
            self.parent_run_id = run.info.run_id
            self._write_state(parent_run_id=self.parent_run_id, mlflow_experiment_id=self.experiment_id,
                              tracking_uri=self.tracking_uri)
            self._log_batch(self.parent_run_id, params=flatten_params(self.parent_params))
            for name, text in self.artifacts.items():
                self.client.log_text(self.parent_run_id, text, name)

    def _find_children(self) -> None:
        runs = self.client.search_runs(
            [str(self.experiment_id)], filter_string=f"tags.{PARENT_TAG} = '{self.parent_run_id}'", max_results=50000
        )
        for r in runs:
            tid = r.data.tags.get(TRIAL_TAG)
            if tid:
                self._runs[tid] = r.info.run_id
                steps = [m.step for k in r.data.metrics for m in self.client.get_metric_history(r.info.run_id, k)]
                self._logged_step[tid] = max(steps, default=0)

    def _child(self, trial_id: str) -> str:
        run_id = self._runs.get(trial_id)
        if run_id is None:
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id, "hpo.status": "running"}
            run = self.client.create_run(str(self.experiment_id), run_name=trial_id, tags=tags)
            run_id = self._runs[trial_id] = run.info.run_id
        return run_id

    def _write(self, events: list[tuple[str, str, Any]]) -> None:
        """Write one flush window: per trial at most one create, one batch and one end request."""
        params: dict[str, dict[str, str]] = {}
        metrics: dict[str, list[Any]] = {}
        tags: dict[str, dict[str, str]] = {}
        ends: dict[str, tuple[str, str]] = {}  # trial id -> (status text, run status)
        steps: dict[str, int] = {}
        from mlflow.entities import Metric

        for kind, tid, payload in events:
            if kind == "reconcile":
                self._drop_orphans(set(payload))
            elif kind == "start":
                self._child(tid)
                params[tid] = flatten_params(payload)  # rides along with the trial's first batch
            elif kind == "result":
                step, ts, node, values = payload
                if step <= steps.get(tid, self._logged_step.get(tid, 0)):
                    continue  # already in MLflow (a restored trial replays from its checkpoint)
                for k, v in values.items():
                    metrics.setdefault(tid, []).append(Metric(k, v if math.isfinite(v) else float("nan"), ts, step))
                tags.setdefault(tid, {}).update({"hpo.node": str(node), "hpo.last_step": str(step)})
                steps[tid] = step
            else:
                ends[tid] = payload
        run_status: dict[str, str] = {}
        for tid, (text, status) in ends.items():
            tags.setdefault(tid, {})["hpo.status"] = text
            run_status[tid] = status
        for tid in params.keys() | metrics.keys() | tags.keys():
            self._log_batch(self._child(tid), params=params.get(tid), metrics=metrics.get(tid), tags=tags.get(tid))
            if tid in steps:
                self._logged_step[tid] = steps[tid]  # only once written: a retry resends, never skips
        for tid, status in run_status.items():
            self._terminate(self._child(tid), status)

    def _log_results(self, parent: str, results: Any) -> None:
        """Leaderboard (CSV and HTML) and plots on the parent run."""
        import tempfile

        from hpo.plots import all_plots

        table = results.table()
        if len(table) and results.metric in table:
            table = table.sort_values(results.metric, ascending=results.modes[0] == "min", na_position="last")
        with tempfile.TemporaryDirectory(prefix="hpo-mlflow-") as tmp:
            d = Path(tmp)
            table.to_csv(d / "leaderboard.csv", index=False)
            table.to_html(d / "leaderboard.html", index=False)
            all_plots(results, d)
            self.client.log_artifacts(parent, tmp)

    def _terminate(self, run_id: str, status: str) -> None:
        """End a run in one request (``MlflowClient.set_terminated`` also fetches the run to print
        its URL on stdout, which would interleave with ``--json`` output)."""
        from mlflow.entities import RunStatus

        self.client._tracking_client.store.update_run_info(
            run_id, run_status=RunStatus.from_string(status), end_time=int(time.time() * 1000), run_name=None
        )

    def _drop_orphans(self, known: set[str]) -> None:
        """A search killed between two of Ray's state saves forgets its newest trials, and runs
        new ones in their place on resume: delete their child runs so no trial is recorded twice."""
        for tid in [t for t in self._runs if t not in known]:
            self.client.delete_run(self._runs.pop(tid))
            self._logged_step.pop(tid, None)

    def _log_batch(self, run_id: str, params: dict[str, str] | None = None, metrics: list | None = None,
                   tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Param, RunTag

        p = [Param(k, v) for k, v in (params or {}).items()]
        m = list(metrics or [])
        t = [RunTag(k, v) for k, v in (tags or {}).items()]
        while p or m or t:
            self.client.log_batch(run_id, params=p[:_MAX_PARAMS], metrics=m[:_MAX_METRICS], tags=t[:_MAX_PARAMS])
            p, m, t = p[_MAX_PARAMS:], m[_MAX_METRICS:], t[_MAX_PARAMS:]

    # -- main loop ---------------------------------------------------------------------------

    def run(self, inbox: queue.Queue) -> dict[str, Any]:
        """Write events until "finish" (or EOF); return the reply for the driver."""
        backoff, pending = 1.0, []
        finish: dict[str, Any] | None = None
        deadline = math.inf
        ended = False
        while True:
            wait = self.flush_interval_s if self.parent_run_id and not ended else 0.05
            try:
                item = inbox.get(timeout=wait)
                while True:
                    if item is None or item[0] == "finish":
                        ended, finish = True, (item[2] if item else None)
                        deadline = time.monotonic() + (finish or {}).get("flush_timeout_s", 120.0)
                    else:
                        pending.append(item)
                    item = inbox.get_nowait()
            except queue.Empty:
                pass
            try:
                if self.parent_run_id is None or self.experiment_id is None:
                    self._open()
                self._write(pending)
                pending, backoff = [], 1.0
            except Exception as exc:  # server down or slow: keep the events, retry with backoff
                log.warning("MLflow at %s unavailable (%s); retrying in %.0f s", self.tracking_uri,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, backoff)
                if ended and time.monotonic() > deadline:
                    return self._reply(sorted({tid for _, tid, _ in pending if tid}) or ["the search"])
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if ended:
                if finish is not None:
                    self._finish(finish)
                return self._reply([])

    def _reply(self, unlogged: list[str]) -> dict[str, Any]:
        return {"experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id, "unlogged": unlogged}

    def _finish(self, finish: dict[str, Any]) -> None:
        """Leaderboard, plots, summary and the parent's final status."""
        results, failed = finish["results"], finish["failed"]
        parent = self.parent_run_id
        assert parent is not None
        summary = {**results.summary(), "metric": results.metric}
        try:
            self._log_results(parent, results)
            best = summary.get("best_config") or {}
            self._log_batch(parent, tags={
                "hpo.best_config": json.dumps(best, default=str)[:5000],
                "hpo.num_trials": str(summary.get("num_trials")),
                "hpo.num_pruned": str(summary.get("num_pruned")),
                "hpo.num_errored": str(summary.get("num_errored")),
            })
            metric = summary.get("best_metric")
            name = f"best_{summary['metric']}"
            already = self.client.get_run(parent).data.metrics.get(name) == metric  # a replay logs it once
            if isinstance(metric, (int, float)) and math.isfinite(metric) and not already:
                from mlflow.entities import Metric

                self._log_batch(parent, metrics=[Metric(name, float(metric), int(time.time() * 1000), 0)])
            self.client.log_text(parent, json.dumps(summary, indent=2, default=str), "summary.json")
            self._terminate(parent, "FAILED" if failed else "FINISHED")
        except Exception as exc:
            log.warning("MLflow could not record the search summary: %s", exc)


def main() -> None:
    """Entry point of the writer process (``python -m hpo.tracking._writer``)."""
    try:
        os.nice(10)  # the trials come first: writes fill the gaps between them
    except OSError:
        pass
    # Fail fast per request and let the writer's own backoff do the waiting.
    for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")):
        os.environ.setdefault(var, value)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the pipe
    writer = Writer(receive(stdin))
    inbox: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            while True:
                inbox.put(receive(stdin))
        except (EOFError, OSError, pickle.UnpicklingError):
            inbox.put(None)  # the driver is gone: flush what arrived, then stop

    threading.Thread(target=read, daemon=True).start()
    try:
        send(stdout, writer.run(inbox))
    except (BrokenPipeError, OSError):
        pass  # the driver is gone
    # The reader thread is blocked on stdin: skip interpreter finalization, which would wait on it.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
