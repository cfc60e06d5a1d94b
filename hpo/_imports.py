"""Resolving ``package.module:function`` import paths named in experiment files."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from hpo.errors import HpoConfigError


def import_callable(path: str, key: str = "trainable") -> Any:
    """Resolve ``package.module:function``, with an error naming ``key`` if it does not.

    Example:
        >>> import_callable("os.path:join")("a", "b")
        'a/b'
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise HpoConfigError(key, "must be an import path 'package.module:function'", path)
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError) as exc:  # TypeError: '.x' (relative); ValueError: ''
        raise HpoConfigError(key, "must name an importable module", path, f"Import failed: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise HpoConfigError(key, f"must name an attribute of module {module_name!r}", path)
    if not callable(obj):
        raise HpoConfigError(key, "must name a callable", path)
    return obj


def add_search_path(directory: str) -> None:
    """Put ``directory`` first on this process's ``sys.path`` (once), as Ray puts a runtime_env
    working directory first on its workers' path: modules named by import path that live there
    are then found in the driver too. It stays for the process's life, so objects of those
    modules that trials send back can be unpickled.

    Example:
        >>> add_search_path("/tmp"); sys.path[0]
        '/tmp'
    """
    path = os.path.abspath(os.path.expanduser(directory))
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    importlib.invalidate_caches()


def accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes an argument called ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)
