"""``resources.memory``: reserved from Ray's memory resource and enforced in the worker, so a
trial that allocates more fails alone with MemoryError; the other trials and the driver go on."""

from __future__ import annotations

import json
import resource

import numpy as np
import pytest

from hpo.config import Experiment, parse_size
from hpo.errors import HpoConfigError
from hpo.train.builtin import memory_capped


@pytest.mark.parametrize("text,size", [("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5GiB", 3 * 2**29),
                                       ("64k", 64 * 1024), (4096, 4096)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "-1G", 0, True, "1X", 1.5])
def test_a_bad_memory_size_is_an_error_naming_the_key(bad):
    with pytest.raises(HpoConfigError, match="resources.memory"):
        Experiment.from_dict({"name": "m", "trainable": "tests.trainables:quadratic", "metric": "loss",
                              "space": {"x": {"type": "float", "low": 0, "high": 1}}, "resources": {"memory": bad}})


def test_the_cap_fails_an_allocation_beyond_it_and_is_lifted_afterwards():
    before = resource.getrlimit(resource.RLIMIT_DATA)

    def hungry(config):
        return np.ones(config["n"]).sum()

    capped = memory_capped(hungry, 64 * 2**20)
    assert capped({"n": 1000}) == 1000.0  # small: fine
    with pytest.raises(MemoryError):
        capped({"n": 2**30 // 8 * 2})  # 2 GiB
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


@pytest.mark.slow
def test_a_trial_over_its_memory_errors_alone(tmp_path, ray_address):
    from hpo.rundir import find_run_dir
    from tests.conftest import hpo_cli
    from tests.test_lifecycle_search import check_records

    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "name": "mem", "trainable": "tests.trainables:allocates", "metric": "loss", "mode": "min",
        "space": {"mb": {"type": "categorical", "choices": [8, 3072, 16]}}, "strategy": "grid",
        "resources": {"cpu": 1, "memory": "512M"}, "max_concurrent": 2,
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}))
    out = hpo_cli("run", str(exp), "--address", ray_address, "--json", cwd=tmp_path, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1])["num_trials"] == 3
    run_dir = find_run_dir("mem", str(tmp_path / "hpo_results"))
    statuses = check_records(run_dir, tmp_path / "mlflow.db", "loss")
    assert sorted(statuses.values()) == ["completed", "completed", "errored"]
    records = json.loads((run_dir / "trials.json").read_text())["trials"]
    hog = next(r for r in records if r["status"] == "errored")
    assert hog["config"]["mb"] == 3072 and "MemoryError" in hog["error"]
