"""MLflow internals hpo relies on (checked against MLflow 3.17.2)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["check_serving_input", "dispose_sqlite_engines", "end_run", "fluent_tracking_uri"]


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for a while (without printing run URLs), then exactly
    as it was: its ``set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in this process's environment, which
    would send the next search in this process to this one's store. The previous value lives in
    the private ``mlflow.tracking._tracking_service.utils._tracking_uri``."""
    from mlflow.tracking._tracking_service import utils

    # Ending a fluent run prints "View run … at: <tracking URI>" on stdout: a password in the URI
    # would be printed, and a --json summary would no longer be alone on stdout.
    quiet = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    before, env, was_quiet = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get(quiet)
    utils.set_tracking_uri(uri)
    os.environ[quiet] = "true"
    try:
        yield
    finally:
        utils.set_tracking_uri(before)  # type: ignore[arg-type]  # None: back to the default
        for name, value in (("MLFLOW_TRACKING_URI", env), (quiet, was_quiet)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def end_run(client: Any, run_id: str, status: str) -> None:
    """End a run in one request. ``MlflowClient.set_terminated`` also fetches the run to print its
    URL on stdout (which would interleave with ``--json`` output); the store's ``update_run_info``
    (reached through the private ``MlflowClient._tracking_client``) does not."""
    from mlflow.entities import RunStatus

    client._tracking_client.store.update_run_info(
        run_id, run_status=RunStatus.from_string(status), end_time=int(time.time() * 1000), run_name=None
    )


def dispose_sqlite_engines(path: str) -> None:
    """Close the connections MLflow keeps open to the SQLite file ``path`` (its tracking store
    caches one SQLAlchemy engine per database URI in the private
    ``SqlAlchemyStore._engine_map``), so the file can be renamed or removed."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with SqlAlchemyStore._engine_map_lock:
        for uri in [u for u in SqlAlchemyStore._engine_map if u.endswith(path)]:
            SqlAlchemyStore._engine_map.pop(uri).dispose()


def check_serving_input(model_dir: str) -> None:
    """What ``Model.log`` checks before it logs a model (MLflow 3.17.2): the model saved in
    ``model_dir`` answers its own input example sent as a serving request (loaded as a pyfunc
    model, the request parsed as the scoring server parses it, predicted). MLflow's public
    ``validate_serving_input`` is deprecated; ``log_model`` itself calls the private
    ``mlflow.models.utils._validate_serving_input``, as this does. A failure is a warning, as
    MLflow's own."""
    import logging

    from mlflow.models import Model
    from mlflow.models.utils import _validate_serving_input

    serving_input = Model.load(model_dir).get_serving_input(model_dir)
    if not serving_input:
        return
    try:
        _validate_serving_input(model_uri=model_dir, serving_input=serving_input)
    except Exception as exc:  # noqa: BLE001  (MLflow logs the model anyway, with a warning)
        logging.getLogger("hpo").warning("hpo: the best model's input example failed as a serving request "
                                         "(MLflow would warn the same): %s", exc)
