"""MLflow tracking overhead: the same search with tracking off, to SQLite, and to an HTTP server.

    python -m benchmarks.tracking [--quick] [--repeats N] [--out DIR]

Every run is the same search (built-in digits MLP, random search with a fixed seed, FIFO, so
every run trains the same configurations for the same epochs) on one embedded Ray instance.
Modes are interleaved in a rotating order each repeat, so drift on a shared machine spreads
over all modes; the table reports medians and the ratio to tracking off.
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small search, one repeat (a smoke test)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
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
