"""Regenerate the two pictures README shows: a real quickstart search (24 trials of TPE + ASHA on
digits, 20 epochs each at most), drawn as its optimization history and its learning curves.

Run: python examples/pictures.py [--out examples/pictures] [--address RAY_ADDRESS]

The search runs in a temporary directory with MLflow off and without the best-model recovery,
so it leaves nothing behind but the two PNG files; on a busy 2-core machine it took 49 s, Ray's
start included. The search is seeded (``strategy.seed: 0``), but trial timing on a busy machine can
change which trials ASHA prunes, so a new run draws a picture of the same kind, not the same
pixels.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import hpo
from hpo import plots

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "pictures"), help="where the PNG files go")
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: start Ray here)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpo-pictures-") as tmp:
        exp = hpo.load_experiment(HERE / "quickstart.yaml", [f"storage_path={tmp}", "tracking.enabled=false",
                                                             "task.test_best=false"])
        results = hpo.run(exp, address=args.address)
        written = [plots.optimization_history(results, out / "optimization_history.png"),
                   plots.learning_curves(results, out / "learning_curves.png")]
    print(f"{len(results.trials)} trials: {results.count('completed')} completed, {results.count('pruned')} pruned; "
          f"best val_accuracy {results.best_metric}")
    for path in written:
        if path is not None:
            print(f"{path} ({path.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
