"""Reading hpo's YAML files strictly: UTF-8 only, no repeated keys, no absurd nesting.

Every problem is an :class:`HpoConfigError` naming the file, never a traceback from PyYAML,
the codec or the interpreter's recursion limit.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "e.yaml"
    >>> _ = p.write_text("a: 1\\na: 2\\n")
    >>> read_yaml(p, "experiment", prefix="")
    Traceback (most recent call last):
    ...
    hpo.errors.HpoConfigError: a: must appear once in a mapping (YAML would keep only the last), \
but got 'a'. Line 2 of ....yaml repeats it; remove one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hpo.errors import HpoConfigError, Shown

__all__ = ["MAX_DEPTH", "StrictLoader", "read_yaml"]

MAX_DEPTH = 64  # nesting levels: far beyond any experiment, far below Python's recursion limit


class _TooDeep(yaml.YAMLError):
    def __init__(self, path: list[str], mark: Any) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")
        self.path, self.mark = path, mark


class _Tagged(yaml.YAMLError):
    def __init__(self, path: list[str], tag: str, mark: Any) -> None:
        super().__init__(f"unknown tag {tag!r}")
        self.path, self.tag, self.mark = path, tag, mark


class _Repeated(yaml.YAMLError):
    def __init__(self, path: list[str], name: Any, mark: Any) -> None:
        super().__init__(f"repeated key {name!r}")
        self.path, self.name, self.mark = path, name, mark


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses repeated mapping keys, nesting deeper than MAX_DEPTH and
    tags it cannot construct (``!!python/object...``), naming the key path of each."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._root: Any = None
        self._keys: list[str] = []  # the key path of the node being composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        # `index` is the key node of a mapping value, the position of a sequence item, None for a key
        part = f"[{index}]" if isinstance(index, int) else getattr(index, "value", None)
        if part is not None:
            self._keys.append(str(part))
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(list(self._keys), self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if part is not None:
                self._keys.pop()

    def construct_undefined(self, node: Any) -> Any:
        raise _Tagged(_path_of(node, self._root), node.tag, node.start_mark)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges; keys after it override by design
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeLoader reports it itself
                    continue
                if repeated:
                    raise _Repeated(_path_of(node, self._root), key, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_document(self, node: Any) -> Any:
        self._root = node
        return super().construct_document(node)


StrictLoader.add_constructor(None, StrictLoader.construct_undefined)  # type: ignore[arg-type]

# YAML 1.2 floats PyYAML (YAML 1.1) reads as strings: exponents without a dot, like 1e-7 or 2E+3
# (a learning rate written ``1e-3`` must not fail as "must be a number, but got '1e-3'")
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _path_of(target: Any, root: Any) -> list[str]:
    """The keys leading from the document root to ``target`` (a mapping node)."""
    stack: list[tuple[Any, list[str]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if isinstance(node, yaml.MappingNode):
            stack.extend((v, [*path, str(getattr(k, "value", k))]) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, [*path, f"[{i}]"]) for i, v in enumerate(node.value))
    return []


def _join(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += part if part.startswith("[") or not out else f".{part}"
    return out


def read_yaml(path: str | Path, key: str, prefix: str | None = None) -> Any:
    """Parse a YAML file strictly. ``key`` names the file in errors about the whole file;
    ``prefix`` (default ``key``; ``""`` for the experiment file itself) starts the key path
    of a repeated key inside it. An empty file reads as ``None``.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise HpoConfigError(key, "must be a readable file", str(p), str(exc)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise HpoConfigError(key, "must be UTF-8 text", Shown(f"{p}: byte 0x{raw[exc.start]:02x} on line {line}"),
                             "Save the file as UTF-8 (e.g. `iconv -t UTF-8`).") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except _Repeated as exc:
        where = _join([p for p in (key if prefix is None else prefix,) if p] + [*exc.path, str(exc.name)])
        raise HpoConfigError(where, "must appear once in a mapping (YAML would keep only the last)", exc.name,
                             f"Line {exc.mark.line + 1} of {p} repeats it; remove one.") from None
    except _TooDeep as exc:
        shown = next((exc.path[: i + 1] for i, part in enumerate(exc.path) if part.startswith("[")), exc.path)
        where = _join([p for p in (key if prefix is None else prefix,) if p] + shown[:6]) or key
        raise HpoConfigError(where, f"must not nest deeper than {MAX_DEPTH} levels",
                             Shown(f"{p}, line {exc.mark.line + 1}"), "Check for runaway brackets or indentation.") \
            from None
    except _Tagged as exc:
        where = _join([p for p in (key if prefix is None else prefix,) if p] + exc.path) or key
        tag = exc.tag.replace("tag:yaml.org,2002:", "!!")
        raise HpoConfigError(where, "must be plain YAML data: hpo reads YAML with the safe loader, which builds no "
                             "Python objects", Shown(f"the tag {tag} on line {exc.mark.line + 1} of {p}"),
                             "Remove the tag.") from None
    except RecursionError:
        raise HpoConfigError(key, "must not nest this deep", str(p)) from None
    except yaml.YAMLError as exc:
        raise HpoConfigError(key, f"must be valid YAML ({exc})", str(p)) from None
