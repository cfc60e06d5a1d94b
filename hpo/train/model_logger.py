"""Logging the best model to MLflow from a helper process made ready while the search runs.

``mlflow.pytorch.log_model`` needs torch, MLflow's PyTorch flavour and, for MLflow 3's default
``torch.export`` format, torch's export stack; the first save pays for all of it: about 4 s of
imports and warm-up on a 2-core machine, which used to come after the last trial. A
:class:`ModelLogger` started with the search runs a helper process whose warm-up thread, at the
lowest CPU priority, does that work while the trials run (in a process of its own, so it never
holds the driver's interpreter lock); at the end the helper's main thread, at normal priority,
only exports and logs the best model (0.4 s), alongside the driver's plots. It is started with
the search (starting it once the tracking store was open, after the first trial result, left
it too little time on the quickstart: 5.3 s at the end instead of 0.5 s); the tracker tells it
the store once that is open (:meth:`ModelLogger.prepare`), so it opens it ahead of time too. Without a helper
(never started, or it died) the model is logged in the driver, as :func:`log_to_mlflow` does.

The helper reads JSON lines on its stdin: the tracking store to open ahead of time (once the
driver has opened it, so its migrations are done), then one request (tracking URI, parent run,
the model's info, the registered model name); it writes one answer on its stdout. The tracking
URI, which may hold a password, never appears on a command line. It exits when its stdin closes, so it never outlives
the driver.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from hpo.train.model_file import log_to_mlflow

__all__ = ["ModelLogger"]

log = logging.getLogger("hpo")


class ModelLogger:
    """``(tracking_uri, parent_run_id, best_model_info, register_as) -> model URI``, as
    :func:`~hpo.train.model_file.log_to_mlflow`, through a helper process once :meth:`start`
    has started one. Pickled (Ray saves the tracker holding it) without its helper.

    Example:
        >>> logger = ModelLogger()
        >>> logger.start()  # doctest: +SKIP  (when the search starts)
        >>> logger.prepare(tracking_uri)  # doctest: +SKIP  (the tracker: its store is open)
        >>> uri = logger(tracking_uri, parent_run_id, info, None)  # doctest: +SKIP
        >>> logger.close()  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = False  # called or closed: no helper any more
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def start(self) -> None:
        """Start the helper (nothing happens if one runs, or it cannot start: the model is then
        logged in this process)."""
        with self._lock:
            if self._proc is not None or self._done:
                return
            package_root = str(Path(__file__).resolve().parents[2])  # hpo importable as the driver has it
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                               if p)}
            try:
                self._proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, env=env, close_fds=True)
            except OSError as exc:
                log.debug("hpo: no model-logging helper (%s): the best model is logged in the driver", exc)

    def prepare(self, tracking_uri: str) -> None:
        """The search's tracking store is open (its migrations done; the tracker calls this once
        the first trial result is in): the helper (started here if it was not) opens it too."""
        self.start()
        with self._lock:
            if self._proc is not None and self._proc.stdin is not None:
                try:
                    self._proc.stdin.write(json.dumps({"prepare": tracking_uri}).encode() + b"\n")
                    self._proc.stdin.flush()
                except OSError:
                    pass  # it died: the model is logged here

    def __call__(self, tracking_uri: str, parent_run_id: str, info: dict[str, Any], register_as: str | None) -> str:
        with self._lock:
            proc, self._proc, self._done = self._proc, None, True
        if proc is not None:
            answer = _ask(proc, {"tracking_uri": tracking_uri, "parent_run_id": parent_run_id, "info": info,
                                 "register_as": register_as})
            if answer is not None:
                if "error" in answer:
                    raise RuntimeError(answer["error"])  # MLflow's own failure, as it would be raised here
                info.update(answer["info"])
                return str(answer["uri"])
            log.warning("hpo: the model-logging helper ended without an answer (exit code %s); logging the best "
                        "model in the driver", proc.returncode)
        return log_to_mlflow(tracking_uri, parent_run_id, info, register_as)

    def close(self) -> None:
        """Stop the helper when the search ends without a model to log (closing its stdin ends it)."""
        with self._lock:
            proc, self._proc, self._done = self._proc, None, True
        if proc is not None:
            _end(proc)


def _ask(proc: subprocess.Popen[bytes], request: dict[str, Any]) -> dict[str, Any] | None:
    """Send the request, wait for the answer; None when the helper died first."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
    except (OSError, ValueError):
        line = b""
    finally:
        _end(proc)
    try:
        answer = json.loads(line) if line else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _end(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the helper process --------------------------------------------------------------------------

_saving = threading.Lock()  # one save at a time: torch.export keeps global state while it traces
_asked = threading.Event()  # the best model came: the warm-up saves nothing any more
_store: list[str] = []  # the tracking store to open ahead of time (prepare)
_prepared = threading.Event()


def _warm_up() -> None:
    """Import what logging a model needs and save a tiny model once (torch.export's first call
    compiles its own machinery), at the lowest CPU priority: this thread only uses what the
    search leaves idle. A failure here only means the real save pays for it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: this thread only
    except (AttributeError, OSError):
        pass
    try:
        _save_a_tiny_model()
        while not _asked.is_set():  # then open the store once the driver has (no migrations of our own)
            if _prepared.wait(0.5):
                from mlflow.tracking import MlflowClient

                with _saving:
                    if not _asked.is_set():
                        MlflowClient(_store[0]).search_experiments(max_results=1)
                break
    except Exception as exc:  # noqa: BLE001
        log.debug("hpo: model-logging warm-up failed: %s", exc)


# imported one by one: once the best model comes, the warm-up stops after the one it is in and
# the helper's main thread, at normal priority, imports the rest
_MODULES = ("numpy", "torch", "mlflow", "mlflow.pytorch", "torch.export", "hpo.train.models", "hpo.train.model_file")


def _save_a_tiny_model() -> None:
    import importlib
    import tempfile

    for name in _MODULES:
        if _asked.is_set():
            return
        importlib.import_module(name)
    import mlflow.pytorch
    import numpy as np
    import torch

    torch.set_num_threads(1)  # tiny models: no thread pool spinning next to the driver
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    example = np.zeros((2, 3), dtype=np.float32)
    with torch.no_grad():
        signature = mlflow.models.infer_signature(example, net(torch.as_tensor(example)).numpy())
    with _saving, tempfile.TemporaryDirectory(prefix="hpo-warm-") as tmp:
        if not _asked.is_set():
            mlflow.pytorch.save_model(net, os.path.join(tmp, "m"), signature=signature, input_example=example,
                                      pip_requirements=["torch"])


def _serve(requests: IO[str], answers: IO[str]) -> None:
    while True:
        line = requests.readline()
        if not line:
            return  # the search ended without a model to log
        request = json.loads(line)
        if "prepare" not in request:
            break
        _store[:] = [request["prepare"]]
        _prepared.set()
    info = dict(request["info"])
    _asked.set()
    try:
        with _saving:  # after a save the warm-up is in, if any
            uri = log_to_mlflow(request["tracking_uri"], request["parent_run_id"], info, request["register_as"])
        answer: dict[str, Any] = {"uri": uri, "info": info}
    except Exception as exc:  # noqa: BLE001  (reported to the driver, which raises it)
        answer = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    answers.write(json.dumps(answer, default=str) + "\n")
    answers.flush()


def main() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; EOF ends this
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the answer
    threading.Thread(target=_warm_up, name="hpo-warm-up", daemon=True).start()
    try:
        _serve(sys.stdin, answers)
    finally:
        answers.close()
        sys.stderr.flush()
        os._exit(0)  # no teardown of torch and MLflow, nor waiting for the warm-up


if __name__ == "__main__":
    main()
