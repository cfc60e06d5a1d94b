"""Ray Tune internals hpo relies on (checked against Ray 2.60.0)."""

from __future__ import annotations

from typing import Any

__all__ = ["restored_run_config"]


def restored_run_config(tuner: Any) -> Any:
    """The ``RunConfig`` a ``Tuner.restore`` unpickled from ``tuner.pkl`` (its callbacks are the
    search's own objects). Ray 2.60 keeps it on the private ``Tuner._local_tuner``."""
    return tuner._local_tuner.get_run_config()
