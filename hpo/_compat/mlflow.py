"""MLflow internals hpo relies on (checked against MLflow 3.17.2)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["end_run", "fluent_tracking_uri"]


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for a while, then exactly as it was: its
    ``set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in this process's environment, which
    would send the next search in this process to this one's store. The previous value lives in
    the private ``mlflow.tracking._tracking_service.utils._tracking_uri``."""
    from mlflow.tracking._tracking_service import utils

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils.set_tracking_uri(before)  # type: ignore[arg-type]  # None: back to the default
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def end_run(client: Any, run_id: str, status: str) -> None:
    """End a run in one request. ``MlflowClient.set_terminated`` also fetches the run to print its
    URL on stdout (which would interleave with ``--json`` output); the store's ``update_run_info``
    (reached through the private ``MlflowClient._tracking_client``) does not."""
    from mlflow.entities import RunStatus

    client._tracking_client.store.update_run_info(
        run_id, run_status=RunStatus.from_string(status), end_time=int(time.time() * 1000), run_name=None
    )
