"""Ray for a search: starting or joining it, and the Ray Tune settings hpo runs under."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ray_session", "tune_settings"]


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray for one search: joins ``address`` (a running cluster), else starts Ray on this machine
    and shuts it down afterwards; an already initialised Ray is used as it is."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=True,
        )
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextmanager
def tune_settings() -> Iterator[None]:
    """The Ray Tune settings a search runs under, restored afterwards."""
    # Ray's per-trial JSON/CSV loggers are off (results reach hpo through callbacks), so its
    # end-of-run ExperimentAnalysis finds no result files: that warning is expected noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # hpo checks metrics itself (with a clearer error); Ray's own tables are replaced by Progress.
    env = {
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        # Signals are hpo's (hpo.lifecycle.catch_signals): running trials are cut and recorded.
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
