"""Experiment configuration: one model behind both the YAML files and the Python API.

Every key is checked; an unknown key is an error naming its path and the valid keys, never
silently dropped.

Example:
    >>> exp = Experiment.from_dict({
    ...     "name": "demo", "trainable": "hpo.train:train",
    ...     "task": {"model": "mlp", "dataset": "iris", "epochs": 3},
    ...     "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
    ...     "metric": "val_accuracy", "mode": "max", "num_samples": 4})
    >>> exp.strategy.searcher
    'tpe'
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpo.errors import HpoConfigError, Shown
from hpo.space import SearchSpace
from hpo.strategies import StrategySpec, canonical_name, capabilities, check_strategy, get_strategy

__all__ = ["Experiment", "NightlyConfig", "Resources", "StrategyConfig", "TrackingConfig", "apply_overrides",
           "check_storage_url", "check_timezone", "load_experiment", "mask_url", "parse_duration"]

BUILTIN_TRAINABLE = "hpo.train:train"
# The built-in task's `epochs` when the task leaves it out (hpo.train.task.TaskConfig.epochs; a
# test keeps the two equal): its trials' budget then.
BUILTIN_EPOCHS = 10


class _Strict(BaseModel):
    # strict: "20" is not 20 and "false" is not a boolean; an int is still a valid float
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=False, strict=True)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


def parse_size(value: Any, key: str = "resources.memory") -> int:
    """Bytes in a memory size: an integer number of bytes or a string like ``"512M"``, ``"2G"``,
    ``"1.5GiB"`` (powers of 1024).

    Example:
        >>> parse_size("512M"), parse_size("1.5G"), parse_size(1000)
        (536870912, 1610612736, 1000)
    """
    rule = "must be a size: bytes, or a number with K, M, G or T (powers of 1024), like '512M' or '2G'"
    if isinstance(value, bool):
        raise HpoConfigError(key, rule, value)
    if isinstance(value, int):
        if value <= 0:
            raise HpoConfigError(key, "must be more than zero", value)
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not m:
        raise HpoConfigError(key, rule, value)
    size = int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))
    if size <= 0:
        raise HpoConfigError(key, "must be more than zero", value)
    return size


class Resources(_Strict):
    """Resources each trial reserves. Fractional GPUs let trials share one GPU."""

    cpu: float = Field(1.0, gt=0, allow_inf_nan=False)
    gpu: float = Field(0.0, ge=0, allow_inf_nan=False)
    memory: Union[int, str, None] = Field(  # noqa: UP007
        None, description="Memory a trial may allocate beyond its worker process's own (e.g. '2G'): reserved "
        "from Ray's memory resource and enforced in the worker, where more fails that trial with MemoryError")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if v is not None:
            parse_size(v)
        return v

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory)


class StrategyConfig(_Strict):
    """``searcher`` proposes configurations; ``scheduler`` decides when to stop trials early."""

    searcher: str = "tpe"
    scheduler: str = "fifo"
    searcher_options: dict[str, Any] = Field(default_factory=dict)
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = 0
    max_t: int | None = Field(None, gt=0, description="Most reports per trial; defaults to task.epochs")

    @model_validator(mode="before")
    @classmethod
    def _named_blocks(cls, data: Any) -> Any:
        # `searcher: {name: tpe, n_startup_trials: 5}` is shorthand for name + options.
        if isinstance(data, str):
            spec = StrategySpec.parse(data)
            return {"searcher": spec.searcher, "scheduler": spec.scheduler}
        if isinstance(data, Mapping):
            data = dict(data)
            for role in ("searcher", "scheduler"):
                block = data.get(role)
                if isinstance(block, Mapping):
                    block = dict(block)
                    if "name" not in block:
                        raise HpoConfigError(f"strategy.{role}.name", f"is required when `{role}` is a mapping", None,
                                             f"Write e.g. `{role}: {{name: {'tpe' if role == 'searcher' else 'asha'}"
                                             ", ...}`.")
                    data[role] = block.pop("name")
                    data[f"{role}_options"] = {**block, **data.get(f"{role}_options", {})}
        return data

    @field_validator("searcher")
    @classmethod
    def _canonical_searcher(cls, v: str) -> str:
        return canonical_name(v, "searcher", "strategy.searcher")  # aliases resolved once, here

    @field_validator("scheduler")
    @classmethod
    def _canonical_scheduler(cls, v: str) -> str:
        return canonical_name(v, "scheduler", "strategy.scheduler")  # `none` is stored as `fifo`

    def spec(self) -> StrategySpec:
        return StrategySpec(self.searcher, self.scheduler, self.searcher_options, self.scheduler_options, self.seed)


class TrackingConfig(_Strict):
    """Where trial records go. Credentials come only from the environment."""

    enabled: bool = True
    tracking_uri: str | None = None
    experiment_name: str | None = None
    flush_interval_s: float = Field(2.0, gt=0, description="Seconds between batched writes")
    flush_timeout_s: float = Field(120.0, ge=0, description="How long the search's end waits for a down server")
    log_model: bool = Field(True, description="Built-in task: log the best model as an MLflow PyTorch model")
    register_model: str | None = Field(None, description="Also register it in the model registry under this name")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")  # Optuna's relational storages (SQLAlchemy URLs)


def parse_duration(text: Any, key: str = "nightly.time_budget") -> float:
    """Seconds in a duration such as ``"2h"``, ``"30m"``, ``"90s"``, ``"1d"`` or ``"1h30m"``.

    Example:
        >>> parse_duration("1h30m"), parse_duration("90s"), parse_duration("0.5h")
        (5400.0, 90.0, 1800.0)
        >>> parse_duration("2 hours")
        Traceback (most recent call last):
        ...
        hpo.errors.HpoConfigError: nightly.time_budget: must be a duration: numbers with units s, m, h or d, \
like '2h', '30m', '90s' or '1h30m', but got '2 hours'
    """
    rule = "must be a duration: numbers with units s, m, h or d, like '2h', '30m', '90s' or '1h30m'"
    if not isinstance(text, str) or not text.strip():
        raise HpoConfigError(key, rule, text)
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise HpoConfigError(key, rule, text)
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise HpoConfigError(key, "must be longer than zero", text)
    return seconds


def check_timezone(name: Any, key: str = "nightly.timezone") -> str:
    """``name`` if it is an IANA time zone (``UTC``, ``Europe/Berlin``), else an error.

    Example:
        >>> check_timezone("Europe/Berlin")
        'Europe/Berlin'
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not name.strip():
        raise HpoConfigError(key, "must be an IANA time zone name like 'UTC' or 'Europe/Berlin'", name)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HpoConfigError(key, "must be an IANA time zone name like 'UTC' or 'Europe/Berlin'", name) from None
    return name


def mask_url(url: str) -> str:
    """A URL with its password masked, for messages and records.

    Example:
        >>> mask_url("postgresql://hpo:s3cr%40t@db/optuna"), mask_url("postgresql://hpo@db/optuna")
        ('postgresql://hpo:***@db/optuna', 'postgresql://hpo@db/optuna')
    """
    return re.sub(r"//([^/:@]*):[^/]*@", r"//\1:***@", url)


def parse_margin(value: Any, key: str) -> tuple[float, bool]:
    """``(amount, relative)`` of a score margin: a number >= 0 (in the metric's units) or a
    percentage string such as ``"1%"`` (relative to the champion's score).

    Example:
        >>> parse_margin(0.01, "nightly.promote_margin"), parse_margin("2.5%", "nightly.promote_margin")
        ((0.01, False), (0.025, True))
        >>> parse_margin("-1%", "nightly.alert_regression")
        Traceback (most recent call last):
        ...
        hpo.errors.HpoConfigError: nightly.alert_regression: must be a number >= 0 (in the metric's units) or a \
percentage >= 0 like '1%' (of the champion's score), but got '-1%'
    """
    rule = "must be a number >= 0 (in the metric's units) or a percentage >= 0 like '1%' (of the champion's score)"
    if isinstance(value, bool):
        raise HpoConfigError(key, rule, value)
    if isinstance(value, (int, float)):
        if not value >= 0 or value == float("inf"):
            raise HpoConfigError(key, rule, value)
        return float(value), False
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*%\s*", value):
        return float(value.strip().rstrip("%")) / 100, True
    raise HpoConfigError(key, rule, value)


def check_storage_url(url: Any, key: str = "nightly.storage") -> str:
    """``url`` if it is an Optuna relational storage URL (SQLite, PostgreSQL, MySQL), else an error;
    an SQLite file must be in an existing directory.

    Example:
        >>> check_storage_url("postgresql://hpo@db:5432/optuna")
        'postgresql://hpo@db:5432/optuna'
        >>> check_storage_url("redis://localhost")
        Traceback (most recent call last):
        ...
        hpo.errors.HpoConfigError: nightly.storage: must be a database URL starting with sqlite:, postgresql: or \
mysql: (an optional +driver allowed), but got 'redis://localhost'
    """
    rule = "must be a database URL starting with sqlite:, postgresql: or mysql: (an optional +driver allowed)"
    if not isinstance(url, str) or "://" not in url:
        raise HpoConfigError(key, rule, mask_url(url) if isinstance(url, str) else url)
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in STORAGE_SCHEMES:
        raise HpoConfigError(key, rule, mask_url(url))
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or path == ":memory:":
            raise HpoConfigError(key, "must name an SQLite file (a study in memory is lost when the night ends)",
                                 url, "Write e.g. sqlite:////data/optuna.db.")
        try:
            if not Path(path).parent.is_dir():
                raise HpoConfigError(key, "must name an SQLite file in an existing directory", url)
        except OSError as exc:  # a name the file system cannot hold
            raise HpoConfigError(key, "must name an SQLite file the file system can hold", url, exc.strerror) from None
    return url


class NightlyConfig(_Strict):
    """Settings of ``hpo nightly``: where the lineage's Optuna study lives, how long a night may run,
    and the time zone that says which date "today" is."""

    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///<storage_path>/optuna.db")
    time_budget: str | None = Field(None, description="A night's search time, e.g. '2h', '30m', '90s'")
    timezone: str = "UTC"
    promote: Union[Literal["auto"], bool] = Field(  # noqa: UP007
        "auto", description="Compare the night's best model with the registered champion and move the "
        "'champion' alias when it is better: auto does it for the built-in task with one metric")
    model_name: str | None = Field(None, description="Registered model of the champion; default "
                                   "tracking.register_model, else the experiment's name")
    promote_margin: Union[float, str] = Field(  # noqa: UP007
        0.0, description="How much better the challenger must score: a number or a percentage like '1%'")
    carry_over: bool = Field(False, description="When the space changed (a new lineage), copy the previous "
                             "lineage's finished trials whose parameters fit the new space into the new study")
    alert_regression: Union[float, str, None] = Field(  # noqa: UP007
        None, description="Exit 5 when the challenger scores this much worse than the champion (number or "
        "'5%'); default: any worse night exits 4")

    @field_validator("promote_margin", "alert_regression", mode="before")
    @classmethod
    def _margin(cls, v: Any, info: Any) -> Any:
        if v is not None:
            parse_margin(v, f"nightly.{info.field_name}")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        return None if v is None else check_storage_url(v)

    @field_validator("time_budget")
    @classmethod
    def _time_budget(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        return check_timezone(v)


class Experiment(_Strict):
    """A whole search: what to train, over which space, how, and where to record it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    trainable: Union[str, Callable[..., Any]] = BUILTIN_TRAINABLE  # noqa: UP007
    task: dict[str, Any] = Field(default_factory=dict)
    space: SearchSpace
    metric: Union[str, list[str]]  # noqa: UP007
    mode: Union[Literal["min", "max"], list[Literal["min", "max"]]] = "max"  # noqa: UP007
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig())
    num_samples: int | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, gt=0)
    time_budget_s: float | None = Field(None, gt=0)
    trial_timeout_s: float | None = Field(None, gt=0, description="End a trial as errored when it has not "
                                          "reported for this many seconds (since its start or its last report)")
    epoch_budget: int | None = Field(None, gt=0, description="Stop the search once its trials together have run "
                                     "this many epochs (reports), pruned trials included: a compute budget")
    resources: Resources = Field(default_factory=lambda: Resources())
    storage_path: str = "hpo_results"
    address: str | None = None
    working_dir: str | None = Field(None, description="A directory Ray ships to every node for the trials (a "
                                    "runtime_env working_dir): modules named by import path are imported from "
                                    "its copy there; relative to the experiment file")
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig())
    max_failures: int = Field(0, ge=0)
    pack: Union[Literal["auto"], int] = Field(  # noqa: UP007
        "auto", description="Trials run back to back in one Ray Tune trial (built-in task, FIFO): auto sizes "
        "packs to last about a second once trials are seen to be short; 1 never packs")
    keep_checkpoints: int | None = Field(None, ge=1, description="Checkpoints kept per trial: the best by the "
                                         "metric plus always the latest (default 2; 4 with PBT)")
    nightly: NightlyConfig = Field(default_factory=lambda: NightlyConfig())  # used by `hpo nightly` only

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v: Any, info: Any) -> SearchSpace:
        if isinstance(v, SearchSpace):
            return v
        base_dir = (info.context or {}).get("base_dir") if info.context else None
        if isinstance(v, str):
            from hpo.space import load_space

            return load_space(Path(base_dir or ".") / v if not Path(v).is_absolute() else v)
        return SearchSpace.from_dict(v, base_dir=base_dir, key="space")

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, v: str | None, info: Any) -> str | None:
        # Absolute from here on: the record `hpo resume` reads must not depend on its cwd.
        if v is None:
            return None
        if not v.strip():
            raise ValueError("must name a directory")
        base_dir = (info.context or {}).get("base_dir") if info.context else None
        return os.path.abspath(Path(base_dir or ".") / Path(v).expanduser())

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be 'auto' or a whole number >= 1")

    @field_validator("trainable")
    @classmethod
    def _trainable(cls, v: Any) -> Any:
        if isinstance(v, str) and ":" not in v:
            raise ValueError(f"must be 'package.module:function' or a callable, got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        metrics, modes = self.metrics, self.modes
        if not metrics:
            raise HpoConfigError("metric", "must name at least one metric", self.metric,
                                 "Write e.g. `metric: val_accuracy`, or a list of several.")
        blank = next((m for m in metrics if not m.strip()), None)
        if blank is not None:
            raise HpoConfigError("metric", "must not be an empty name", blank)
        if len(metrics) != len(modes):
            counts = Shown(f"{len(metrics)} metrics, {len(modes)} modes")
            raise HpoConfigError("mode", "must give one mode per metric", counts)
        if len(set(metrics)) != len(metrics):
            raise HpoConfigError("metric", "must not repeat a metric", metrics)
        if self.is_builtin and "epochs" in self.task:
            # The trial budget comes from here: a bad value must not surface as a scheduler error.
            epochs = self.task["epochs"]
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise HpoConfigError("task.epochs", "must be an integer >= 1", epochs,
                                     "Write e.g. `epochs: 20`, without quotes." if isinstance(epochs, str) else None)
        check_strategy(self.strategy.spec(), self.space, metrics, self.budget)
        if isinstance(self.pack, int) and self.pack > 1 and self.unpackable:
            raise HpoConfigError("pack", f"must be 1 or auto here: {self.unpackable}", self.pack)
        return self

    # -- derived views ---------------------------------------------------------------------

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        if isinstance(self.mode, str):
            return [self.mode] * len(self.metrics)
        return list(self.mode)

    @property
    def budget(self) -> int | None:
        """Most reports per trial: ``strategy.max_t``, else the built-in task's ``epochs`` (its
        default when unset); None for a custom trainable without ``max_t``."""
        if self.strategy.max_t:
            return self.strategy.max_t
        if not self.is_builtin:
            return None
        epochs = self.task.get("epochs", BUILTIN_EPOCHS)
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None

    @property
    def unpackable(self) -> str | None:
        """Why trials of this search cannot share a Ray trial (None: they can)."""
        if not self.is_builtin:
            return "only the built-in task runs packed trials (a custom trainable reports for one trial)"
        caps = capabilities(self.strategy.spec(), self.budget)
        if caps.decides_in_trial and not caps.decides_in_worker:
            return (f"scheduler {self.strategy.scheduler!r} pauses, resumes or changes running trials "
                    "between reports; packing needs `scheduler: fifo`, `asha` or `median` (or a plug-in that "
                    "declares `decides_in_worker`)")
        if self.task.get("checkpoint_freq") or self._checkpoints_in_space():
            # inside a pack, a checkpoint would be the previous configuration's
            return "checkpoints are kept per Ray trial; packing needs `checkpoint_freq` unset (task and space)"
        return None

    @property
    def packs(self) -> bool:
        """Whether trials of this search share Ray trials (``pack`` is not 1 and nothing forbids it)."""
        return self.pack != 1 and not self.unpackable

    @property
    def asks_in_worker(self) -> bool:
        """Whether packed trials ask the scheduler from their workers (:mod:`hpo.decisions`)."""
        return self.packs and capabilities(self.strategy.spec(), self.budget).decides_in_worker

    def _checkpoints_in_space(self) -> bool:
        p = self.space.params.get("checkpoint_freq")
        if p is None:
            return False
        values = p.values()
        return values is None or any(values)

    @property
    def is_builtin(self) -> bool:
        return self.trainable == BUILTIN_TRAINABLE

    def resolved_num_samples(self) -> int:
        """``num_samples``, or the grid size for the grid searcher, or 10."""
        if self.num_samples is not None:
            return self.num_samples
        if get_strategy(self.strategy.searcher, "searcher").grid_only:
            return len(self.space.grid())
        return 10

    def to_record(self, masked: bool = True) -> dict[str, Any]:
        """A YAML-safe dict of this experiment (the space inlined), for artifacts and resume; with
        ``masked`` (the default) passwords in ``tracking.tracking_uri`` and ``nightly.storage`` are
        ``***``: no credential is written to a run directory or MLflow."""
        data = self.model_dump(mode="python", exclude={"space", "trainable"})
        data["space"] = {"params": self.space.to_dict()}
        data["trainable"] = self.trainable if isinstance(self.trainable, str) else _qualname(self.trainable)
        if masked:
            for section, key in (("tracking", "tracking_uri"), ("nightly", "storage")):
                if isinstance(data[section].get(key), str):
                    data[section][key] = mask_url(data[section][key])
        return data

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> Experiment:
        """Validate a mapping; errors become :class:`HpoConfigError` with the key path."""
        if not isinstance(data, Mapping):
            raise HpoConfigError("experiment", "must be a mapping of keys to values", type(data).__name__)
        try:
            return cls.model_validate(dict(data), context={"base_dir": base_dir})
        except ValidationError as exc:
            raise _to_config_error(exc) from None


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = Experiment
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = model.model_fields[part].annotation
        if isinstance(model, types.UnionType) or typing.get_origin(model) is Union:
            model = next((a for a in typing.get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _to_config_error(exc: ValidationError) -> HpoConfigError:
    errors = exc.errors(include_url=False)
    # An unknown key explains a missing one (`metrics:` for `metric:`): report it first.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    key = ".".join(str(p) for p in loc) or "experiment"
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, HpoConfigError):
        return ctx_error
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"Did you mean {close[0]!r}?" if close else None
        return HpoConfigError(key, f"is not a valid key; valid keys: {valid}", str(loc[-1]), hint)
    if err["type"] == "missing":
        return HpoConfigError(key, "is required", None)
    return HpoConfigError(key, err["msg"].removeprefix("Value error, "), err.get("input"))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw experiment dict.

    Example:
        >>> apply_overrides({"strategy": {"searcher": "tpe"}}, ["strategy.searcher=random", "num_samples=4"])
        {'strategy': {'searcher': 'random'}, 'num_samples': 4}
        >>> apply_overrides({}, ["space.lr.low=1e-7"])  # YAML 1.2 floats too
        {'space': {'lr': {'low': 1e-07}}}
    """
    import yaml

    from hpo._yaml import StrictLoader

    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise HpoConfigError("--set", "must look like key.path=value", item)
        parts = path.strip().split(".")
        node: dict[str, Any] = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = f"--set {'.'.join(parts[: i + 1])}"
                raise HpoConfigError(where, "is not a mapping, cannot set a key inside it", nxt)
            node = nxt
        node[parts[-1]] = yaml.load(raw, Loader=StrictLoader)  # noqa: S506 - a safe loader
    return data


def read_experiment_file(path: str | Path) -> dict[str, Any]:
    """Read an experiment YAML file as a raw mapping (no validation)."""
    from hpo._yaml import read_yaml

    p = Path(path)
    if not p.is_file():
        raise HpoConfigError("experiment", "must be an existing YAML file", str(path))
    data = read_yaml(p, "experiment", prefix="")  # UTF-8, no repeated keys, no absurd nesting
    if not isinstance(data, dict):
        raise HpoConfigError("experiment", "must be a mapping of keys to values", type(data).__name__)
    return data


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Load and validate an experiment file, applying ``--set`` overrides first.

    Example:
        >>> exp = load_experiment("examples/quickstart.yaml", ["num_samples=2"])
        >>> exp.num_samples
        2
    """
    data = apply_overrides(read_experiment_file(path), overrides or [])
    return Experiment.from_dict(data, base_dir=Path(path).resolve().parent)
