"""Bad input, generatively: Hypothesis takes the quickstart experiment and applies one defect —
wrong types, missing and extra keys at every level, out-of-range, huge and non-finite numbers,
deep nesting, long strings, non-UTF-8 bytes, YAML tags, include cycles and missing includes,
conditions on absent or continuous parents. Every one must end in hpo's own HpoConfigError naming
the offending key path (never a traceback from pydantic, YAML, Optuna, Ray or torch), and through
the CLI in exit code 2 within 5 s, with Ray never imported and nothing written. What Hypothesis
found is kept below as a corpus of explicit cases; the hand-written cases follow it.
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo import HpoConfigError, load_experiment
from hpo.validate import validate
from tests.conftest import ROOT, _env

QUICKSTART = ROOT / "examples" / "quickstart.yaml"
BASE: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())
SPACES = ROOT / "hpo" / "search_spaces"
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Dumper(yaml.SafeDumper):
    """Quotes strings hpo's reader would take for numbers (YAML 1.2 exponents like ``1e5``)."""


_Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _dump(data: Any) -> bytes:
    return yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1 << 30).encode()


# -- the leaves of the quickstart: path -> the kinds of value it accepts -------------------------

KINDS = ("none", "bool", "int", "float", "str", "list", "dict")
LEAVES: dict[tuple[Any, ...], set[str]] = {
    ("name",): {"str"},
    ("task", "dataset"): {"str"},
    ("task", "epochs"): {"int"},
    ("space", "include", 0): {"str"},  # str(x) of anything else names a missing file: still an error
    ("space", "params", "lr", "type"): {"str"},
    ("space", "params", "lr", "low"): {"int", "float"},
    ("space", "params", "lr", "high"): {"int", "float"},
    ("space", "params", "lr", "log"): {"bool"},
    ("metric",): {"str", "list"},
    ("mode",): {"str", "list"},
    ("strategy", "searcher"): {"str", "dict"},
    ("strategy", "scheduler", "name"): {"str"},
    ("strategy", "scheduler", "grace_period"): {"int"},
    ("strategy", "scheduler", "reduction_factor"): {"int", "float"},
    ("strategy", "seed"): {"int", "none"},
    ("num_samples",): {"int", "none"},
    ("resources", "cpu"): {"int", "float"},
}
# Keys that may be left out (a default applies); every other key is required.
OPTIONAL = {("task",), ("task", "dataset"), ("task", "epochs"), ("space", "include"), ("space", "params", "lr", "log"),
            ("mode",), ("strategy",), ("strategy", "searcher"), ("strategy", "scheduler"),
            ("strategy", "scheduler", "grace_period"), ("strategy", "scheduler", "reduction_factor"),
            ("strategy", "seed"), ("num_samples",), ("resources",), ("resources", "cpu"), ("space", "params", "lr"),
            ("space", "params")}
MAPPINGS = [(), ("task",), ("space",), ("space", "params", "lr"), ("strategy",), ("strategy", "scheduler"),
            ("resources",)]
NUMBERS = {  # numeric leaf -> a predicate of the values it must refuse
    ("task", "epochs"): lambda v: v < 1,
    ("space", "params", "lr", "low"): lambda v: not 0 < v <= 3.0e-2 or not math.isfinite(v),
    ("space", "params", "lr", "high"): lambda v: not 1.0e-3 <= v or not math.isfinite(v),
    ("strategy", "scheduler", "grace_period"): lambda v: not 1 <= v <= 20,
    ("strategy", "scheduler", "reduction_factor"): lambda v: not v > 1 or not math.isfinite(v),
    ("strategy", "seed"): lambda v: not 0 <= v < 2**32,
    ("num_samples",): lambda v: v < 1,
    ("resources", "cpu"): lambda v: not v > 0 or not math.isfinite(v),
}


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}[type(value)]


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _delete(data: dict[str, Any], path: tuple[Any, ...]) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


def _key(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _norm(key: str) -> str:
    """A key path as the user wrote it: hpo's internal names (``scheduler_options``, the space's
    ``params`` level, a scheduler's ``name``) mapped back."""
    key = key.replace(".params.", ".").replace("_options", "")
    return re.sub(r"^strategy\.scheduler\.name\b", "strategy.scheduler", key)


def _names(err: HpoConfigError, path: str) -> bool:
    """Whether ``err`` names ``path`` or a key inside it (a range's ``low``/``high``: the range,
    when the rule ``low <= high`` is what they break together)."""
    got, want = _norm(err.key), _norm(path)
    if re.search(r"\.(low|high)$", want) and "low <= high" in str(err):
        want = want.rsplit(".", 1)[0]
    return (got == want or got.startswith((want + ".", want + "["))) and err.key in str(err)


@contextmanager
def _files(text: bytes, extra: dict[str, bytes] | None = None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "experiment.yaml"
        path.write_bytes(text)
        for name, content in (extra or {}).items():
            (Path(d) / name).write_bytes(content)
        yield path


def _outcome(text: bytes, extra: dict[str, bytes] | None = None) -> HpoConfigError | None:
    """``hpo validate``'s pass in process: None when the file is accepted, else hpo's error (any
    other exception escapes and fails the test)."""
    with _files(text, extra) as path:
        try:
            validate(load_experiment(path))
        except HpoConfigError as err:
            assert len(str(err)) < 2000, f"an error message of {len(str(err))} characters"
            return err
    return None


def _refused(text: bytes, path: str, extra: dict[str, bytes] | None = None) -> HpoConfigError:
    err = _outcome(text, extra)
    assert err is not None, f"accepted, but {path} is wrong"
    # a defect inside an included file is named by that file and the key path in it
    inside = any(err.key.startswith((f"{name}.", f"{name}:")) for name in extra or {}) or err.key in (extra or {})
    assert inside or _names(err, path), f"{err.key!r} does not name {path!r}: {err}"
    return err


# -- strategies: one defect each ----------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
VALUES = {
    "none": st.none(),
    "bool": st.booleans(),
    "int": st.integers(min_value=-(2**70), max_value=2**70),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "str": st.text(max_size=12),
    "list": st.lists(SCALARS, max_size=3),
    "dict": st.dictionaries(st.text(min_size=1, max_size=5), SCALARS, max_size=3),
}


@st.composite
def wrong_types(draw: st.DrawFn) -> tuple[bytes, str]:
    path = draw(st.sampled_from(sorted(LEAVES, key=str)))
    kind = draw(st.sampled_from([k for k in KINDS if k not in LEAVES[path]]))
    data = copy.deepcopy(BASE)
    _set(data, path, draw(VALUES[kind]))
    return _dump(data), _key(path)


@st.composite
def missing_keys(draw: st.DrawFn) -> tuple[bytes, str, bool]:
    paths = [p for p in {*LEAVES, *MAPPINGS, ("space", "params")} if p and not isinstance(p[-1], int)]
    path = draw(st.sampled_from(sorted(paths, key=str)))
    data = copy.deepcopy(BASE)
    _delete(data, path)
    return _dump(data), _key(path), path not in OPTIONAL


@st.composite
def extra_keys(draw: st.DrawFn) -> tuple[bytes, str]:
    where = draw(st.sampled_from(MAPPINGS))
    data = copy.deepcopy(BASE)
    node: Any = data
    for part in where:
        node = node[part]
    name = draw(st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True).filter(lambda k: k not in node))
    if where == () and name in {"trainable", "max_concurrent", "time_budget_s", "epoch_budget", "storage_path",
                                "address", "tracking", "max_failures", "trial_timeout_s", "pack", "keep_checkpoints",
                                "nightly", "working_dir"}:
        name += "_x"  # a real key with a default: not an extra one
    if where == ("strategy",) and name in {"searcher_options", "scheduler_options", "max_t"}:
        name += "_x"
    if where == ("space", "params", "lr") and name == "step":
        name += "_x"
    node[name] = draw(SCALARS)
    return _dump(data), _key((*where, name))


@st.composite
def bad_numbers(draw: st.DrawFn) -> tuple[bytes, str, bool]:
    path = draw(st.sampled_from(sorted(NUMBERS, key=str)))
    int_only = LEAVES[path] <= {"int", "none"}
    huge = st.sampled_from([10**12, 10**30, 2**63, -(2**63) - 1, 1e308, -1e308, 1e12, 1e-320])
    value = draw(st.one_of(
        huge, st.sampled_from([0, -1, float("nan"), float("inf"), float("-inf")]),
        st.integers(-(2**70), 2**70) if int_only else st.floats(allow_nan=True, allow_infinity=True)))
    data = copy.deepcopy(BASE)
    _set(data, path, value)
    return _dump(data), _key(path), NUMBERS[path](value)  # a huge cpu count or epochs may be meant


def _nested(depth: int, style: str) -> str:
    if style == "list":
        return "[" * depth + "]" * depth
    if style == "flow":
        return "{a: " * depth + "1" + "}" * depth
    return "".join("\n" + "  " * (i + 1) + "a:" for i in range(depth)) + " 1"


@st.composite
def deep_nesting(draw: st.DrawFn) -> tuple[bytes, str]:
    path = draw(st.sampled_from(sorted(LEAVES, key=str)))
    depth = draw(st.integers(70, 1000))
    style = draw(st.sampled_from(["list", "flow", "block"]))
    data = copy.deepcopy(BASE)
    _set(data, path, "@@HOLE@@")
    text = _dump(data).decode().replace("'@@HOLE@@'", "@@HOLE@@")
    indent = len(re.search(r"( *)(- )?[^\n]*@@HOLE@@", text).group(1))  # type: ignore[union-attr]
    if style == "block" and not isinstance(path[-1], int):
        text = text.replace("@@HOLE@@", _nested(depth, style).replace("\n", "\n" + " " * indent))
    else:
        text = text.replace("@@HOLE@@", _nested(depth, "flow" if style == "block" else style))
    return text.encode(), _key(path)


@st.composite
def long_strings(draw: st.DrawFn) -> tuple[bytes, str]:
    path = draw(st.sampled_from([("name",), ("task", "dataset"), ("space", "params", "lr", "type"),
                                 ("strategy", "searcher"), ("strategy", "scheduler", "name"), ("mode",),
                                 ("space", "include", 0), ("tracking", "tracking_uri")]))
    n = draw(st.integers(300, 50_000))  # beyond a file name's 255 bytes
    data = copy.deepcopy(BASE)
    text = draw(st.characters(codec="utf-8", exclude_categories=["Cs"])) * n
    if path == ("tracking", "tracking_uri"):
        data["tracking"] = {"tracking_uri": "sqlite:///" + text}
    else:
        _set(data, path, text)
    return _dump(data), _key(path)


@st.composite
def non_utf8(draw: st.DrawFn) -> tuple[bytes, str]:
    text = _dump(BASE)
    at = draw(st.integers(0, len(text)))
    junk = draw(st.sampled_from([b"\xff", b"\xfe\xfe", b"\xe9", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                                 b"\x80", b"\xc0\xaf"]))
    return text[:at] + junk + text[at:], "experiment"


TAGS = ["!!python/object/apply:os.system ['touch PWNED']", "!!python/object/new:builtins.dict {}",
        "!!python/name:os.system", "!!python/module:os", "!!python/tuple [1, 2]", "!!python/bytes aGk=",
        "!custom 3", "!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14", "!!omap [a: 1]",
        "!!pairs [a: 1]", "2001-12-14"]


@st.composite
def yaml_tags(draw: st.DrawFn) -> tuple[bytes, str]:
    path = draw(st.sampled_from(sorted(LEAVES, key=str)))
    data = copy.deepcopy(BASE)
    _set(data, path, "@@HOLE@@")
    tag = draw(st.sampled_from(TAGS))
    return _dump(data).decode().replace("'@@HOLE@@'", "@@HOLE@@").replace("@@HOLE@@", tag).encode(), _key(path)


# -- the property ------------------------------------------------------------------------------


@FAST
@given(wrong_types())
def test_wrong_types_are_refused_naming_the_key(case: tuple[bytes, str]) -> None:
    _refused(*case)


@FAST
@given(missing_keys())
def test_missing_keys_are_refused_or_defaulted(case: tuple[bytes, str, bool]) -> None:
    text, path, required = case
    err = _outcome(text)
    if required:
        assert err is not None and _names(err, path), (path, err)
    else:
        assert err is None or _names(err, path) or err.key.startswith("strategy.scheduler"), (path, err)


@FAST
@given(extra_keys())
def test_extra_keys_at_every_level_are_refused(case: tuple[bytes, str]) -> None:
    _refused(*case)


@FAST
@given(bad_numbers())
def test_out_of_range_huge_and_non_finite_numbers(case: tuple[bytes, str, bool]) -> None:
    text, path, out_of_range = case
    if out_of_range:
        _refused(text, path)
    else:  # huge but meaningful (1e12 CPUs per trial is the cluster's problem): accepted, or refused by name
        err = _outcome(text)
        assert err is None or _names(err, path), (path, err)


@settings(max_examples=15, deadline=None)
@given(deep_nesting())
def test_deep_nesting_is_refused_naming_the_key(case: tuple[bytes, str]) -> None:
    _refused(*case)


@settings(max_examples=15, deadline=None)
@given(long_strings())
def test_long_strings_are_refused_with_a_short_message(case: tuple[bytes, str]) -> None:
    _refused(*case)


@FAST
@given(non_utf8())
def test_non_utf8_bytes_anywhere_are_refused(case: tuple[bytes, str]) -> None:
    err = _refused(*case)
    assert "UTF-8" in str(err) and "line" in str(err)


@FAST
@given(yaml_tags())
def test_yaml_tags_are_refused_by_the_safe_loader(case: tuple[bytes, str]) -> None:
    text, path = case
    with _files(text) as file:
        try:
            validate(load_experiment(file))
        except HpoConfigError as err:
            assert _names(err, path), (path, err)
        else:
            raise AssertionError(f"accepted a tagged {path}")
        assert not (file.parent / "PWNED").exists() and not Path("PWNED").exists()


@st.composite
def bad_includes(draw: st.DrawFn) -> tuple[bytes, str, dict[str, bytes]]:
    """A missing include, a cycle (of one to three files), or an included file that is not a space."""
    data = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["missing", "cycle", "junk"]))
    extra: dict[str, bytes] = {}
    if kind == "missing":
        data["space"]["include"] = [draw(st.sampled_from(["nope.yaml", "nope", "../nope.yaml", "/nope/x.yaml", "",
                                                          "a" * 300, "dir/"]))]
    elif kind == "cycle":
        n = draw(st.integers(1, 3))
        for i in range(n):
            extra[f"s{i}.yaml"] = _dump({"include": [f"s{(i + 1) % n}.yaml"], "params": {f"p{i}": 1}})
        data["space"]["include"] = ["s0.yaml"]
    else:
        extra["s.yaml"] = draw(st.sampled_from([
            b"- a\n- b\n", b"\xff\xfe", b"params: [1, 2]\n", b"params:\n  x: 1\n  x: 2\n", b"include: 5\n",
            b"params: {x: {type: nope}}\n", b"params: {x: 1}\nextra: 2\n", b"params: {x: !!python/name:os.system }\n"]))
        data["space"]["include"] = ["s.yaml"]
    return _dump(data), "space.include[0]", extra


@st.composite
def bad_conditions(draw: st.DrawFn) -> tuple[bytes, str]:
    """``when`` on an absent parent, a continuous parent, itself, with a value outside the parent's,
    or not a mapping at all."""
    data = copy.deepcopy(BASE)
    params = data["space"]["params"]
    params["opt"] = {"type": "categorical", "choices": ["sgd", "adam"]}
    when = draw(st.sampled_from([
        {"absent": "x"}, {"lr": 0.01}, {"lr": [0.01, 0.02]}, {"opt": "rmsprop"}, {"opt": []}, {"child": "a"},
        {"hidden": 64}, {"dropout": 0.1}, "opt", ["opt"], {}, 5, {"opt": {"a": 1}}]))
    params["child"] = {"type": "float", "low": 0.1, "high": 0.2, "when": when}
    return _dump(data), "space.params.child.when"


@settings(max_examples=20, deadline=None)
@given(bad_includes())
def test_include_cycles_missing_and_bad_includes(case: tuple[bytes, str, dict[str, bytes]]) -> None:
    _refused(*case)


@settings(max_examples=20, deadline=None)
@given(bad_conditions())
def test_conditions_on_absent_or_continuous_parents(case: tuple[bytes, str]) -> None:
    _refused(*case)


# -- the corpus: what Hypothesis found, kept as explicit cases ----------------------------------


def _variant(path: tuple[Any, ...], value: Any) -> bytes:
    data = copy.deepcopy(BASE)
    _set(data, path, value)
    return _dump(data)


def _without(path: tuple[Any, ...]) -> bytes:
    data = copy.deepcopy(BASE)
    _delete(data, path)
    return _dump(data)


def _tagged(path: tuple[Any, ...], text: str) -> bytes:
    return _variant(path, "@@HOLE@@").replace(b"'@@HOLE@@'", b"@@HOLE@@").replace(b"@@HOLE@@", text.encode())


CORPUS: list[tuple[str, bytes, str, str]] = [  # (what, file, key path named, words in the message)
    ("an unhashable parameter type: TypeError in params.py", _variant(("space", "params", "lr", "type"), []),
     "space.params.lr.type", "must be one of"),
    ("`dataset: null` was accepted (and failed after Ray started)", _variant(("task", "dataset"), None),
     "task.dataset", "must be one of"),
    ("an unknown data set was accepted by the pass (and failed after Ray started)",
     _variant(("task", "dataset"), "digitz"), "task.dataset", "Did you mean 'digits'"),
    ("a data file that does not exist was accepted by the pass", _variant(("task", "dataset"), "nope.csv"),
     "task.dataset", "existing file"),
    ("a scheduler mapping without `name` blamed all of `strategy`", _without(("strategy", "scheduler", "name")),
     "strategy.scheduler.name", "is required"),
    ("a seed beyond 2**32 was accepted (Optuna's sampler raised ValueError after Ray started)",
     _variant(("strategy", "seed"), 2**63), "strategy.seed", "2**32 - 1"),
    ("a negative seed was accepted", _variant(("strategy", "seed"), -1), "strategy.seed", "2**32 - 1"),
    ("deep nesting named only the file", _tagged(("metric",), "[" * 70 + "]" * 70), "metric[0]", "nest deeper"),
    ("a tracking URI naming a file too long for the file system: failed after Ray started",
     _variant(("name",), "quickstart")[:0] + _dump({**BASE, "tracking": {"tracking_uri": "sqlite:///" + "m" * 300}}),
     "tracking.tracking_uri", "file system can hold"),
    ("resources.cpu: .inf was accepted", _tagged(("resources", "cpu"), ".inf"), "resources.cpu", "finite number"),
    ("a !!python tag named only the file", _tagged(("metric",), "!!python/object/apply:os.system ['touch PWNED']"),
     "metric", "safe loader"),
    ("an include name too long for the file system: OSError from Path.is_file",
     _variant(("space", "include", 0), "0" * 300), "space.include[0]", "existing space file"),
    ("a data file name too long for the file system: OSError", _variant(("task", "dataset"), "0" * 300 + ".csv"),
     "task.dataset", "existing file"),
    ("a 50,000-character value flooded the message", _variant(("name",), "0" * 50_000), "name", "characters)"),
    ("a trainable '.x:y' (relative import): TypeError from importlib", _variant(("task", "dataset"), ".x:y"),
     "task.dataset", "importable module"),
]


@pytest.mark.parametrize("what, text, key, words", CORPUS, ids=[c[0][:50] for c in CORPUS])
def test_corpus_found_by_hypothesis(what: str, text: bytes, key: str, words: str) -> None:
    err = _outcome(text)
    assert err is not None, what
    assert err.key == key and words in str(err), (what, str(err))
    assert not Path("PWNED").exists()


# -- by hand ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/b", "../escape", "..", "a b", "/abs", "a\\b", ".hidden", "a/../../b", ""])
def test_names_cannot_leave_the_storage_path(name: str) -> None:
    err = _refused(_variant(("name",), name), "name")
    assert "pattern" in str(err) or "at least 1" in str(err)


def test_a_dotted_name_stays_inside_the_storage_path(tmp_path: Path) -> None:
    from hpo.rundir import new_run_dir

    with _files(_variant(("name",), "a..b")) as path:
        exp = load_experiment(path)
    run_dir = new_run_dir(tmp_path, exp.name)
    assert run_dir.parent == tmp_path.resolve() and run_dir.name.startswith("a..b-")


def test_num_samples_1e12() -> None:
    err = _refused(_tagged(("num_samples",), "1e12"), "num_samples")
    assert "integer" in str(err) and err.value == 1e12


@pytest.mark.parametrize("cpu", ["0", "-1", "-0.5", ".nan", "-.inf", ".inf"])
def test_resources_cpu_zero_negative_or_non_finite(cpu: str) -> None:
    _refused(_tagged(("resources", "cpu"), cpu), "resources.cpu")


@pytest.mark.parametrize("what, text, words", [
    ("empty file", b"", "mapping"),
    ("only a comment", b"# nothing\n", "mapping"),
    ("a YAML list", b"- name: quickstart\n- metric: val_accuracy\n", "mapping"),
    ("a scalar", b"quickstart\n", "mapping"),
    ("a binary blob", bytes(range(256)) * 64, "UTF-8"),
    ("NUL bytes", b"\x00" * 1000, "valid YAML"),
    ("a 5 MB junk file", b"\x89PNG\r\n" + os.urandom(5 << 20), "UTF-8"),
    ("5 MB of printable junk", (b"}{:-[ ]!&*%@`'\"|>?,\t" * 300_000)[: 5 << 20], "valid YAML"),
    ("UTF-16", "name: quickstart\n".encode("utf-16"), "UTF-8"),
])
def test_files_that_are_not_experiments(what: str, text: bytes, words: str) -> None:
    started = time.monotonic()
    err = _outcome(text)
    assert err is not None and err.key == "experiment" and words in str(err), (what, err)
    assert time.monotonic() - started < 5, what


def test_a_missing_file_and_a_directory() -> None:
    with tempfile.TemporaryDirectory() as d:
        for path in (Path(d) / "missing.yaml", Path(d)):
            with pytest.raises(HpoConfigError) as err:
                load_experiment(path)
            assert err.value.key == "experiment"


# -- through the CLI: exit code 2 within 5 s, Ray never imported, nothing written --------------

CLI_CASES = [
    ("wrong type", _variant(("task", "epochs"), "20"), "task.epochs"),
    ("deep nesting", _tagged(("metric",), "[" * 5000 + "]" * 5000), "metric"),
    ("non-UTF-8", _dump(BASE).replace(b"quickstart", b"caf\xe9"), "experiment"),
    ("python tag", _tagged(("metric",), "!!python/object/apply:os.system ['touch PWNED']"), "metric"),
    ("missing include", _variant(("space", "include", 0), "nope.yaml"), "space.include[0]"),
    ("unknown data set", _variant(("task", "dataset"), "digitz"), "task.dataset"),
    ("seed out of range", _variant(("strategy", "seed"), 2**40), "strategy.seed"),
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _cli(command: str, text: bytes, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -X importtime -m hpo.cli COMMAND experiment.yaml`` in a fresh working directory,
    with the storage path and Ray's temporary directory under ``tmp_path``, checked to stay empty."""
    work, tmp, storage = tmp_path / "work", tmp_path / "tmp", tmp_path / "storage"
    for d in (work, tmp):
        d.mkdir()
    (work / "experiment.yaml").write_bytes(text)
    before = _tree(work)
    env = {**_env(), "TMPDIR": str(tmp), "RAY_TMPDIR": str(tmp), "MLFLOW_TRACKING_URI": ""}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "hpo.cli", command, "experiment.yaml",
                          "--set", f"storage_path={storage}"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=60)
    elapsed = time.monotonic() - started
    assert _tree(work) == before, f"{command} wrote into the working directory"
    assert not storage.exists() and _tree(tmp) == [], f"{command} wrote to the storage path or started Ray"
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"ray", "torch", "optuna", "mlflow"}, sorted(imported & {"ray", "torch", "optuna", "mlflow"})
    return out, elapsed


@pytest.mark.parametrize("command, what, text, key", [
    *(("validate", *case) for case in CLI_CASES), *(("run", *case) for case in CLI_CASES[1::2])],
    ids=[f"validate-{c[0]}" for c in CLI_CASES] + [f"run-{c[0]}" for c in CLI_CASES[1::2]])
def test_cli_refuses_with_exit_code_2_fast_and_without_ray(command: str, what: str, text: bytes, key: str,
                                                           tmp_path: Path) -> None:
    out, elapsed = _cli(command, text, tmp_path)
    errors = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
    assert out.returncode == 2 and elapsed < 5, (what, out.returncode, elapsed, errors)
    assert errors == [errors[0]] and errors[0].startswith(f"hpo: error: {key}"), (what, errors)
    assert "Traceback" not in out.stderr and out.stdout == ""
