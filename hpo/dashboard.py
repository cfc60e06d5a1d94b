"""``hpo dashboard``: optuna-dashboard on a search's Optuna study (``<run_dir>/optuna.journal``,
:mod:`hpo.study_file`), bound to 127.0.0.1 unless told otherwise.

optuna-dashboard is an optional dependency (``pip install optuna-dashboard``, or the
``dashboard`` extra); it is imported only here, when the command runs.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpo.errors import HpoConfigError
from hpo.rundir import find_run_dir
from hpo.study_file import STUDY_FILE, study_path

__all__ = ["Dashboard", "open_dashboard", "study_file_of"]

INSTALL_HINT = "Install it with `pip install optuna-dashboard` (or `pip install 'hpo[dashboard]'`)."


def study_file_of(name_or_path: str, storage_path: str = "hpo_results") -> Path:
    """The study file of a run directory, or of the newest run of exactly that search name.

    Raises:
        HpoConfigError: no such run directory, or it holds no study file.
    """
    run_dir = find_run_dir(name_or_path, storage_path)
    path = study_path(run_dir)
    if not path.is_file():
        raise HpoConfigError(
            "name_or_path", f"must be a search that wrote its Optuna study ({STUDY_FILE}, written when a search "
            "ends: all trials done, a budget spent or a signal)", str(run_dir),
            "A running search writes it when it ends; for one that was killed or ran before hpo wrote "
            f"studies, `hpo sync-mlflow {run_dir}` writes it.")
    return path


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection never keeps Ctrl-C from ending the command


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # no line per request: the dashboard polls its API every few seconds


class Dashboard:
    """optuna-dashboard serving one study file, listening once constructed.

    Attributes:
        url: the study's page (``http://HOST:PORT/dashboard/studies/<id>``).
        api_url: its JSON (``http://HOST:PORT/api/studies/<id>``).
    """

    def __init__(self, path: Path, host: str = "127.0.0.1", port: int = 8080) -> None:
        try:
            import optuna_dashboard
        except ImportError:
            raise HpoConfigError("hpo dashboard", "needs the optuna-dashboard package, which is not installed",
                                 None, INSTALL_HINT) from None
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(path)))
        studies = storage.get_all_studies()
        if len(studies) != 1:
            raise HpoConfigError("name_or_path", "must hold one Optuna study in its study file", str(path),
                                 f"It has {len(studies)}; rewrite it with `hpo sync-mlflow {path.parent}`.")
        self.study_name = studies[0].study_name
        self.study_id = storage.get_study_id_from_name(self.study_name)
        try:
            self.server = make_server(host, port, optuna_dashboard.wsgi(storage), server_class=_Server,
                                      handler_class=_QuietHandler)
        except OSError as exc:
            raise HpoConfigError("--port", f"must be a port hpo can listen on at {host}", port,
                                 f"{exc.strerror or exc}; pick another with --port.") from None
        self.host, self.port = host, int(self.server.server_address[1])  # --port 0: the one the system chose
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/dashboard/studies/{self.study_id}"
        self.api_url = f"http://{shown}:{self.port}/api/studies/{self.study_id}"

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (or SIGTERM)."""
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()


def open_dashboard(name_or_path: str, storage_path: str = "hpo_results", host: str = "127.0.0.1", port: int = 8080,
                   announce: Callable[[str], None] = print) -> None:
    """Serve optuna-dashboard on a search's study until Ctrl-C, announcing its URL once it listens.

    Example:
        >>> open_dashboard("quickstart", port=8080)  # doctest: +SKIP
        optuna-dashboard for study quickstart: http://127.0.0.1:8080/dashboard/studies/0 (Ctrl-C stops it)
    """
    path = study_file_of(name_or_path, storage_path)
    board = Dashboard(path, host, port)
    if not _is_loopback(host):
        print(f"hpo: note: listening on {host}: optuna-dashboard has no login, so anyone who can reach this port "
              "can read the study and write notes to it", file=sys.stderr)
    try:
        announce(f"optuna-dashboard for study {board.study_name} ({path}): {board.url} (Ctrl-C stops it)")
        board.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        board.server.server_close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
