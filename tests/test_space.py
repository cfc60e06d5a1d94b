"""Search spaces: types, inclusive bounds on every backend, conditionals, includes, grids."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpo import Categorical, Fixed, Float, Grid, HpoConfigError, Int, SearchSpace, load_space
from hpo.space import SEARCH_SPACES_DIR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _ray_samples(dom, n=3000):
    return [dom.sample() for _ in range(n)]


def test_ray_int_upper_bound_is_drawn_and_never_exceeded():
    space = SearchSpace({"a": Int(1, 3), "b": Int(1, 8, log=True), "c": Int(0, 10, step=5)})
    ray_space = space.to_ray()
    for name, expected in (("a", {1, 2, 3}), ("b", set(range(1, 9))), ("c", {0, 5, 10})):
        drawn = set(_ray_samples(ray_space[name]))
        assert drawn == expected, (name, sorted(drawn))


def test_ray_float_bounds_inclusive_and_respected():
    space = SearchSpace({"x": Float(0.1, 0.3, step=0.1), "y": Float(1e-3, 1.0, log=True)})
    r = space.to_ray()
    xs = {round(v, 6) for v in _ray_samples(r["x"])}
    assert xs == {0.1, 0.2, 0.3}
    assert all(1e-3 <= v <= 1.0 for v in _ray_samples(r["y"]))


def test_optuna_suggest_reaches_both_int_bounds():
    space = SearchSpace({"a": Int(1, 3)})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        seen.add(space.suggest(study.ask())["a"])
    assert seen == {1, 2, 3}


def test_to_optuna_distributions_match_the_space():
    d = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "n": Int(2, 8, step=2), "f": Fixed(3),
                     "c": Categorical(["a", "b"])}).to_optuna()
    assert d["lr"].log and d["lr"].low == 1e-4 and d["lr"].high == 1e-1
    assert (d["n"].low, d["n"].high, d["n"].step) == (2, 8, 2)
    assert d["c"].choices == ("a", "b")
    assert "f" not in d


def test_conditional_parameter_only_present_when_parent_matches():
    space = SearchSpace({"opt": Categorical(["sgd", "adam"]), "momentum": Float(0.0, 0.9, when={"opt": "sgd"})})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    configs = [space.suggest(study.ask()) for _ in range(40)]
    assert {c["opt"] for c in configs} == {"sgd", "adam"}
    for c in configs:
        assert ("momentum" in c) == (c["opt"] == "sgd")
        assert space.contains(c)


def test_ray_conditional_samples_none_when_inactive():
    # Ray cannot leave a key out; the scheduler wrapper removes it before the trial starts
    # (tests/strategies/test_capabilities.py::test_inactive_conditional_parameters_never_reach_a_trial_as_none).
    from ray.tune.search.variant_generator import generate_variants

    space = SearchSpace({"opt": Categorical(["sgd", "adam"]), "momentum": Float(0.1, 0.9, when={"opt": "sgd"})})
    for _ in range(20):
        _, cfg = next(generate_variants(space.to_ray()))
        assert (cfg["momentum"] is None) == (cfg["opt"] == "adam")
        if cfg["opt"] == "sgd":
            assert 0.1 <= cfg["momentum"] <= 0.9


def test_grid_expansion_respects_conditions_without_duplicates():
    space = SearchSpace({
        "opt": Categorical(["sgd", "adam"]), "lr": Grid([0.1, 0.01]),
        "momentum": Grid([0.5, 0.9], when={"opt": "sgd"}), "epochs": Fixed(5),
    })
    grid = space.grid()
    assert len(grid) == 2 * 2 + 2  # sgd: lr x momentum, adam: lr
    assert len({tuple(sorted(c.items())) for c in grid}) == len(grid)
    assert all(c["epochs"] == 5 for c in grid)


def test_grid_values_are_categorical_for_samplers():
    space = SearchSpace({"lr": Grid([0.1, 0.01, 0.001])})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert {space.suggest(study.ask())["lr"] for _ in range(30)} == {0.1, 0.01, 0.001}


def test_non_primitive_choices_round_trip_through_optuna():
    space = SearchSpace({"layers": Categorical([[64, 64], [128]])})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert space.suggest(study.ask())["layers"] in ([64, 64], [128])


def test_include_merges_shared_optimizer_space_and_local_overrides(tmp_path: Path):
    (tmp_path / "model.yaml").write_text(
        "include: [optim.yaml]\nparams:\n  lr: {type: float, low: 0.001, high: 0.01}\n"
        "  hidden: {type: int, low: 8, high: 16}\n"
    )
    space = load_space(tmp_path / "model.yaml")
    assert {"optimizer", "momentum", "weight_decay", "hidden"} <= set(space.names)
    assert space.params["lr"].high == 0.01  # the local definition wins over optim.yaml's


@pytest.mark.parametrize("name", ["mlp", "cnn", "linear", "optim"])
def test_shipped_spaces_load(name):
    space = load_space(SEARCH_SPACES_DIR / f"{name}.yaml")
    assert "lr" in space


@pytest.mark.parametrize("spec, key, rule", [
    ({"lr": {"type": "float", "low": 1.0, "high": 0.1}}, "space.params.lr", "`low <= high` must hold"),
    ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "space.params.lr.low", "must be > 0"),
    ({"lr": {"type": "floaty", "low": 0.0, "high": 0.1}}, "space.params.lr.type", "must be one of"),
    ({"act": {"type": "categorical", "choices": []}}, "space.params.act.choices", "non-empty list"),
    ({"m": {"type": "float", "low": 0, "high": 1, "when": {"optimizer": "sgd"}}}, "space.m.when.optimizer",
     "parent parameter that does not exist"),
    ({"lr": {"type": "float", "low": 0, "hgh": 1}}, "space.params.lr.hgh", "is not a key of a float parameter"),
    ({"n": {"type": "int", "low": 0.5, "high": 3}}, "space.params.n.low", "must be an integer"),
])
def test_bad_space_raises_error_naming_key_rule_and_value(spec, key, rule):
    with pytest.raises(HpoConfigError) as err:
        SearchSpace.from_dict({"params": spec})
    assert err.value.key == key
    assert rule in str(err.value)


def test_condition_on_value_the_parent_cannot_take_is_rejected():
    with pytest.raises(HpoConfigError, match="among the parent's values"):
        SearchSpace({"opt": Categorical(["sgd"]), "m": Float(0, 1, when={"opt": "adam"})})


def test_conditional_cycle_is_rejected():
    with pytest.raises(HpoConfigError, match="cycle"):
        SearchSpace({"a": Categorical([1, 2], when={"b": 1}), "b": Categorical([1, 2], when={"a": 1})})


def test_ray_stepped_values_are_exactly_optunas() -> None:
    space = SearchSpace({"n": Int(1, 10, step=4), "f": Float(0, 1, step=0.3), "g": Float(0.05, 0.5, step=0.15)})
    ray_space = space.to_ray()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna_draws: dict[str, set] = {"n": set(), "f": set(), "g": set()}
    for _ in range(300):
        for name, value in space.suggest(study.ask()).items():
            optuna_draws[name].add(round(value, 9))
    for name, expected in (("n", {1, 5, 9}), ("f", {0.0, 0.3, 0.6, 0.9}), ("g", {0.05, 0.2, 0.35, 0.5})):
        drawn = set(_ray_samples(ray_space[name], 500))
        assert drawn == expected and {round(v, 9) for v in drawn} == optuna_draws[name], (name, drawn)
        assert all(space.params[name].contains(v) for v in drawn)


def test_ray_stepped_sampling_is_seeded_by_the_variant_generator() -> None:
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    space = SearchSpace({"n": Int(1, 100, step=3), "f": Float(0, 1, step=0.01)})

    def draws(seed: int) -> list:
        rng = np.random.default_rng(seed)  # what BasicVariantGenerator(random_state=seed) hands down
        return [next(generate_variants(space.to_ray(), random_state=rng))[1] for _ in range(5)]

    assert draws(3) == draws(3) and draws(3) != draws(4)


def test_pbt_perturbations_stay_on_the_step_lattice() -> None:
    from hpo.strategies._schedulers import _ClipToSpace

    clip = _ClipToSpace({"n": (1, 10, True, 4), "f": (0.0, 1.0, False, 0.3), "x": (0.0, 1.0, False, None)})
    assert clip({"n": 6.2, "f": 0.4, "x": 1.2}) == {"n": 5, "f": 0.3, "x": 1.0}
    assert clip({"n": 12, "f": 0.95}) == {"n": 9, "f": 0.9}  # the top lattice point, not high itself
