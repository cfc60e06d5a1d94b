"""A real ``mlflow server`` subprocess over HTTP, one per test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hpo.testing.mlflow_server import MlflowServer
from tests.conftest import ROOT, _env

# where screenshots are kept for people to look at (CI collects it): HPO_TEST_ARTIFACTS, else ./test-artifacts
ARTIFACTS = Path(os.environ.get("HPO_TEST_ARTIFACTS") or ROOT / "test-artifacts")


@pytest.fixture(scope="session")
def mlflow_server():
    server = MlflowServer(env=_env())
    server.start()
    try:
        yield server
    finally:
        server.stop()


needs_chromium = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                    reason="Debian's chromium and chromium-driver are not installed")


@contextmanager
def chromium(window: str = "1600,1000") -> Iterator[Any]:
    """Debian's Chromium, headless, driven by selenium (a ``WebDriver``); quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--window-size={window}"):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
