"""The conformance suite every strategy passes; third-party strategies subclass it too.

Subclass :class:`SearcherConformance` (set ``searcher``) or :class:`SchedulerConformance`
(set ``scheduler``) in a pytest module. Searcher checks drive the searcher directly (fast,
no Ray); the run checks need a ``ray_address`` fixture and run a real search.

Example::

    class TestMySearcher(SearcherConformance):
        searcher = "my-searcher"
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from hpo.space import Categorical, Float, Grid, Int, SearchSpace
from hpo.strategies import StrategySpec, TrialOutcomes, build_strategy

MIXED_SPACE = SearchSpace({
    "optimizer": Categorical(["sgd", "adam"]),
    "lr": Float(1e-4, 1e-1, log=True),
    "layers": Int(1, 4),
    "width": Int(8, 64, step=8),
    "dropout": Float(0.0, 0.5),
    "momentum": Float(0.5, 0.99, when={"optimizer": "sgd"}),
})
GRID_SPACE = SearchSpace({
    "optimizer": Categorical(["sgd", "adam"]),
    "lr": Grid([1e-3, 1e-2, 1e-1]),
    "momentum": Grid([0.5, 0.9], when={"optimizer": "sgd"}),
})


def objective(config: dict[str, Any]) -> float:
    """A deterministic toy loss over the conformance spaces."""
    lr = config.get("lr", 0.01)
    return (math.log10(lr) + 2) ** 2 + 0.1 * config.get("layers", 2) + config.get("dropout", 0.0)


def conformance_trainable(config: dict[str, Any]) -> None:
    """Three reports of :func:`objective`; the first trial to run fails (marker file), once."""
    import hpo

    marker = config.get("fail_marker")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            raise RuntimeError("conformance: deliberate failure of one trial")
        except FileExistsError:
            pass
    start = time.time()
    loss = objective(config)
    for step in range(1, 4):
        time.sleep(0.05)
        hpo.report({"loss": loss * (1 + 1 / step), "start": start, "end": time.time()})


class _Base:
    searcher: str = "random"
    scheduler: str = "fifo"
    space: SearchSpace = MIXED_SPACE

    def _space(self) -> SearchSpace:
        return GRID_SPACE if self.searcher == "grid" else self.space

    def make(self, seed: int = 0) -> Any:
        spec = StrategySpec(self.searcher, self.scheduler, seed=seed)
        searcher, _ = build_strategy(spec, self._space(), ["loss"], ["min"], 3, TrialOutcomes())
        return searcher

    def run_search(self, tmp_path: Path, ray_address: str, num_samples: int = 6, max_concurrent: int = 1) -> Any:
        import hpo

        fixed = {"fail_marker": str(tmp_path / "fail-once")}
        space = self._space().merge(SearchSpace(fixed))
        return hpo.run(
            name=f"conformance-{self.searcher}-{self.scheduler}", trainable=conformance_trainable, space=space,
            metric="loss", mode="min", strategy={"searcher": self.searcher, "scheduler": self.scheduler, "max_t": 3},
            num_samples=num_samples, max_concurrent=max_concurrent, storage_path=str(tmp_path / "runs"),
            tracking={"enabled": False}, address=ray_address,
        )


def _drive(searcher: Any, n: int, fail_every: int = 0) -> list[dict[str, Any]]:
    configs = []
    for i in range(n):
        cfg = searcher.suggest(f"t{i}")
        if cfg is None or cfg == "FINISHED":
            break
        configs.append(cfg)
        failed = bool(fail_every) and i % fail_every == fail_every - 1
        result = None if failed else {"loss": objective(cfg), "training_iteration": 3}
        searcher.on_trial_complete(f"t{i}", result=result, error=failed)
    return configs


class SearcherConformance(_Base):
    """Checks on a searcher: bounds, seeding, failures, sample counts and concurrency."""

    def test_configs_stay_within_bounds_and_conditions(self) -> None:
        space = self._space()
        for cfg in _drive(self.make(), 20):
            assert space.contains(cfg), cfg

    def test_same_seed_gives_same_first_configs(self) -> None:
        assert _drive(self.make(seed=7), 5) == _drive(self.make(seed=7), 5)

    def test_failed_trials_do_not_stop_the_search(self) -> None:
        configs = _drive(self.make(), 9, fail_every=3)
        assert len(configs) == min(9, len(GRID_SPACE.grid()) if self.searcher == "grid" else 9)

    @pytest.mark.slow
    def test_num_samples_max_concurrency_and_a_failed_trial(self, tmp_path: Path, ray_address: str) -> None:
        results = self.run_search(tmp_path, ray_address)
        assert len(results.trials) == 6
        assert results.count("errored") == 1
        assert "deliberate failure" in next(t.error for t in results.trials if t.status == "errored")
        spans = sorted((t.metrics["start"], t.metrics["end"]) for t in results.trials if "start" in t.metrics)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "trials overlapped"


class SchedulerConformance(_Base):
    """Checks on a scheduler inside a real search: counts, concurrency, failures, outcomes."""

    @pytest.mark.slow
    def test_num_samples_max_concurrency_and_a_failed_trial(self, tmp_path: Path, ray_address: str) -> None:
        results = self.run_search(tmp_path, ray_address, num_samples=8, max_concurrent=2)
        assert len(results.trials) == 8
        assert results.count("errored") == 1
        assert results.count("completed") + results.count("pruned") == 7
        for t in results.trials:
            if t.status == "pruned":
                assert t.pruned_at is not None and t.pruned_at < 3
            if t.status == "completed":
                assert t.steps == 3
