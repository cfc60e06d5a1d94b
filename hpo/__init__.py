"""hpo: distributed hyperparameter optimization for PyTorch on Ray Tune, Optuna and MLflow.

Example:
    >>> import hpo
    >>> space = hpo.SearchSpace({"lr": hpo.Float(1e-4, 1e-1, log=True), "depth": hpo.Int(1, 3)})
    >>> sorted(space.names)
    ['depth', 'lr']
"""

from __future__ import annotations

from typing import Any

from hpo.config import Experiment, load_experiment
from hpo.errors import HpoConfigError, MetricNotReportedError
from hpo.session import report
from hpo.space import Categorical, Fixed, Float, Grid, Int, SearchSpace, load_space

__all__ = [
    "Categorical",
    "Experiment",
    "Fixed",
    "Float",
    "Grid",
    "HpoConfigError",
    "Int",
    "MetricNotReportedError",
    "Results",
    "SearchSpace",
    "load_experiment",
    "load_space",
    "report",
    "resume",
    "run",
]
__version__ = "0.1.0"


def run(*args: Any, **kwargs: Any) -> Any:
    """Run a search; see :func:`hpo.runner.run` (Ray is imported on first use)."""
    from hpo.runner import run as _run

    return _run(*args, **kwargs)


def resume(*args: Any, **kwargs: Any) -> Any:
    """Resume a search; see :func:`hpo.runner.resume`."""
    from hpo.runner import resume as _resume

    return _resume(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Results":
        from hpo.results import Results

        return Results
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
