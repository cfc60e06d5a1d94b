"""MLflow tracking overhead: the same search with tracking off, to SQLite, and to an HTTP server.

    python -m benchmarks.tracking [--quick] [--repeats N] [--out DIR]
    python -m benchmarks.tracking --writer [--trials N] [--window N] [--repeats N]

Every run is the same search (built-in digits MLP, random search with a fixed seed, FIFO, so
every run trains the same configurations for the same epochs) on one embedded Ray instance.
Modes are interleaved in a rotating order each repeat, so drift on a shared machine spreads
over all modes; the table reports medians and the ratio to tracking off.

``--writer`` times hpo's MLflow writer alone, on a new SQLite store each time, with no search: the
events of ``--trials`` (256) trials of 10 epochs and 11 metrics each (what the built-in task
reports), in flush windows of ``--window`` (32) trials, written one run at a time through
MLflow's client (as over HTTP) and in one transaction per window (what a database store gets),
alternating; the driver CPU per trial (``time.process_time``), median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("off", "sqlite", "http")


def _experiment(name: str, num_samples: int, epochs: int, tracking: dict[str, Any], storage: str) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"dataset": "digits", "epochs": epochs},
        "space": {"include": ["mlp.yaml"]},
        "metric": "val_accuracy",
        "mode": "max",
        "strategy": {"searcher": "random", "scheduler": "fifo", "seed": 0},
        "num_samples": num_samples,
        "max_concurrent": 2,
        "storage_path": storage,
        "tracking": tracking,
    }


def _cpu(server: Any) -> float:
    """CPU seconds used so far by this (driver) process and the MLflow server's processes."""
    import os
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    total = ru.ru_utime + ru.ru_stime
    for pid in server.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def _trial_events(tid: str, epochs: int = 10) -> list[tuple[str, str, Any]]:
    """What the built-in task's trial sends the writer: its start, one result per epoch, its end."""
    from hpo.wire import NODE_KEY, STEP_KEY, TIME_KEY

    config = {"lr": 0.01, "hidden": 64, "depth": 2, "batch_size": 64, "dataset": "digits", "model": "mlp",
              "epochs": epochs}
    names = ("val_accuracy", "val_loss", "train_loss", "epoch_time_s", "lr", "param_count", "train_time_s",
             "latency_us", "val_f1", "val_precision", "val_recall")
    out: list[tuple[str, str, Any]] = [("start", tid, (tid, config))]
    out += [("result", tid, {**{n: 0.5 + 0.01 * e for n in names}, STEP_KEY: e, TIME_KEY: 1.8e9 + e,
                             NODE_KEY: "10.0.0.1"}) for e in range(1, epochs + 1)]
    return [*out, ("end", tid, ("completed", None))]


def writer_costs(trials: int, window: int, repeats: int) -> dict[str, Any]:
    """Driver CPU ms per trial of the MLflow writer alone: run by run, and one transaction per window."""
    from hpo.rundir import STATE_FILE, write_json
    from hpo.strategies import TrialOutcomes
    from hpo.tracking.mlflow import MlflowTracker

    costs: dict[str, list[float]] = {"run by run": [], "one transaction per window": []}
    for r in range(repeats):
        for together in (False, True) if r % 2 == 0 else (True, False):
            with tempfile.TemporaryDirectory(prefix="hpo-bench-writer-") as tmp:
                run_dir = Path(tmp, "run")
                run_dir.mkdir()
                write_json(run_dir / STATE_FILE, {"experiment": {}})
                t = MlflowTracker(f"sqlite:///{tmp}/mlflow.db", "writer", "run", str(run_dir / STATE_FILE),
                                  TrialOutcomes(), metrics=["val_accuracy"])
                t._connect()
                t._open()
                t.together = together
                t._write(_trial_events("warm-up"))  # first-use costs (imports, statements) are not the writer's
                c0 = time.process_time()
                for w in range(0, trials, window):
                    t._write([e for i in range(w, min(w + window, trials)) for e in _trial_events(f"t{i}")])
                costs["one transaction per window" if together else "run by run"].append(
                    1000 * (time.process_time() - c0) / trials)
    med = {k: round(statistics.median(v), 2) for k, v in costs.items()}
    return {"trials": trials, "window": window, "repeats": repeats, "cpu_ms_per_trial": med,
            "runs": {k: [round(x, 2) for x in v] for k, v in costs.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small search, one repeat (a smoke test)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--writer", action="store_true", help="the MLflow writer alone: run by run against one "
                   "transaction per window (no search)")
    p.add_argument("--trials", type=int, default=256, help="--writer: trials written")
    p.add_argument("--window", type=int, default=32, help="--writer: trials per flush window")
    args = p.parse_args(argv)
    if args.writer:
        res = writer_costs(args.trials, args.window, args.repeats)
        print(f"MLflow writer alone, {res['trials']} trials of 10 epochs x 11 metrics in windows of {res['window']}, "
              f"new SQLite store, median of {res['repeats']}: driver CPU ms per trial")
        for way, ms in res["cpu_ms_per_trial"].items():
            print(f"  {way:<28} {ms:>7.2f}   runs {res['runs'][way]}")
        return res
    if args.quick:
        args.repeats, args.num_samples, args.epochs = 1, 4, 3

    import ray

    import hpo
    from hpo.testing.mlflow_server import MlflowServer

    work = Path(tempfile.mkdtemp(prefix="hpo-bench-tracking-"))
    server = MlflowServer()
    server.start()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    uris = {"off": None, "sqlite": f"sqlite:///{work}/mlflow.db", "http": server.uri}
    walls: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}  # driver + MLflow server CPU seconds
    try:
        # warm-up: imports, the SQLite schema, the server's first requests (not measured)
        for mode in MODES:
            tracking = {"enabled": mode != "off", "tracking_uri": uris[mode]}
            hpo.run(_experiment(f"warmup-{mode}", 2, 2, tracking, str(work / "runs")))
        for r in range(args.repeats):
            order = MODES[r % 3:] + MODES[: r % 3]
            for mode in order:
                tracking = {"enabled": mode != "off", "tracking_uri": uris[mode]}
                exp = _experiment(f"bench-{mode}", args.num_samples, args.epochs, tracking, str(work / "runs"))
                c0, t0 = _cpu(server), time.perf_counter()
                results = hpo.run(exp)
                walls[mode].append(time.perf_counter() - t0)
                cpus[mode].append(_cpu(server) - c0)
                assert results.count("completed") == args.num_samples
                if mode != "off":
                    assert results.parent_run_id, f"{mode}: nothing recorded"
    finally:
        ray.shutdown()
        server.stop()
    base = statistics.median(walls["off"])
    base_cpu = statistics.median(cpus["off"])
    rows = []
    for mode in MODES:
        med = statistics.median(walls[mode])
        rows.append({"mode": mode, "median_s": round(med, 3), "runs_s": [round(w, 3) for w in walls[mode]],
                     "ratio_to_off": round(med / base, 4), "overhead_pct": round(100 * (med / base - 1), 2),
                     "results_per_s": round(args.num_samples * args.epochs / med, 1),
                     "extra_cpu_s_per_trial": round((statistics.median(cpus[mode]) - base_cpu) / args.num_samples, 4)})
    out = {
        "benchmark": "tracking_overhead",
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}",
        "search": f"{args.num_samples} trials x {args.epochs} epochs, digits MLP, random+fifo, 2 concurrent",
        "repeats": args.repeats,
        "target": "tracking on adds at most 5% wall time (sqlite and http)",
        "rows": rows,
    }
    print(f"MLflow tracking overhead ({out['search']}, {args.repeats} repeats, medians)")
    print(f"{'mode':<8} {'median s':>9} {'vs off':>8} {'overhead':>9} {'results/s':>10} {'CPU s/trial':>12}  runs")
    for r in rows:
        print(f"{r['mode']:<8} {r['median_s']:>9.2f} {r['ratio_to_off']:>8.3f} {r['overhead_pct']:>8.1f}% "
              f"{r['results_per_s']:>10.1f} {r['extra_cpu_s_per_trial']:>12.4f}  {r['runs_s']}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = "tracking_quick.json" if args.quick else "tracking.json"
    Path(args.out, name).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
