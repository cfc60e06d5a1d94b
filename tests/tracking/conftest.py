"""A real ``mlflow server`` subprocess over HTTP, one per test session."""

from __future__ import annotations

import pytest

from hpo.testing.mlflow_server import MlflowServer
from tests.conftest import _env


@pytest.fixture(scope="session")
def mlflow_server():
    server = MlflowServer(env=_env())
    server.start()
    try:
        yield server
    finally:
        server.stop()
