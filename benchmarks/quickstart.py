"""The quickstart path against plain Optuna: the same TPE + ASHA search of the digits MLP, end to end.

    python -m benchmarks.quickstart [--quick] [--trials N] [--repeats R] [--workers W] [--set KEY=VALUE ...] [--out DIR]

Two ways, each a fresh set of processes started by this script, alternating within each round
(hpo first in even rounds, Optuna first in odd ones) so drift on a shared machine hits both:

  hpo     ``hpo run examples/quickstart.yaml --set num_samples=N --json`` in a fresh temporary
          directory: its own local Ray, MLflow on SQLite there (``mlflow.db``, the quickstart's
          default), the best model recovered and logged; Ray's temporary files there too
          (``RAY_TMPDIR``), so its logs time the start-up.
  optuna  the same search as a user would run it with plain Optuna: W worker processes sharing
          one study in a JournalStorage file (``JournalFileBackend``) in a fresh temporary
          directory, each ``TPESampler(multivariate=True, seed=strategy.seed + worker index)``
          (a seed per process: one seed in both would propose the same start-up trials twice)
          and ``SuccessiveHalvingPruner(min_resource=grace_period, reduction_factor=...)`` from
          the experiment's ASHA settings (2 and 3), N/W trials each, no tracking. The space is
          the experiment's, read through hpo (``load_experiment`` and ``SearchSpace.suggest``,
          define-by-run as hpo's own searcher asks), and every trial trains with the same code
          (``hpo.train.loop.TaskRun``, hpo's data loading and task settings, one thread),
          reporting validation accuracy each epoch and pruned when the pruner says so.

``--set`` overrides go to both (``hpo run --set`` and the peer's ``load_experiment``). Every
trial's own time runs from just before its model is built to the end of its last epoch (hpo:
``hpo_started`` and the epochs' ``hpo_time`` in Ray's ``result.json`` files, read with
``hpo.rundir.trial_histories``; Optuna: the same two moments, stamped by the worker). From
those and the command's start and exit:

  * wall: command start to exit (Optuna: to the last worker's exit);
  * start-up: command start to the first trial result (the end of the first trial's first epoch);
  * before search: command start to the first trial's start; search: first trial start to last
    trial end; end: last trial end to exit (before search + search + end = wall);
  * efficiency: trials' own time / workers / search;
  * best validation accuracy among completed (full-budget) trials; trials completed, pruned, other.

Start-up is broken down from timestamps: hpo's from Ray's session logs (session start, the
driver's connection, the first trial's worker process, actor creation), ``hpo_state.json``'s
``created`` and the first trial's records; Optuna's from stamps its workers write. hpo's end of
search from the files it writes (the best model, ``trials.json``). ``--quick``: 6 trials of 4
epochs, one round. Results: ``benchmarks/results/quickstart[_quick].json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
WAYS = ("hpo", "optuna")
STUDY = "quickstart"
# (key, label, format) of the figures table, in order
FIGURES = [
    ("wall_s", "wall: command start to exit (s)", ".2f"),
    ("startup_s", "start-up: to the first trial result (s)", ".2f"),
    ("pre_search_s", "before search: to the first trial start (s)", ".2f"),
    ("search_s", "search: first trial start to last end (s)", ".2f"),
    ("end_s", "end: last trial end to exit (s)", ".2f"),
    ("efficiency", "efficiency: own time / workers / search", ".3f"),
    ("own_sum_s", "trials' own time, summed (s)", ".2f"),
    ("train_sum_s", "  of it training passes (s)", ".2f"),
    ("best_val_accuracy", "best validation accuracy", ".4f"),
    ("time_to_target_s", "time to quality: to a result >= target (s)", ".2f"),
    ("completed", "trials completed", "d"),
    ("pruned", "trials pruned", "d"),
    ("other", "trials cut, errored or diverged", "d"),
]


# -- the plain-Optuna peer ------------------------------------------------------------------------


def peer_experiment(overrides: list[str]) -> Any:
    """The quickstart experiment with ``overrides``, checked to be what the peer can mirror (TPE + ASHA)."""
    from hpo.config import load_experiment

    exp = load_experiment(QUICKSTART, overrides)
    if exp.strategy.searcher != "tpe" or exp.strategy.scheduler != "asha":
        raise SystemExit(f"the plain-Optuna peer mirrors tpe + asha only, not {exp.strategy.searcher} + "
                         f"{exp.strategy.scheduler}")
    return exp


def child_optuna_worker(spec: dict[str, Any]) -> None:
    """One plain-Optuna worker process: its share of the trials in the shared study; writes its stamps."""
    marks = {"main": time.time()}
    import warnings

    import optuna

    from benchmarks.overhead import journal_storage
    from hpo.train.builtin import builtin_task, load_data
    from hpo.train.loop import TaskRun

    marks["imports"] = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    exp = peer_experiment(spec["overrides"])
    data = load_data(exp)  # what hpo loads on its driver: checked against the task, hpo's split
    marks["data"] = time.time()
    opts = exp.strategy.scheduler_options
    seed = exp.strategy.seed
    sampler = optuna.samplers.TPESampler(
        multivariate=True, seed=None if seed is None else seed + spec["worker"],
        n_startup_trials=exp.strategy.searcher_options.get("n_startup_trials", 10))
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=opts.get("grace_period", 1),
                                                    reduction_factor=opts.get("reduction_factor", 4))
    study = optuna.create_study(study_name=STUDY, storage=journal_storage(spec["journal"]), sampler=sampler,
                                pruner=pruner, direction="maximize" if exp.modes[0] == "max" else "minimize",
                                load_if_exists=True)
    marks["study"] = time.time()
    task, metric, threads = builtin_task(exp), exp.metrics[0], max(1, int(exp.resources.cpu))
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        config = {**task, **exp.space.suggest(trial)}
        rec: dict[str, Any] = {"t_start": time.time(), "worker": spec["worker"]}
        trials.append(rec)
        run = TaskRun(config, data, threads)
        value = float("nan")
        for metrics in run.epochs():
            rec.update(t_end=time.time(), train_s=metrics["train_time_s"])
            rec.setdefault("t_first", rec["t_end"])
            if "diverged" in metrics:
                return float("nan")  # Optuna records a NaN as FAIL, as hpo records a diverged trial
            value = float(metrics[metric])
            trial.report(value, run.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        rec.update(value=value, completed=True)  # a result: it ran its whole budget
        return value

    study.optimize(objective, n_trials=spec["n_trials"])
    Path(spec["stamps"]).write_text(json.dumps({"marks": marks, "trials": [t for t in trials if "t_end" in t]}))


def run_optuna(n: int, workers: int, overrides: list[str]) -> dict[str, Any]:
    """The peer: ``workers`` processes on one journal; timings, best value and counts."""
    import optuna

    from benchmarks.overhead import journal_storage

    work = Path(tempfile.mkdtemp(prefix="hpo-qs-optuna-"))
    try:
        journal = str(work / "journal.log")
        shares = [n // workers + (i < n % workers) for i in range(workers)]
        specs: list[dict[str, Any]] = [{"worker": i, "n_trials": k, "journal": journal, "overrides": overrides,
                  "stamps": str(work / f"stamps-{i}.json")} for i, k in enumerate(shares)]
        errs = [open(work / f"worker-{i}.err", "w") for i in range(workers)]  # noqa: SIM115
        t0 = time.time()
        procs = [_spawn_child("optuna-worker", spec, cwd=work, stderr=err) for spec, err in zip(specs, errs)]
        codes = [p.wait() for p in procs]
        t_exit = time.time()
        for err in errs:
            err.close()
        if any(codes):
            tails = "\n".join((work / f"worker-{i}.err").read_text()[-3000:] for i in range(workers))
            raise RuntimeError(f"optuna workers exited {codes}:\n{tails}")
        stamps = [json.loads(Path(s["stamps"]).read_text()) for s in specs]
        study = optuna.load_study(study_name=STUDY, storage=journal_storage(journal))
        states = [t.state for t in study.trials]
        done = optuna.trial.TrialState.COMPLETE
        counts = {"trials": len(states), "completed": states.count(done),
                  "pruned": states.count(optuna.trial.TrialState.PRUNED)}
        counts["other"] = counts["trials"] - counts["completed"] - counts["pruned"]
        best = study.best_value if counts["completed"] else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    recs = [t for s in stamps for t in s["trials"]]
    out = {**figures(t0, t_exit, recs, workers), **counts, "best_val_accuracy": best}
    first = min(recs, key=lambda r: r["t_start"])
    m = stamps[first["worker"]]["marks"]
    out["startup_breakdown"] = segments(t0, [
        ("python start, to the worker's code", m["main"]),
        ("imports: torch, optuna, hpo", m["imports"]),
        ("data load", m["data"]),
        ("study created or loaded (journal)", m["study"]),
        ("TPE ask, until the first trial starts", first["t_start"]),
        ("first trial: model and optimizer build (torch's lazy imports), first epoch", first["t_first"]),
    ])
    return out


# -- hpo -------------------------------------------------------------------------------------------


def hpo_command(n: int, workers: int, overrides: list[str]) -> list[str]:
    """The quickstart as README runs it, with N trials (and as many concurrent trials as the peer has workers)."""
    sets = [f"num_samples={n}", *overrides]
    if os.cpu_count() != workers:  # the quickstart runs as many trials at once as there are CPUs
        sets.append(f"max_concurrent={workers}")
    return [str(Path(sys.executable).with_name("hpo")), "run", str(QUICKSTART),
            *[a for kv in sets for a in ("--set", kv)], "--json"]


def run_hpo(n: int, workers: int, overrides: list[str]) -> dict[str, Any]:
    """``hpo run`` of the quickstart in a fresh directory; timings from its run directory and Ray's logs."""
    from hpo.rundir import TRIALS_FILE, read_state, saved_records, trial_histories
    from hpo.wire import result_steps

    work = Path(tempfile.mkdtemp(prefix="hpo-qs-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["RAY_TMPDIR"] = str(work)  # its own Ray session directory, whose logs time the start-up
    try:
        t0 = time.time()
        proc = subprocess.run(hpo_command(n, workers, overrides), cwd=work, env=env, capture_output=True, text=True,
                              check=False)
        t_exit = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"hpo run exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        run_dir = Path(summary["storage_path"])
        ended = {r["trial_id"]: r for r in saved_records(run_dir)}  # trials.json: each trial's status and value
        recs = []
        for tid, (_config, rows) in trial_histories(run_dir).items():
            steps = [s for row in rows for _, s in result_steps(row)]
            done = ended.get(tid, {})
            recs.append({"t_start": rows[0]["hpo_started"], "t_first": steps[0]["hpo_time"],
                         "t_end": steps[-1]["hpo_time"], "train_s": steps[-1].get("train_time_s", 0.0),
                         "pid": rows[0].get("pid"), "completed": done.get("status") == "completed",
                         "value": (done.get("metrics") or {}).get(summary["metric"]),
                         # when Tune called the trainable's train(): its first report, less Ray's time for it
                         # (a packed configuration after a pack's first has no Ray report of its own)
                         "train_call": rows[0]["hpo_time"] - rows[0]["time_this_iter_s"]
                         if "time_this_iter_s" in rows[0] else None})
        if not recs:
            raise RuntimeError(f"no trial results under {run_dir}")
        out = {**figures(t0, t_exit, recs, workers), "trials": summary["num_trials"],
               "completed": summary["num_completed"], "pruned": summary["num_pruned"],
               "other": summary["num_cut"] + summary["num_errored"] + summary["num_diverged"],
               "best_val_accuracy": summary["best_metric"]}
        first = min(recs, key=lambda r: r["t_start"])
        ray = _ray_marks(work, first["pid"])
        out["startup_breakdown"] = segments(t0, [
            ("python, imports, validation (to Ray's session start)", ray.get("session")),
            ("ray.init: local Ray start (to the driver's connection)", ray.get("driver")),
            ("data ready, cluster checks, run directory", read_state(run_dir).get("created")),
            ("Tune set-up, until the first trial's worker process starts", ray.get("worker")),
            ("worker: python start, ray import (to actor creation)", ray.get("actor")),
            ("worker: Ray Tune's trainable actor created", ray.get("actor_ready")),
            ("driver: first train() call to the trial", first["train_call"]),
            ("trial code starts: torch + hpo.train import, data from Ray's object store", first["t_start"]),
            ("first trial: model and optimizer build (torch's lazy imports), first epoch", first["t_first"]),
        ])
        last_end = max(r["t_end"] for r in recs)
        out["end_breakdown"] = segments(last_end, [
            ("best model recovered (best_model/model.pt written)", _mtime(run_dir / "best_model" / "model.pt")),
            (f"{TRIALS_FILE} written", _mtime(run_dir / TRIALS_FILE)),
            ("MLflow records and model, Ray shutdown, exit", t_exit),
        ])
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(path: Path, needle: str) -> float | None:
    """The timestamp of the first line of one of Ray's logs that contains ``needle`` (local time, ms)."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _LOG_TIME.match(line)
                if m and needle in line:
                    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except OSError:
        pass
    return None


def _ray_marks(ray_tmp: Path, pid: int | None) -> dict[str, float | None]:
    """Start-up moments from the Ray session under ``ray_tmp`` (``RAY_TMPDIR``): the session's start
    (its name), the driver's connection, and the first trial's worker process (``pid``): started by
    the raylet, its actor being created, created."""
    sessions = sorted(p for p in (ray_tmp / "ray").glob("session_2*") if p.is_dir())
    if not sessions:
        return {}
    session = sessions[0]
    logs = session / "logs"
    stamp = "_".join(session.name.split("_")[1:4])  # session_2026-11-29_22-34-07_529977_<pid>
    marks: dict[str, float | None] = {"session": datetime.strptime(stamp, "%Y-%m-%d_%H-%M-%S_%f").timestamp()}
    driver = next(iter(sorted(logs.glob("python-core-driver-*.log"))), None)
    marks["driver"] = _log_time(driver, "") if driver else None
    worker_log = next(iter(logs.glob(f"python-core-worker-*_{pid}.log")), None)
    marks["worker"] = _log_time(logs / "raylet.out", f"Started worker process with pid {pid} ")
    marks["actor"] = _log_time(worker_log, "Creating actor") if worker_log else None
    marks["actor_ready"] = _log_time(worker_log, "Actor creation task finished") if worker_log else None
    return marks


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.exists() else None


# -- figures ---------------------------------------------------------------------------------------


def figures(t0: float, t_exit: float, recs: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """Wall, start-up, search, end and efficiency from the command's start and exit and the trials' stamps."""
    first_start = min(r["t_start"] for r in recs)
    last_end = max(r["t_end"] for r in recs)
    own = sum(r["t_end"] - r["t_start"] for r in recs)
    search = last_end - first_start
    out = {"wall_s": t_exit - t0, "startup_s": min(r["t_first"] for r in recs) - t0,
           "pre_search_s": first_start - t0, "search_s": search, "end_s": t_exit - last_end,
           "own_sum_s": own, "train_sum_s": sum(r["train_s"] for r in recs)}
    # (seconds from the command's start to a completed trial's end, its value), in order: time to quality
    results = sorted([round(r["t_end"] - t0, 3), r["value"]] for r in recs
                     if r.get("completed") and r.get("value") is not None)
    return {**{k: round(v, 3) for k, v in out.items()}, "efficiency": round(own / workers / search, 4),
            "trials_timed": len(recs), "results": results}


def segments(start: float, marks: list[tuple[str, float | None]]) -> list[list[Any]]:
    """[label, seconds] from ``start`` through each mark in turn. A mark that is missing, or earlier than
    the one before it, is folded into the next segment (its label joined with ``+``)."""
    out: list[list[Any]] = []
    prev, pending = start, []
    for label, t in marks:
        pending.append(label)
        if t is None or t < prev:
            continue
        out.append([" + ".join(pending), round(t - prev, 3)])
        prev, pending = t, []
    if pending and out:
        out[-1][0] += " + " + " + ".join(pending)  # the last marks were missing: folded into what came before
    return out


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: (statistics.median(vals) if vals else None)
            for key, _, _ in FIGURES
            for vals in [[r[key] for r in rows if r.get(key) is not None]]}


def median_segments(runs: list[list[list[Any]]]) -> list[list[Any]]:
    """[label, median seconds, runs it was measured in], in the order the labels first appear."""
    by_label: dict[str, list[float]] = {}
    for run in runs:
        for label, s in run:
            by_label.setdefault(label, []).append(s)
    return [[label, round(statistics.median(v), 3), len(v)] for label, v in by_label.items()]


def _fmt(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def print_tables(out: dict[str, Any]) -> None:
    med, ratio = out["median"], out["ratio"]
    print(f"Quickstart path, {out['trials']} trials (TPE + ASHA, digits MLP), {out['workers']} workers; medians "
          f"of {out['repeats']} run(s), the two ways alternating in each round; {out['machine']}, load average "
          f"{out['load_average_before_after'][0]} before, {out['load_average_before_after'][1]} after")
    print(f"{'figure':<46} {'hpo':>9} {'optuna':>9} {'hpo/optuna':>11}")
    for key, label, fmt in FIGURES:
        print(f"{label:<46} {_fmt(med['hpo'][key], fmt if fmt != 'd' else '.0f'):>9} "
              f"{_fmt(med['optuna'][key], fmt if fmt != 'd' else '.0f'):>9} {_fmt(ratio.get(key), '.3f'):>11}")
    for way in WAYS:
        print(f"Start-up of {way}, where it goes (median s; runs measured):")
        for label, s, k in out["startup_breakdown"][way]:
            print(f"  {s:>7.2f}  {label} ({k})")
    print("End of search of hpo, where it goes (median s; runs measured):")
    for label, s, k in out["end_breakdown"]["hpo"]:
        print(f"  {s:>7.2f}  {label} ({k})")
    target = out.get("quality_target")
    if target:
        print(f"Time to quality: target {target['metric']} {target['value']:.4f} ({target['rule']}); "
              f"reached in {sum(r['time_to_target_s'] is not None for r in out['runs']['hpo'])}/{out['repeats']} "
              f"hpo runs, {sum(r['time_to_target_s'] is not None for r in out['runs']['optuna'])}/{out['repeats']} "
              "Optuna runs")
    for line in out["targets"]:
        print(line)


def targets(med: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 17's targets 1 and 5 against the medians."""
    h, o = med["hpo"], med["optuna"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = [f"target: efficiency >= 0.85: {h['efficiency']:.3f}, {verdict(h['efficiency'] >= 0.85)}",
             f"target: end of search <= 3 s: {h['end_s']:.2f} s, {verdict(h['end_s'] <= 3.0)}",
             f"target: wall <= plain Optuna's: {h['wall_s']:.2f} vs {o['wall_s']:.2f} s, "
             f"{verdict(h['wall_s'] <= o['wall_s'])}",
             f"target: start-up <= plain Optuna's + 2 s: {h['startup_s']:.2f} vs {o['startup_s']:.2f} + 2 s, "
             f"{verdict(h['startup_s'] <= o['startup_s'] + 2.0)}"]
    if h["best_val_accuracy"] is not None and o["best_val_accuracy"] is not None:
        lines.append(f"target: best validation accuracy same or better: {h['best_val_accuracy']:.4f} vs "
                     f"{o['best_val_accuracy']:.4f}, {verdict(h['best_val_accuracy'] >= o['best_val_accuracy'])}")
    return lines


# -- processes ---------------------------------------------------------------------------------------


def _spawn_child(child: str, spec: dict[str, Any], **kwargs: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.quickstart", "--child", child, "--spec",
                             json.dumps(spec)], stdout=subprocess.DEVNULL, env=env, **kwargs)


def _commit() -> str | None:
    proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() or None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="6 trials of 4 epochs, one round (a smoke run)")
    p.add_argument("--trials", type=int, help="trials per search (default 64; --quick 6)")
    p.add_argument("--repeats", type=int, help="rounds, each running both ways (default 3; --quick 1)")
    p.add_argument("--workers", type=int, default=2, help="plain-Optuna worker processes = hpo's concurrent trials")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="experiment override for both ways, e.g. task.epochs=10")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_optuna_worker(json.loads(args.spec))
        return {}
    n = args.trials or (6 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 3)
    overrides = (["task.epochs=4"] if args.quick else []) + args.overrides
    peer_experiment(overrides)  # refuse what the peer cannot mirror before anything runs
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in WAYS}
    for r in range(repeats):
        for way in WAYS if r % 2 == 0 else WAYS[::-1]:
            row = (run_hpo if way == "hpo" else run_optuna)(n, args.workers, overrides)
            runs[way].append({"round": r, **row})
            print(f"  round {r + 1}/{repeats} {way}: wall {row['wall_s']:.1f} s, search {row['search_s']:.1f} s, "
                  f"best {_fmt(row['best_val_accuracy'], '.4f')}", file=sys.stderr, flush=True)
    # time to quality: the target is the lower of the two ways' median best, so both reach it in most runs
    exp = peer_experiment(overrides)
    sign = 1.0 if exp.modes[0] == "max" else -1.0
    bests = [statistics.median([r["best_val_accuracy"] for r in runs[w] if r["best_val_accuracy"] is not None]
                               or [math.nan]) for w in WAYS]
    target = min(bests, key=lambda b: sign * b)
    from benchmarks.quality import to_target  # here, not at the top: the Optuna workers import this module

    for way in WAYS:
        for row in runs[way]:
            # seconds until a completed trial reaches the target (to_target's sign: 1 to minimize)
            secs = to_target(row["results"], target, -sign)
            row["time_to_target_s"] = secs if math.isfinite(secs) else None
    med = {w: medians(runs[w]) for w in WAYS}
    ratio = {key: (round(med["hpo"][key] / med["optuna"][key], 4) if med["hpo"][key] is not None
                   and med["optuna"][key] else None) for key, _, fmt in FIGURES if fmt != "d"}
    out = {
        "benchmark": "quickstart", "quick": args.quick, "hpo_commit": _commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "trials": n, "workers": args.workers, "repeats": repeats, "overrides": overrides,
        "commands": {"hpo": " ".join(["hpo", *hpo_command(n, args.workers, overrides)[1:]]),
                     "optuna": f"{args.workers} worker processes (python -m benchmarks.quickstart --child "
                               "optuna-worker), one JournalStorage study, TPESampler(multivariate=True, seed=seed+i), "
                               "SuccessiveHalvingPruner(min_resource=grace_period, reduction_factor), TaskRun"},
        "figures": {key: label for key, label, _ in FIGURES},
        "quality_target": {"metric": exp.metrics[0], "value": target,
                           "rule": "the lower of the two ways' median best value; time_to_target_s: command start to "
                                   "the end of the first completed trial reaching it (None: never reached)"},
        "runs": runs, "median": med, "ratio": ratio,
        "startup_breakdown": {w: median_segments([r["startup_breakdown"] for r in runs[w]]) for w in WAYS},
        "end_breakdown": {"hpo": median_segments([r["end_breakdown"] for r in runs["hpo"]])},
        "targets": targets(med),
    }
    print_tables(out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out, "quickstart_quick.json" if args.quick else "quickstart.json")
    path.write_text(json.dumps(out, indent=2))
    print(f"written: {path}")
    return out


if __name__ == "__main__":
    main()
