"""Exhaustive grid searcher over grid, categorical and fixed parameters."""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher

from hpo.space import SearchSpace


class GridSearcher(Searcher):
    """Hands out every point of ``space.grid()`` once, in order, then reports FINISHED.

    With ``num_samples`` below the grid size the first ``num_samples`` points run; the
    runner sizes ``num_samples`` to the grid when it is not given.
    """

    def __init__(self, space: SearchSpace, metric: str | None = None, mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.points = space.grid()
        self.next_index = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.next_index >= len(self.points):
            return Searcher.FINISHED  # type: ignore[return-value]  # Ray's sentinel string
        point = self.points[self.next_index]
        self.next_index += 1
        return dict(point)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        return None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"next_index": self.next_index}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.next_index = pickle.load(f)["next_index"]
