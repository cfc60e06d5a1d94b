"""hpo's cache directory: files made once and reused by later searches on this machine."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/hpo``, else ``~/.cache/hpo`` (not created here); None without a home
    directory. What is kept there can always be made again: a cache that cannot be read or
    written only costs the time it saves."""
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpo"
    except RuntimeError:  # no home directory to be found
        return None
