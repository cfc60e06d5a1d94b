"""Scale-out: the same search on 1, 2 and 3 local Ray nodes of one CPU each.

    python -m benchmarks.scale_out [--quick] [--nodes 1,2,3] [--trials 64] [--trial-s 1.0]
                                   [--repeats 3] [--tracking] [--out DIR]

Each run starts a fresh Ray cluster of ``ray start`` processes on this machine, a head node with
``--num-cpus=1`` plus one ``ray start --address`` worker node with ``--num-cpus=1`` per extra node
(each with a 200 MB object store: the trials put nothing there), runs the search against it with
the real command, ``hpo run EXP --address HEAD --json``, and stops every process of the cluster by
pid (:func:`hpo.testing.processes.stop_processes_under`, the cluster's own temp dir as marker).

The search: ``--trials`` (64) trials of a trainable that sleeps ``--trial-s`` (1 s) and reports
once, one CPU per trial (so one trial per node at a time), random search with a fixed seed, FIFO,
no ``max_concurrent`` (as many at once as the cluster holds), MLflow tracking off (``--tracking``:
on, to a fresh SQLite store per run). The figure is how Ray and hpo spread trials over nodes, not
how fast a trial computes: sleeping trials leave the cores to the driver and the Ray processes.

Per run, from each trial's own start and end (``time.time()`` inside the trial, reported with it):

  * wall = the ``hpo run`` command, start to exit (Python start-up, joining Ray, the search, the
    end-of-search records);
  * search = first trial start to last trial end;
  * efficiency = trial seconds / (nodes x search): 1.0 when every node runs a trial all the time;
  * nodes used (the nodes the trials ran on, from the summary) and trials per node.

Every run's cluster is fresh, so each node's first trial worker (a new Python process importing
Ray Tune, a few seconds on a busy machine) starts inside the search time: one node's trials run
meanwhile, and with Ray Tune's actor reuse a late node gets fewer trials. That start-up, the
driver's and the Ray processes' share of this machine's cores, and the last wave of trials (64 is
not a multiple of 3) are what keeps efficiency under 1.

Node counts take turns within each of ``--repeats`` rounds (rotating order), so drift on a shared
machine weighs on all of them alike; the table reports medians per node count with the speed-up
of the search against the fewest nodes (one, by default). Results: ``benchmarks/results/scale_out[_quick].json``.
``--quick`` (4 trials of 0.2 s on 1 and 2 nodes, one round) is a smoke test of the machinery: its
trials are too short for a second node's first worker to start before they are done.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
OBJECT_STORE_BYTES = 200 * 1000 * 1000


def sleep_trial(config: dict[str, Any]) -> None:
    """One trial: sleep ``trial_s`` seconds, report once with its own start and end."""
    import hpo

    t0 = time.time()
    time.sleep(float(config["trial_s"]))
    hpo.report({"loss": float(config["x"]), "t_start": t0, "t_end": time.time()})


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Ray's workers on every node import this module's trainable by reference.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_AUTH_MODE"] = "disabled"
    env.setdefault("RAY_worker_niceness", "0")  # trials at normal priority, as cluster/*.yaml start nodes
    return env


def start_cluster(nodes: int, temp_dir: str) -> str:
    """A head node and ``nodes - 1`` worker nodes of one CPU each, one after the other (started at
    once on a busy machine, one may time out); returns the head's address."""
    from hpo.testing.processes import free_port

    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats",
              f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common], check=True,
                   env=_env(), capture_output=True, timeout=180)
    for _ in range(nodes - 1):
        subprocess.run([RAY, "start", f"--address={address}", *common], check=True, env=_env(), capture_output=True,
                       timeout=180)
    return address


def _experiment(trials: int, trial_s: float, tracking: bool, work: Path) -> dict[str, Any]:
    return {
        "name": "scale-out",
        "trainable": "benchmarks.scale_out:sleep_trial",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}, "trial_s": trial_s},
        "metric": "loss",
        "mode": "min",
        "strategy": {"searcher": "random", "scheduler": "fifo", "seed": 0},
        "num_samples": trials,
        "resources": {"cpu": 1},
        "storage_path": str(work / "runs"),
        "tracking": {"enabled": tracking, "tracking_uri": f"sqlite:///{work}/mlflow.db" if tracking else None},
    }


def run_once(nodes: int, trials: int, trial_s: float, tracking: bool) -> dict[str, Any]:
    """One search on a fresh ``nodes``-node cluster; the cluster is stopped (by pid) afterwards."""
    from hpo.testing.processes import stop_processes_under

    temp_dir = tempfile.mkdtemp(prefix="so", dir="/tmp")  # short: Ray's socket paths have a length limit
    work = Path(tempfile.mkdtemp(prefix="hpo-bench-scale-out-"))
    try:
        address = start_cluster(nodes, temp_dir)
        exp = work / "exp.json"  # JSON is YAML
        exp.write_text(json.dumps(_experiment(trials, trial_s, tracking, work)))
        hpo_bin = str(Path(sys.executable).with_name("hpo"))
        t0 = time.time()
        proc = subprocess.run([hpo_bin, "run", str(exp), "--address", address, "--json"], cwd=work, env=_env(),
                              capture_output=True, text=True, timeout=300 + 3 * trials * trial_s)
        wall = time.time() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"hpo run on {nodes} node(s) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        if summary["num_completed"] != trials:
            raise RuntimeError(f"{summary['num_completed']} of {trials} trials completed on {nodes} node(s)")
        records = json.loads((Path(summary["storage_path"]) / "trials.json").read_text())["trials"]
    finally:
        stop_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    starts = [r["metrics"]["t_start"] for r in records]
    ends = [r["metrics"]["t_end"] for r in records]
    own = sum(e - s for s, e in zip(starts, ends))
    search = max(ends) - min(starts)
    per_node = Counter(r["node"] for r in records)
    return {
        "nodes": nodes, "trials": len(records), "wall_s": round(wall, 3), "search_s": round(search, 3),
        "trial_s_sum": round(own, 3), "efficiency": round(own / (nodes * search), 4),
        "startup_s": round(min(starts) - t0, 3), "nodes_used": len(per_node),
        "trials_per_node": sorted(per_node.values(), reverse=True),
        "ray_temp_dir": temp_dir,  # the cluster's processes were those naming it (all stopped)
    }


def summarize(runs: list[dict[str, Any]], node_counts: list[int], trials: int, trial_s: float) -> list[dict[str, Any]]:
    """One row per node count: medians over its runs, and the search's speed-up against the fewest nodes."""
    rows = []
    for n in node_counts:
        mine = [r for r in runs if r["nodes"] == n]
        rows.append({
            "nodes": n, "runs": len(mine), "trials": trials,
            "ideal_search_s": round(trials * trial_s / n, 3),
            "wall_s": round(statistics.median(r["wall_s"] for r in mine), 3),
            "search_s": round(statistics.median(r["search_s"] for r in mine), 3),
            "efficiency": round(statistics.median(r["efficiency"] for r in mine), 4),
            "startup_s": round(statistics.median(r["startup_s"] for r in mine), 3),
            "nodes_used": min(r["nodes_used"] for r in mine),
            "runs_search_s": [r["search_s"] for r in mine],
            "runs_efficiency": [r["efficiency"] for r in mine],
        })
    base = min(rows, key=lambda row: row["nodes"])["search_s"]
    for row in rows:
        row["speedup"] = round(base / row["search_s"], 3)
    return rows


def table(rows: list[dict[str, Any]], title: str) -> str:
    """The rows as a text table, one line per node count."""
    lines = [title,
             f"{'nodes':>5} {'runs':>4} {'trials':>6} {'wall s':>8} {'search s':>9} {'ideal s':>8} "
             f"{'efficiency':>10} {'speed-up':>8} {'start-up s':>10} {'nodes used':>10}  search s per run"]
    for r in rows:
        lines.append(f"{r['nodes']:>5} {r['runs']:>4} {r['trials']:>6} {r['wall_s']:>8.2f} {r['search_s']:>9.2f} "
                     f"{r['ideal_search_s']:>8.2f} {r['efficiency']:>10.3f} {r['speedup']:>8.2f} "
                     f"{r['startup_s']:>10.2f} {r['nodes_used']:>10}  {r['runs_search_s']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="4 trials of 0.2 s on 1 and 2 nodes, one round")
    p.add_argument("--nodes", default="1,2,3", help="node counts, comma-separated")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--trial-s", type=float, default=1.0, help="seconds each trial sleeps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tracking", action="store_true", help="MLflow tracking on (SQLite); default off")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.trials, args.trial_s, args.repeats = "1,2", 4, 0.2, 1
    node_counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    if not node_counts or min(node_counts) < 1 or args.trials < 1 or args.repeats < 1:
        p.error("--nodes, --trials and --repeats must be positive")
    runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        k = r % len(node_counts)
        for n in node_counts[k:] + node_counts[:k]:
            runs.append(run_once(n, args.trials, args.trial_s, args.tracking))
            last = runs[-1]
            print(f"  round {r + 1}, {n} node(s): search {last['search_s']:.1f} s, wall {last['wall_s']:.1f} s, "
                  f"efficiency {last['efficiency']:.3f}, trials per node {last['trials_per_node']}",
                  file=sys.stderr, flush=True)
    rows = summarize(runs, node_counts, args.trials, args.trial_s)
    search = (f"{args.trials} trials x {args.trial_s:g} s (sleep), 1 CPU each, random+fifo, "
              f"tracking {'on (SQLite)' if args.tracking else 'off'}; nodes of 1 CPU each on this machine")
    findings = [f"{r['nodes']} node(s): efficiency {r['efficiency']:.3f}, search {r['search_s']:.1f} s "
                f"(ideal {r['ideal_search_s']:.1f} s), speed-up {r['speedup']:.2f}x" for r in rows]
    findings += [f"{r['nodes']} node(s): the trials ran on only {r['nodes_used']} node(s) in some run"
                 for r in rows if r["nodes_used"] < r["nodes"]]
    out = {
        "benchmark": "scale_out",
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "search": search,
        "repeats": args.repeats,
        "rows": rows,
        "runs": runs,
        "findings": findings,
    }
    print(table(rows, f"Scale-out ({search}; medians of {args.repeats} run(s))"))
    for line in findings:
        print(line)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "scale_out_quick.json" if args.quick else "scale_out.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
