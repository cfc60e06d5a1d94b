"""The package's shape: layers that import downwards only, no import cycle (function-level
imports included), no private name imported across modules, tracking that imports neither
plotting nor torch, light commands that import no Ray, and model files that cannot run code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lower layers first; a module may import its own layer or those below (ARCHITECTURE.md, README's layout).
LAYERS: list[tuple[str, ...]] = [
    ("hpo.errors", "hpo.wire", "hpo.params", "hpo._imports", "hpo._cache", "hpo._yaml", "hpo._ray_domains",
     "hpo._optuna_space", "hpo._trials", "hpo.disk_space",
     "hpo._compat", "hpo._compat.ray", "hpo._compat.ray_start", "hpo._compat.mlflow", "hpo._compat.mlflow_sql",
     "hpo.strategies._outcomes",
     "hpo.strategies._constraints"),
    ("hpo.space",),
    ("hpo.strategies", "hpo.strategies._registry", "hpo.strategies._grid", "hpo.strategies._optuna",
     "hpo.strategies._schedulers", "hpo.strategies._builtin"),
    ("hpo.config",),
    ("hpo.train", "hpo.train.task", "hpo.train.data", "hpo.train.models", "hpo.train.optim", "hpo.train.model_file",
     "hpo.train.model_logger", "hpo.train.loop", "hpo.train.trial", "hpo.train.best", "hpo.train.lr_find",
     "hpo.train.builtin",
     "hpo.validate", "hpo.session",
     "hpo.packing", "hpo.decisions", "hpo.rundir", "hpo.ray_env", "hpo.results", "hpo.trial_curves",
     "hpo.importance", "hpo.plots",
     "hpo.progress", "hpo.lifecycle",
     "hpo.tracking", "hpo.tracking.mlflow", "hpo.tracking.search_record", "hpo.tracking.sqlite_store",
     "hpo.reports", "hpo.leaderboard", "hpo.pages",
     "hpo.trend", "hpo.lineage", "hpo.study_file"),
    ("hpo.runner", "hpo.nightly", "hpo.champion", "hpo.sync", "hpo.export", "hpo.testing", "hpo.testing.conformance",
     "hpo.testing.processes", "hpo.testing.mlflow_server", "hpo.schedule", "hpo.dashboard"),
    ("hpo.cli", "hpo"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in (ROOT / "hpo").rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every import in the file, at module level or inside functions."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.module, a.name) for a in node.names]
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for module, name in _imports(path):
            for target in (module, f"{module}.{name}" if name else None):
                if target in mods and target != m:
                    edges[m].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_hpo_modules() -> None:
    assert _cycles(_graph()) == []


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    edges = _graph()
    assert sorted(set(edges) - set(rank)) == [], "place new modules in LAYERS (and README's layout)"
    upward = [(m, t) for m, targets in edges.items() for t in targets if rank[t] > rank[m]]
    assert upward == []


def test_no_module_imports_a_private_name_from_another_module() -> None:
    found = []
    for m, path in _modules().items():
        for module, name in _imports(path):
            own = module == m  # a package importing its own private submodule
            if module.startswith("hpo") and name and name.startswith("_") and not name.startswith("__") and not own:
                found.append(f"{m}: from {module} import {name}")
    assert found == []


def test_tracking_imports_neither_plots_nor_torch() -> None:
    for path in (ROOT / "hpo" / "tracking").glob("*.py"):
        modules = {module for module, _ in _imports(path)}
        assert not {m for m in modules if m == "torch" or m.startswith(("torch.", "hpo.plots", "hpo.train"))}, path


@pytest.mark.parametrize("module", ["hpo.cli", "hpo.reports", "hpo.validate", "hpo.rundir", "hpo.results",
                                    "hpo.trend", "hpo.study_file", "hpo.dashboard", "hpo.leaderboard"])
def test_light_modules_import_no_ray_or_torch(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    names = sorted(_modules())
    code = f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


class _Exploit:
    def __reduce__(self):  # noqa: ANN204 - what a hostile model file would carry
        return (print, ("this ran while loading",))


def test_model_files_never_run_code_when_loaded(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from hpo.train.model_file import load_payload

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2), "x_mean": np.zeros(3, dtype=np.float32), "classes": [0, 1]}, good)
    assert load_payload(good)["x_mean"].dtype == np.float32
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.ones(2), "payload": _Exploit()}, bad)
    with pytest.raises(ValueError, match="refusing to load"):
        load_payload(bad)
