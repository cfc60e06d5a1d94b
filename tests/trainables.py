"""Small trainables used by tests (importable by Ray workers as ``tests.trainables``)."""

from __future__ import annotations

import time
from pathlib import Path

import hpo


def quadratic(config):
    """Loss (x - 0.3)^2 shrinking with steps; reports `loss` and `steps_done`. With `mark_dir`,
    each report also adds a line to a file `<x>-<step>` there (a test waits on them: they appear
    at once; a step run twice has two lines)."""
    x = config["x"]
    for step in range(1, int(config.get("steps", 4)) + 1):
        hpo.report({"loss": (x - 0.3) ** 2 + 1.0 / step, "score": -abs(x - 0.7)})
        if config.get("mark_dir"):
            with open(Path(config["mark_dir"], f"{x!r}-{step}"), "a") as f:
                f.write("reported\n")
        time.sleep(float(config.get("sleep", 0.0)))


def fails_when_large(config):
    """Raises for x > 0.5, otherwise reports like `quadratic`."""
    if config["x"] > 0.5:
        raise ValueError(f"x too large: {config['x']:.3f}")
    quadratic(config)


def reports_wrong_metric(config):
    hpo.report({"accuracy": 0.5, "val_loss": 1.0})


def hangs_when_large(config):
    """Reports once, then for x > 0.5 never reports again (stuck in a sleep), else like `quadratic`."""
    hpo.report({"loss": 1.0})
    if config["x"] > 0.5:
        time.sleep(3600)
    quadratic(config)


def allocates(config):
    """Reports, allocates and touches `mb` megabytes (numpy), reports again."""
    import numpy as np

    hpo.report({"loss": 1.0})
    block = np.ones(int(config["mb"] * 2**20 // 8))
    hpo.report({"loss": float(block[-1]) / 2})


def checkpointed(config):
    """`steps` steps of `sleep` s, each saved in a checkpoint; a restarted run goes on from its last
    checkpoint. Reports `loss` and `resumed_after` (the step it went on from, 0 on a fresh start)."""
    import json
    import tempfile
    from pathlib import Path

    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = int(json.loads((Path(d) / "state.json").read_text())["step"])
    for step in range(start + 1, int(config.get("steps", 4)) + 1):
        time.sleep(float(config.get("sleep", 0.0)))
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            hpo.report({"loss": (config["x"] - 0.3) ** 2 + 1.0 / step, "resumed_after": start},
                       checkpoint=tune.Checkpoint.from_directory(d))
