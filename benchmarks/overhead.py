"""Framework overhead: the same 256 trials in-process, on plain Ray Tune, on plain Optuna, and with hpo.

    python -m benchmarks.overhead [--quick] [--ways a,b,c,d] [--b-trials N] [--skip-second] [--workers N]
                                  [--out DIR]

Workload 1: a fixed grid of 256 digits-MLP configurations (8 learning rates x 4 widths x
2 depths x 4 batch sizes), 10 epochs each, no early stopping, one thread per trial, run four
ways, each in its own fresh process started by this script:

  (a) in-process, sequentially, a minimal PyTorch loop (the ideal single worker);
  (b) plain Ray Tune with its defaults (function trainable, data loaded in the trainable,
      grid_search param space), 2 trials at a time. Its defaults start a new actor (torch
      import, data load) per trial, so by default only the first ``--b-trials`` (32)
      configurations run here, as in the issue's planning measurement;
  (c) plain Optuna: two worker processes sharing one JournalStorage file, the 256 configurations
      enqueued, data loaded once per process;
  (d) ``hpo run`` (the CLI) on the built-in task, grid searcher, FIFO, MLflow tracking on to a
      fresh SQLite store, 2 trials at a time.

Every trial stamps its own start, first result (epoch 1) and end with wall-clock time (hpo's
trials via the ``hpo_time`` field of each result in Ray's result files). From those:

  * framework efficiency = (sum of the trials' own time / workers) / (last trial end - first
    trial start): the share of the workers' time spent inside trials once the search runs;
  * end-to-end efficiency: the same over command start to last trial end (start-up included);
  * start-up = command start to the first trial's first result (Python, imports, Ray start);
  * steady-state cost per trial = worker-seconds not spent in a trial, per trial.

Workload 2 (Ray's bookkeeping-overhead release test scaled to this machine): 200 trials that
each report once after one second (sleeping), 2 at a time; ideal wall 100 s. Run for plain Ray
Tune with defaults (its first ``--b-trials`` trials) and for hpo. ``--quick`` runs 16
configurations x 3 epochs and 10 one-second trials. Results: ``benchmarks/results/overhead[_quick].json`` and ``.png``.
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
from itertools import product
from pathlib import Path
from typing import Any

from benchmarks.cpu_share import ProcessCpu

LRS = [round(1e-3 * (30 ** (i / 7)), 6) for i in range(8)]
HIDDEN = [32, 64, 96, 128]
DEPTH = [1, 2]
BATCH = [32, 64, 96, 128]
WORKERS = 2
HPO_DOES = ("Short trials are packed: once the first trials are seen to take ~0.1 s, each Ray Tune trial "
            "carries up to 8 configurations trained back to back in the same worker (packs last ~1 s and shrink "
            "at the end of the search), while every configuration stays its own hpo trial, searcher trial and "
            "MLflow run; a trial's last report tells Ray Tune it is done; Ray actors are reused between trials; "
            "the data set is loaded once on the driver and shared "
            "through Ray's object store; the built-in task reports to Ray Tune only at the epochs the scheduler "
            "decides at (FIFO: once, at the end; ASHA: its rungs; at least every flush_interval_s/2), the other "
            "epochs travel along with that report and still reach MLflow with their own step and time; Ray's "
            "CSV/TensorBoard loggers and result tables are off; MLflow is written in batches by a background thread "
            "that imports MLflow and opens the store only once the first result is in; at start-up the data set "
            "loads in a thread while Ray starts.")
WAYS = {"a": "in-process loop", "b": "plain Ray Tune", "c": "plain Optuna, 2 procs", "d": "hpo run"}


def configs(n: int) -> list[dict[str, Any]]:
    """The first ``n`` configurations of the fixed grid (grid order: lr slowest, batch fastest)."""
    grid = [{"lr": lr, "hidden": h, "depth": d, "batch_size": b} for lr, h, d, b in product(LRS, HIDDEN, DEPTH, BATCH)]
    return grid[:n]


def load_data() -> tuple[Any, ...]:
    """Digits with hpo's own split and scaling, so every way trains on the same rows."""
    import torch

    from hpo.train.data import load_dataset

    split = load_dataset("digits").splits(0)[0]
    return tuple(torch.from_numpy(a) for a in (split.x_train, split.y_train, split.x_val, split.y_val))


def hand_trial(cfg: dict[str, Any], data: tuple[Any, ...], epochs: int, report: Any = None) -> dict[str, float]:
    """A minimal PyTorch loop: one trial. ``report(epoch, metrics)`` is called after each epoch."""
    import torch
    from torch import nn

    t_start = time.time()
    x_tr, y_tr, x_val, y_val = data
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = x_tr.shape[1]
    for _ in range(cfg["depth"]):
        layers += [nn.Linear(width, cfg["hidden"]), nn.ReLU()]
        width = cfg["hidden"]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    bs = cfg["batch_size"]
    t_first = acc = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(x_tr), bs):
            idx = perm[i : i + bs]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(x_val).argmax(1) == y_val).float().mean())
        now = time.time()
        t_first = t_first or now
        if report is not None:
            report(epoch, {"val_accuracy": acc, "t_start": t_start, "t_first": t_first, "t_end": now})
    return {"t_start": t_start, "t_first": t_first, "t_end": time.time(), "val_accuracy": acc}


# -- the ways, each run as a child process ------------------------------------------------------


def child_inprocess(spec: dict[str, Any]) -> list[dict[str, float]]:
    import torch

    torch.set_num_threads(1)
    data = load_data()
    hand_trial(configs(1)[0], data, 1)  # warm-up: first-call costs are not training
    return [hand_trial(c, data, spec["epochs"]) for c in configs(spec["n"])]


def _ray_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    data = load_data()  # plain Ray Tune: data loaded in the trainable
    epochs = config.pop("_epochs")
    if "_sleep" in config:
        t0 = time.time()
        time.sleep(config["_sleep"])
        tune.report({"loss": 0.0, "t_start": t0, "t_first": time.time(), "t_end": time.time()})
        return
    hand_trial(config, data, epochs, lambda epoch, m: tune.report(m))


def child_ray(spec: dict[str, Any]) -> list[dict[str, float]]:
    from ray import tune

    if spec.get("sleep"):
        space: dict[str, Any] = {"_sleep": spec["sleep"], "_epochs": 1, "i": tune.grid_search(list(range(spec["n"])))}
    else:
        cs = configs(spec["n"])
        space = {"_epochs": spec["epochs"], "cfg": tune.grid_search(cs)}
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    def trainable(config: dict[str, Any]) -> None:
        cfg = dict(config.pop("cfg", {}))
        _ray_trainable({**config, **cfg})

    tuner = tune.Tuner(trainable, param_space=space,
                       run_config=tune.RunConfig(storage_path=spec["work"], verbose=0))
    grid = tuner.fit()
    return [{k: r.metrics[k] for k in ("t_start", "t_first", "t_end")} for r in grid if r.metrics]


def _optuna_objective(data: tuple[Any, ...], epochs: int) -> Any:
    def objective(trial: Any) -> float:
        cfg = {"lr": trial.suggest_float("lr", LRS[0], LRS[-1], log=True),
               "hidden": trial.suggest_categorical("hidden", HIDDEN),
               "depth": trial.suggest_categorical("depth", DEPTH),
               "batch_size": trial.suggest_categorical("batch_size", BATCH)}
        rec = hand_trial(cfg, data, epochs)
        for k in ("t_start", "t_first", "t_end"):
            trial.set_user_attr(k, rec[k])
        return rec["val_accuracy"]

    return objective


def journal_storage(path: str) -> Any:
    """An Optuna JournalStorage on one file: what several plain-Optuna worker processes share."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))


def child_optuna_worker(spec: dict[str, Any]) -> list[dict[str, float]]:
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_data()
    study = optuna.load_study(study_name="overhead", storage=journal_storage(spec["journal"]))
    study.optimize(_optuna_objective(data, spec["epochs"]), n_trials=spec["n_trials"])
    return []


def child_optuna(spec: dict[str, Any]) -> list[dict[str, float]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = str(Path(spec["work"]) / "journal.log")
    study = optuna.create_study(study_name="overhead", storage=journal_storage(journal), direction="maximize")
    for c in configs(spec["n"]):
        study.enqueue_trial(c)
    workers = spec.get("workers", WORKERS)
    shares = [spec["n"] // workers + (i < spec["n"] % workers) for i in range(workers)]
    procs = [_spawn("optuna-worker", {**spec, "journal": journal, "n_trials": k}) for k in shares]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"optuna worker failed:\n{p.stderr.read() if p.stderr else ''}")
    return [{k: t.user_attrs[k] for k in ("t_start", "t_first", "t_end")} for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE]


def sleep_trainable(config: dict[str, Any]) -> None:
    """Workload 2 for hpo: report once after one second."""
    import hpo

    t0 = time.time()
    time.sleep(1.0)
    hpo.report({"loss": float(config["i"]), "t_start": t0})


def child_hpo(spec: dict[str, Any]) -> list[dict[str, float]]:
    import yaml

    work = Path(spec["work"])
    exp: dict[str, Any] = {"name": "overhead", "metric": "val_accuracy", "mode": "max",
                           "strategy": {"searcher": "grid", "scheduler": "fifo"}, "resources": {"cpu": 1},
                           "max_concurrent": spec.get("workers", WORKERS), "storage_path": str(work / "runs")}
    if spec.get("sleep"):
        exp.update(trainable="benchmarks.overhead:sleep_trainable", metric="loss", mode="min",
                   space={"params": {"i": {"type": "grid", "values": list(range(spec["n"]))}}})
    else:
        cs = configs(spec["n"])
        # a grid whose product is exactly the first n configurations of the fixed grid
        params = {k: {"type": "grid", "values": sorted({c[k] for c in cs})} for k in cs[0]}
        exp.update(task={"dataset": "digits", "model": "mlp", "epochs": spec["epochs"]},
                   space={"params": params})
    (work / "exp.yaml").write_text(yaml.safe_dump(exp))
    hpo_bin = Path(sys.executable).with_name("hpo")
    extra = [a for kv in spec.get("hpo_set", []) for a in ("--set", kv)]
    out = subprocess.run([str(hpo_bin), "run", str(work / "exp.yaml"), "--json", "--tracking-uri",
                          f"sqlite:///{work}/mlflow.db", *extra], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"hpo run failed:\n{out.stderr[-3000:]}")
    summary = json.loads(out.stdout)
    if summary["num_completed"] != spec["n"]:
        raise RuntimeError(f"hpo completed {summary['num_completed']} of {spec['n']} trials")
    from hpo.wire import HISTORY_KEY, PACK_KEY, split_result

    trials: dict[str, list[dict[str, Any]]] = {}  # trial id -> its steps, oldest first
    firsts: dict[str, float] = {}
    starts: dict[str, float] = {}
    for f in Path(summary["storage_path"]).glob("*/result.json"):
        for line in f.read_text().splitlines():
            row = json.loads(line) if line.strip() else None
            if row is None:
                continue
            # a packed Ray trial carries several trials: each is counted on its own
            packed = PACK_KEY in row.get("config", {})
            for tid, sub in split_result(row) if packed else [(row["trial_id"], row)]:
                firsts.setdefault(tid, sub["hpo_time"])  # when its first report was sent
                starts.setdefault(tid, sub.get("hpo_started", sub.get("t_start")))
                trials.setdefault(tid, []).extend([*sub.get(HISTORY_KEY, []), sub])
    recs = []
    for tid, steps in trials.items():
        # own time: from the trial's own start (model build) to its last epoch, as in (a)-(c)
        recs.append({"t_start": starts[tid], "t_first": firsts[tid], "t_end": steps[-1]["hpo_time"]})
    return recs


CHILDREN = {"a": child_inprocess, "b": child_ray, "c": child_optuna, "d": child_hpo,
            "optuna-worker": child_optuna_worker}


def _spawn(child: str, spec: dict[str, Any]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.overhead", "--child", child, "--spec", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_way(way: str, spec: dict[str, Any], ideal: list[float] | None = None) -> dict[str, Any]:
    """Start the way in a fresh process; return its trials' timestamps and derived figures."""
    work = tempfile.mkdtemp(prefix=f"hpo-bench-overhead-{way}-")
    t0 = time.time()
    proc = _spawn(way, {**spec, "work": work})
    with ProcessCpu(proc.pid) as cpu:
        stdout, stderr = proc.communicate()
    wall = time.time() - t0
    shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"way {way} failed:\n{stderr[-4000:]}")
    recs = json.loads(stdout.strip().splitlines()[-1])
    workers = 1 if way == "a" else spec.get("workers", WORKERS)
    own = [r.get("own_s", r["t_end"] - r["t_start"]) for r in recs]
    first_start = min(r["t_start"] for r in recs)
    last_end = max(r["t_end"] for r in recs)
    span = last_end - first_start
    return {
        "way": way, "label": WAYS[way], "trials": len(recs), "workers": workers,
        "own_sum_s": round(sum(own), 3), "own_median_s": round(statistics.median(own), 4),
        "search_wall_s": round(span, 3), "command_wall_s": round(wall, 3),
        "startup_s": round(min(r["t_first"] for r in recs) - t0, 3),
        "efficiency": round(sum(own) / workers / span, 4),
        # the in-process loop's time for the same configurations, over this way's search wall
        "vs_ideal": round(sum(ideal[: len(recs)]) / workers / span, 4) if ideal else None,
        "end_to_end_efficiency": round(sum(own) / workers / (last_end - t0), 4),
        "cost_per_trial_s": round((workers * span - sum(own)) / len(recs), 4),
        # completion times, for the plot
        "done_at_s": sorted(round(r["t_end"] - t0, 3) for r in recs),
        "own_s": [round(x, 4) for x in own],
        # CPU seconds by process role over the whole command (/proc samples): where the cores went
        "cpu_by_role_s": cpu.by_role(),
        # the same from the first trial's start to the last trial's end: what the trials ran beside
        "search_cpu_by_role_s": cpu.by_role(first_start, last_end),
    }


def _plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "digits", "256 digits trials"), (axes[1], "one_second", "1-second trials")):
        for row in out.get(key, []):
            done = row["done_at_s"]
            ax.plot(done, range(1, len(done) + 1), label=f"({row['way']}) {row['label']}: eff {row['efficiency']:.2f}")
        ax.set_xlabel("seconds since command start")
        ax.set_ylabel("trials finished")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    print(f"{'way':<26} {'trials':>6} {'own s':>7} {'search s':>9} {'eff':>6} {'vs (a)':>7} {'e2e eff':>8} "
          f"{'start-up s':>10} {'cost/trial ms':>13}")
    for r in rows:
        print(f"({r['way']}) {r['label']:<22} {r['trials']:>6} {r['own_sum_s']:>7.2f} {r['search_wall_s']:>9.2f} "
              f"{r['efficiency']:>6.3f} {r['vs_ideal'] or float('nan'):>7.3f} {r['end_to_end_efficiency']:>8.3f} "
              f"{r['startup_s']:>10.2f} "
              f"{1000 * r['cost_per_trial_s']:>13.1f}")


def _cpu_table(rows: list[dict[str, Any]]) -> None:
    """CPU seconds by process role, one column per way and span: where the two cores went."""
    spans = (("cpu_by_role_s", "command"), ("search_cpu_by_role_s", "search"))
    roles: list[str] = []
    for r in rows:
        for key, _ in spans:
            roles += [k for k in r.get(key, {}) if k not in roles]
    if not roles:
        return
    cols = [(r, key, label) for r in rows for key, label in spans if r.get(key)]
    print("CPU seconds by process, over the whole command and over the search (first trial start to last end)")
    print(f"{'':<26}" + "".join(f"{'(' + r['way'] + ') ' + label:>13}" for r, _, label in cols))
    for role in roles:
        print(f"{role:<26}" + "".join(f"{r[key].get(role, 0.0):>13.1f}" for r, key, _ in cols))
    print(f"{'all processes':<26}" + "".join(f"{sum(r[key].values()):>13.1f}" for r, key, _ in cols))
    print(f"{'wall x cores':<26}" + "".join(
        f"{(r['command_wall_s'] if label == 'command' else r['search_wall_s']) * (os.cpu_count() or 1):>13.1f}"
        for r, _, label in cols))
    print(f"{'trials own time (wall)':<26}" + "".join(f"{r['own_sum_s']:>13.1f}" for r, _, _ in cols))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="16 configurations x 3 epochs, 10 one-second trials")
    p.add_argument("--ways", default="a,b,c,d")
    p.add_argument("--b-trials", type=int, default=32, help="configurations run by plain Ray Tune defaults")
    p.add_argument("--skip-second", action="store_true", help="skip the 1-second-trials workload")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--workers", type=int, default=WORKERS,
                   help="worker processes of (c) and concurrent trials of (d) (default 2); e.g. 1 on a 2-core "
                        "machine leaves the driver a core of its own; (b) always runs Ray Tune's defaults")
    p.add_argument("--hpo-set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to `hpo run --set` for way (d), e.g. tracking.enabled=false (to compare)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        recs = CHILDREN[args.child](json.loads(args.spec))
        print(json.dumps(recs))
        return {}
    n, epochs, n_sleep = (16, 3, 10) if args.quick else (256, 10, 200)
    ways = [w for w in args.ways.split(",") if w]
    if args.workers < 1 or (args.workers != WORKERS and "b" in ways):
        p.error(f"--workers must be >= 1, and {WORKERS} (Ray Tune's defaults on this benchmark) when way b runs: "
                f"got {args.workers} with ways {args.ways}")
    digits: list[dict[str, Any]] = []
    ideal: list[float] | None = None  # per-trial times of (a), in grid order
    for way in ways:
        k = min(n, args.b_trials) if way == "b" else n
        digits.append(run_way(way, {"n": k, "epochs": epochs, "hpo_set": args.hpo_set, "workers": args.workers},
                              ideal))
        if way == "a":
            ideal = digits[-1]["own_s"]
        print(f"  ({way}) {WAYS[way]}: {digits[-1]['search_wall_s']:.1f} s", file=sys.stderr, flush=True)
    one_second = []
    if not args.skip_second:
        for way in [w for w in ways if w in ("b", "d")]:
            k = min(n_sleep, args.b_trials) if way == "b" else n_sleep
            one_second.append(run_way(way, {"n": k, "sleep": 1.0, "hpo_set": args.hpo_set, "workers": args.workers}))
            print(f"  ({way}) 1-second trials: {one_second[-1]['search_wall_s']:.1f} s", file=sys.stderr, flush=True)
    import torch

    out = {
        "benchmark": "framework_overhead",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__}",
        "workload": f"{n} digits MLP configurations x {epochs} epochs, FIFO, {args.workers} workers, 1 thread each",
        "targets": "hpo efficiency >= 0.85 (digits) and >= 0.90 (1-second trials); start-up <= 10 s",
        "what_hpo_does": HPO_DOES,
        "digits": digits,
        "one_second": one_second,
    }
    _table(f"Workload 1: {out['workload']}", digits)
    _cpu_table(digits)
    if one_second:
        _table(f"Workload 2: {n_sleep} trials x 1 s (sleep), {args.workers} workers", one_second)
    print(f"What hpo does: {HPO_DOES}")
    hpo_rows = [r for r in digits + one_second if r["way"] == "d"]
    if hpo_rows:
        eff = [r["efficiency"] for r in hpo_rows]
        print(f"hpo: efficiency {eff} (targets 0.85 / 0.90), start-up {hpo_rows[0]['startup_s']:.2f} s (target 10 s)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    stem = "overhead_quick" if args.quick else "overhead"
    Path(args.out, f"{stem}.json").write_text(json.dumps(out, indent=2))
    _plot(out, Path(args.out, f"{stem}.png"))
    return out


if __name__ == "__main__":
    main()
