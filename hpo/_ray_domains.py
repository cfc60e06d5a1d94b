"""Ray Tune search-space domains hpo needs beyond Ray's own (imported only when Ray is).

Checked against Ray 2.60: ``Domain.sample(config, size, random_state)`` is what Ray's variant
generator and PBT's resampling call; ``is_valid`` and ``domain_str`` are what they print.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.sample import Domain, Integer

from hpo.params import lattice_value

__all__ = ["Lattice"]


class Lattice(Domain):
    """The values ``low + k * step`` for ``k`` in ``0 .. count - 1``, drawn uniformly over ``k``:
    exactly what Optuna draws for a stepped int or float (Ray's quantized domains round to
    multiples of ``step`` from 0 instead).

    Example:
        >>> sorted({Lattice(1, 4, 3).sample() for _ in range(100)})
        [1, 5, 9]
    """

    def __init__(self, low: float, step: float, count: int) -> None:
        self.low, self.step, self.count = low, step, int(count)
        self.index = Integer(0, self.count).uniform()  # upper bound exclusive

    def sample(self, config: Any = None, size: int = 1, random_state: Any = None) -> Any:
        k = self.index.sample(config, size=size, random_state=random_state)
        if isinstance(k, list):
            return [lattice_value(self.low, self.step, int(i)) for i in k]
        return lattice_value(self.low, self.step, int(k))

    def cast(self, value: Any) -> Any:
        return value

    def is_valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        k = (value - self.low) / self.step
        return abs(k - round(k)) <= 1e-9 * max(1.0, abs(k)) and 0 <= round(k) < self.count

    @property
    def domain_str(self) -> str:
        last = lattice_value(self.low, self.step, self.count - 1)
        return f"[{self.low}, {self.low} + {self.step}, ..., {last}]"
