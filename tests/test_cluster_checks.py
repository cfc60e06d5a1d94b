"""The checks of a joined Ray cluster before any trial is queued (hpo.ray_env): a trial no node
can hold, an address nobody answers at, a run directory on one host's own disk under a cluster of
several hosts. Fast tests drive the decisions with fakes; one slow test runs `hpo run` against the
session's two-node cluster."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpo.config import Experiment
from hpo.errors import HpoConfigError
from hpo.ray_env import (
    _startable_node_types,
    check_cluster,
    check_reachable,
    check_resources_fit,
    check_shared_storage,
)
from tests.conftest import ROOT, _env, hpo_cli

QUICKSTART = str(ROOT / "examples" / "quickstart.yaml")
GiB = 2**30


def test_a_trial_that_fits_some_node_passes():
    nodes = [{"CPU": 4, "memory": 8 * GiB}, {"CPU": 8, "GPU": 1}]
    check_resources_fit({"CPU": 8, "GPU": 1}, nodes)
    check_resources_fit({"CPU": 2, "GPU": 0.25}, nodes)  # a fraction of a GPU fits a node with one
    check_resources_fit({"CPU": 1, "GPU": 0}, [])  # nothing known about the cluster: Ray decides


def test_a_trial_no_node_can_hold_names_resources_and_the_largest_node():
    with pytest.raises(HpoConfigError) as err:
        check_resources_fit({"CPU": 64, "GPU": 0}, [{"CPU": 4, "memory": 8 * GiB}, {"CPU": 16, "GPU": 1}])
    assert err.value.key == "resources"
    assert "CPU 64, GPU 0 per trial" in str(err.value) and "the largest node has CPU 16, GPU 1" in str(err.value)
    # CPUs and GPUs on one node: two nodes holding them apart do not make one trial's place
    with pytest.raises(HpoConfigError, match="largest node has CPU 2, GPU 1"):
        check_resources_fit({"CPU": 8, "GPU": 1}, [{"CPU": 16}, {"CPU": 2, "GPU": 1}])
    with pytest.raises(HpoConfigError, match="largest node has CPU 2, GPU 0"):
        check_resources_fit({"CPU": 1, "GPU": 1}, [{"CPU": 2}])


def test_a_node_type_the_autoscaler_can_start_counts():
    alive = [{"CPU": 0}, {"CPU": 8}]  # a head running no trials and a CPU worker
    check_resources_fit({"CPU": 8, "GPU": 1}, alive, startable=[{"CPU": 8, "GPU": 1}])
    with pytest.raises(HpoConfigError, match="largest node has CPU 8, GPU 1"):
        check_resources_fit({"CPU": 8, "GPU": 2}, alive, startable=[{"CPU": 8, "GPU": 1}])


def test_startable_node_types_come_from_ray_ups_config_on_the_head(tmp_path):
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text("available_node_types:\n"
                      "  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}\n"
                      "  gpu: {resources: {CPU: 8, GPU: 1}, min_workers: 0, max_workers: 2, node_config: {}}\n")
    assert {"CPU": 8.0, "GPU": 1.0} in _startable_node_types(str(config))
    assert {"CPU": 0.0} not in _startable_node_types(str(config))  # the head type starts no more nodes
    assert _startable_node_types(str(tmp_path / "absent.yaml")) == []  # no config, no autoscaler in the GCS


def test_local_storage_is_refused_only_when_a_node_is_another_host():
    check_shared_storage("hpo_results", ["127.0.0.1", "127.0.0.1"], ["192.0.2.2"], env={})  # one machine
    check_shared_storage("hpo_results", ["192.0.2.2", "192.0.2.2"], ["192.0.2.2"], env={})
    with pytest.raises(HpoConfigError) as err:
        check_shared_storage("hpo_results", ["10.0.0.1", "10.0.0.7"], ["10.0.0.1"], env={})
    assert err.value.key == "storage_path" and "10.0.0.7" in str(err.value)
    assert "NFS" in str(err.value) and "HPO_SHARED_STORAGE=1" in str(err.value)
    check_shared_storage("/mnt/hpo/hpo_results", ["10.0.0.1", "10.0.0.7"], ["10.0.0.1"],
                         env={"HPO_SHARED_STORAGE": "1"})


def _fake_ray(nodes: list[dict[str, Any]], driver_ip: str = "10.0.0.1") -> Any:
    return SimpleNamespace(nodes=lambda: nodes, util=SimpleNamespace(get_node_ip_address=lambda: driver_ip))


def _exp(**kw: Any) -> Experiment:
    return Experiment.from_dict({"name": "c", "space": {"lr": 0.1}, "metric": "val_accuracy", **kw})


def test_check_cluster_uses_alive_nodes_only(monkeypatch):
    monkeypatch.delenv("HPO_SHARED_STORAGE", raising=False)
    nodes = [{"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 4}},
             {"Alive": False, "NodeManagerAddress": "10.0.0.9", "Resources": {"CPU": 64}}]
    check_cluster(_exp(resources={"cpu": 4}), _fake_ray(nodes), "hpo_results")
    with pytest.raises(HpoConfigError, match="resources: .*largest node has CPU 4"):  # the dead node is gone
        check_cluster(_exp(resources={"cpu": 8}), _fake_ray(nodes), "hpo_results")
    nodes[1]["Alive"] = True
    with pytest.raises(HpoConfigError, match="storage_path: .*10.0.0.9"):
        check_cluster(_exp(), _fake_ray(nodes), "hpo_results")
    monkeypatch.setenv("HPO_SHARED_STORAGE", "1")
    check_cluster(_exp(), _fake_ray(nodes), "/mnt/hpo/hpo_results")
    assert check_cluster(_exp(), _fake_ray(nodes), "/mnt/hpo/hpo_results") == 68  # trials it holds at once
    assert check_cluster(_exp(resources={"cpu": 4}), _fake_ray(nodes[:1]), "hpo_results") == 1


@pytest.mark.slow
def test_short_trials_of_a_searcher_run_on_every_node_at_once(tmp_path, ray_address):
    """Ray Tune keeps one trial waiting for a worker under a searcher of its own (not its variant
    generator): the next short trial took the actor the last one freed before the second node's
    worker had started, and a search ran one trial at a time on one node. hpo queues one per slot."""
    import hpo

    results = hpo.run(name="both", trainable="benchmarks.scale_out:sleep_trial", metric="loss", mode="min",
                      space={"x": {"type": "float", "low": 0, "high": 1}, "trial_s": 1.0},
                      strategy={"searcher": "tpe", "seed": 0}, num_samples=6, address=ray_address,
                      storage_path=str(tmp_path / "runs"), tracking={"enabled": False})
    spans = sorted((t.metrics["t_start"], t.metrics["t_end"]) for t in results.trials)
    assert len(results.nodes) == 2
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans  # two trials ran at the same time


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_nobody_answers_at_is_an_error_naming_it():
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(HpoConfigError) as err:
        check_reachable(address, timeout=2)
    assert err.value.key == "--address" and address in str(err.value) and "ray start --head" in str(err.value)
    with pytest.raises(HpoConfigError, match="HOST:PORT"):
        check_reachable("headnode")
    check_reachable(None)
    check_reachable("auto")  # Ray resolves it (and fails at once when no cluster runs)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"127.0.0.1:{listening.getsockname()[1]}")
        check_reachable(f"ray://127.0.0.1:{listening.getsockname()[1]}")


def test_hpo_run_with_an_unreachable_address_exits_2_within_seconds(tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    # Without the check `ray.init` retries for minutes; the timeout makes that a failure here.
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", "run", QUICKSTART, "--address", address], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--address: must reach a running Ray cluster" in proc.stderr
    assert address in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_a_trial_larger_than_every_node_fails_before_any_trial(tmp_path: Path, ray_address: str):
    # The session's cluster: two nodes of one CPU each. Ray would keep a 64-CPU trial pending for ever.
    proc = hpo_cli("run", QUICKSTART, "--address", ray_address, "--set", "resources.cpu=64", cwd=tmp_path,
                   check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "resources: each trial must fit on one node" in proc.stderr
    assert "CPU 64, GPU 0 per trial; the largest node has CPU 1, GPU 0" in proc.stderr
    assert not (tmp_path / "hpo_results").exists()  # no run directory, no trial
