"""The package as users install it: a wheel built with ``python -m build``, installed in a fresh
virtual environment, validates and runs ``examples/quickstart.yaml`` with its included space
found inside the installed package (no source tree on the path)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_wheel_ships_its_spaces_and_runs_the_quickstart_from_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=600)
    wheel = next(dist.glob("hpo-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"hpo/search_spaces/mlp.yaml", "hpo/search_spaces/cnn.yaml", "hpo/py.typed"} <= names
    venv = tmp_path / "venv"
    # A clean environment: no PYTHONPATH or working directory that would show pip this checkout's hpo.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env, cwd=tmp_path)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, env=env, cwd=tmp_path).stdout.strip())
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300, env=env, cwd=tmp_path)
    assert (site / "hpo" / "search_spaces" / "mlp.yaml").is_file()
    # The dependencies come from this environment (a .pth line adds its site-packages after the
    # new venv's own; written after the install, so pip never sees this environment's editable hpo).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.yaml", work / "quickstart.yaml")
    where = subprocess.run([str(py), "-c", "import hpo; print(hpo.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), where
    hpo_cmd = str(venv / "bin" / "hpo")
    ok = subprocess.run([hpo_cmd, "validate", "quickstart.yaml"], cwd=work, env=env, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: quickstart"), ok.stderr[-2000:]
    run = subprocess.run([hpo_cmd, "run", "quickstart.yaml", "--json", "--set", "num_samples=2",
                          "--set", "task.epochs=2", "--set", "tracking.enabled=false"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"num_trials": 2' in run.stdout.strip().splitlines()[-1]
