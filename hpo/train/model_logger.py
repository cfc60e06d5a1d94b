"""Logging the best model to MLflow, its torch half done by a helper process made ready while the search runs.

Logging a PyTorch model is two halves: saving it as an MLflow model directory (torch, MLflow's
PyTorch flavour and, for MLflow 3's default ``torch.export`` format, torch's export stack; the
first save pays for all of it, about 4 s of imports and warm-up on a 2-core machine) and logging
that directory on the run (the tracking store: the logged model, its files, the run's output,
the registry). A :class:`ModelLogger` started with the search runs a helper process whose
warm-up thread, at the lowest CPU priority, does the first half's imports and one save of a tiny
model while the trials run (in a process of its own, so it never holds the driver's interpreter
lock); at the end the helper's main thread, at normal priority, only saves the best model
(:func:`~hpo.train.model_file.save_for_mlflow`), and the driver, whose tracking store is open
already, logs what it saved (:func:`~hpo.train.model_file.log_saved_model`), alongside its plots.
(The helper used to log the model itself, which meant opening the tracking store a second time
in the helper: SQLAlchemy's set-up of MLflow's tables, 2-5 s at the lowest priority, still under
way when the search ended.) Without a helper (never started, or it died) the model is saved and
logged in the driver, as :func:`~hpo.train.model_file.log_to_mlflow` does.

The helper reads one JSON request on its stdin (the model's info and the directory to save it
in) and writes one answer on its stdout; it never sees the tracking URI. It exits when its stdin
closes, so it never outlives the driver.
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

from hpo.train.model_file import log_saved_model, log_to_mlflow, save_for_mlflow, save_model_dir

__all__ = ["ModelLogger"]

log = logging.getLogger("hpo")


class ModelLogger:
    """``(tracking_uri, parent_run_id, best_model_info, register_as) -> model URI``, as
    :func:`~hpo.train.model_file.log_to_mlflow`, through a helper process once :meth:`start`
    has started one. Pickled (Ray saves the tracker holding it) without its helper.

    Example:
        >>> logger = ModelLogger()
        >>> logger.start()  # doctest: +SKIP  (when the search starts)
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

    def __call__(self, tracking_uri: str, parent_run_id: str, info: dict[str, Any], register_as: str | None) -> str:
        with self._lock:
            proc, self._proc, self._done = self._proc, None, True
        if proc is not None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="hpo-model-") as tmp:
                directory = os.path.join(tmp, "model")
                answer = _ask(proc, {"info": info, "save_to": directory})
                if answer is not None:
                    if "error" in answer:
                        raise RuntimeError(answer["error"])  # MLflow's or torch's own failure, as raised here
                    return log_saved_model(tracking_uri, parent_run_id, directory, info, register_as)
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


def _warm_up() -> None:
    """Import what saving a model needs and save a tiny model once (torch.export's first call
    compiles its own machinery; MLflow's check of the input example loads it back), at the lowest
    CPU priority: this thread only uses what the search leaves idle. A failure here only means
    the real save pays for it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: this thread only
    except (AttributeError, OSError):
        pass
    try:
        _save_a_tiny_model()
    except Exception as exc:  # noqa: BLE001
        log.debug("hpo: model-logging warm-up failed: %s", exc)


# Imported one by one: once the best model comes, the warm-up stops after the one it is in and
# the helper's main thread, at normal priority, imports the rest. The private modules after
# mlflow.pytorch are what the first torch.export and MLflow's check of the input example import
# (torch 2.13, MLflow 3.17, by `python -X importtime`): 1.3 s of the first save's 2 s, which
# would otherwise run under the save lock the main thread may have to wait on. A name missing
# in another version only means that import comes with the first save.
_MODULES = ("numpy", "torch", "mlflow", "mlflow.pytorch", "sympy", "torch.fx.experimental.symbolic_shapes",
            "torch._dynamo", "torch.export._trace", "mlflow.pyfunc.loaders", "torch._inductor.ir",
            "hpo.train.models", "hpo.train.model_file")


def _save_a_tiny_model() -> None:
    import importlib
    import tempfile

    for name in _MODULES:
        if _asked.is_set():
            return
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    import numpy as np
    import torch

    torch.set_num_threads(1)  # tiny models: no thread pool spinning next to the driver
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    example = np.zeros((2, 3), dtype=np.float32)
    with torch.no_grad():
        output = net(torch.as_tensor(example)).numpy()
    with _saving, tempfile.TemporaryDirectory(prefix="hpo-warm-") as tmp:
        if not _asked.is_set():
            save_model_dir(net, example, output, os.path.join(tmp, "m"))


def _serve(requests: IO[str], answers: IO[str]) -> None:
    line = requests.readline()
    if not line:
        return  # the search ended without a model to log
    request = json.loads(line)
    _asked.set()
    try:
        with _saving:  # after a save the warm-up is in, if any
            save_for_mlflow(dict(request["info"]), request["save_to"])
        answer: dict[str, Any] = {"saved": request["save_to"]}
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
