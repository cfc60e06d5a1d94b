"""Search spaces as Ray Tune sees them: the ``param_space`` of a :class:`hpo.space.SearchSpace`, and the
domains hpo needs beyond Ray's own (imported only when Ray is).

Checked against Ray 2.60: ``Domain.sample(config, size, random_state)`` is what Ray's variant
generator and PBT's resampling call; ``is_valid`` and ``domain_str`` are what they print.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.sample import Domain, Integer

from hpo.params import Categorical, Fixed, Float, Grid, Int, Param, lattice_size, lattice_value

__all__ = ["Lattice", "RayConditional", "param_space", "ray_domain"]


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


class RayConditional:
    """Picklable ``sample_from`` body: samples the domain only when the parent condition holds."""

    def __init__(self, name: str, when: dict[str, tuple[Any, ...]], domain: Any) -> None:
        self.name, self.when, self.domain = name, when, domain

    def __call__(self, spec: Any) -> Any:
        cfg = spec.config
        if all(cfg.get(parent) in vals for parent, vals in self.when.items()):
            return self.domain.sample() if hasattr(self.domain, "sample") else self.domain
        return None


def ray_domain(p: Param) -> Any:
    """The Ray Tune domain of one parameter (inclusive bounds; stepped ranges on Optuna's lattice)."""
    from ray import tune

    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Grid) and not p.when:
        return tune.grid_search(list(p.choices))
    if isinstance(p, Categorical):
        return tune.choice(list(p.choices))
    if not isinstance(p, (Float, Int)):
        raise TypeError(f"no Ray domain for {type(p).__name__}")
    if p.step is not None and not (isinstance(p, Int) and p.step == 1):
        # Ray's quniform/qrandint round to multiples of q from 0 (Int(1, 10, step=4) would draw
        # 4 and 8); draw the index k of low + k * step instead, as Optuna does.
        return Lattice(p.low, p.step, lattice_size(p.low, p.high, p.step))
    if isinstance(p, Float):
        return tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
    # randint/lograndint exclude the upper bound: add one so `high` can be drawn.
    return tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)


def param_space(space: Any) -> dict[str, Any]:
    """``space`` as a Ray Tune ``param_space``: inclusive bounds, conditionals as ``sample_from``."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, p in space.params.items():
        dom = ray_domain(p)
        out[name] = tune.sample_from(RayConditional(name, p.when, dom)) if p.when else dom
    return out
