"""Third-party strategies register through the `hpo.strategies` entry-point group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, _env

PLUGIN = '''
import optuna
from hpo.strategies import StrategyInfo

def _sampler(seed, n_startup_trials=2):
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)

STRATEGIES = [StrategyInfo("demo-tpe", "sampler", "Demo plug-in: TPE with two start-up trials", _sampler)]
'''


def _install_plugin(site: Path) -> None:
    """A real installed distribution (dist-info with entry_points.txt), as pip would leave it."""
    (site / "hpo_demo_plugin.py").write_text(PLUGIN)
    info = site / "hpo_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hpo-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hpo.strategies]\ndemo = hpo_demo_plugin:STRATEGIES\n")


def _hpo(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = _env()
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], env=env, capture_output=True, text=True,
                          cwd=site, timeout=120)


def test_entry_point_strategy_is_listed_validated_and_passes_conformance(tmp_path):
    _install_plugin(tmp_path)
    out = _hpo(tmp_path, "strategies")
    assert out.returncode == 0, out.stderr
    assert "demo-tpe" in out.stdout and "Demo plug-in" in out.stdout
    ok = _hpo(tmp_path, "validate", str(ROOT / "examples" / "quickstart.yaml"),
              "--set", "strategy.searcher=demo-tpe", "--set", "strategy.searcher_options={n_startup_trials: 3}")
    assert ok.returncode == 0, ok.stderr
    bad = _hpo(tmp_path, "validate", str(ROOT / "examples" / "quickstart.yaml"),
               "--set", "strategy.searcher=demo-tpe", "--set", "strategy.searcher_options={n_startup: 3}")
    assert bad.returncode == 2 and "n_startup_trials" in bad.stderr
    # the plug-in passes the same searcher conformance checks as the built-ins
    code = (
        "from hpo.testing import SearcherConformance\n"
        "class TestDemo(SearcherConformance):\n    searcher = 'demo-tpe'\n"
    )
    (tmp_path / "test_demo_conformance.py").write_text(code)
    env = _env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not num_samples",
                          str(tmp_path / "test_demo_conformance.py")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout + run.stderr
