"""Scale: one 10,000-trial search through ``hpo.run``, and Optuna's cost per suggestion as a study grows.

    python -m benchmarks.scale [--quick] [--trials N] [--out DIR] [--tracking] [--sizes 100,1000]
                               [--asks N] [--repeats N] [--suggest-only] [--cap-quality]

1. Search at scale. One search of ``--trials`` (10,000) trials of a trivial trainable (reports one
   loss once, plus the wall-clock time it did so, for the throughput over time) through the real
   ``hpo.run`` on an embedded two-CPU Ray instance: random search (hpo's Optuna ask/tell searcher
   with a RandomSampler), FIFO, one CPU per trial, MLflow tracking off (``--tracking`` adds the same
   search tracked to a ``sqlite:///`` store). A 20-trial warm-up search runs first (not measured).
   The driver's CPU is split by thread (``/proc/self/task``, sampled with the RSS): the main thread
   (Ray Tune's loop, hpo's callbacks and the searcher's ask/tell all run there), the MLflow writer,
   Ray's C++ threads. The driver's RSS (``/proc/self/status``) is sampled every 0.2 s in a background thread: start,
   end and peak are reported, with the RSS of every process under the driver (Ray's GCS, raylet
   and workers) at start and end. Throughput is also reported per block of a tenth of the trials
   (1,000 of 10,000), to show whether it degrades as the search grows; the first block includes
   the search's start-up.
2. Suggestion cost. ``study.ask()`` plus hpo's ``SearchSpace.suggest`` (what the searcher does per
   trial) on a six-parameter space (log-float lr, float dropout, int width, int depth, categorical
   activation and optimizer), timed at each study size (``--sizes``: 100, 1000, 3000, 10000
   completed trials, filled cheaply with ``study.add_trials`` and synthetic values); the median of
   ``--asks`` asks at each size (each told afterwards, untimed), pooled over ``--repeats`` rounds
   (each round builds every study afresh; the samplers take turns within a round, in a rotating
   order, so a busy machine weighs on all of them alike). Samplers, all built by hpo's own
   factories in ``hpo.strategies._builtin``: ``random``; ``tpe`` (independent TPE,
   ``multivariate: false``, history capped at the default ``max_history: 1000`` trials: TPE models
   the best trials that form its "good" group, exactly as uncapped TPE, plus the most recent
   others, see ``hpo.strategies._optuna.CappedTPESampler``); ``tpe_uncapped`` (``max_history: 0``:
   Optuna's plain ``TPESampler``, every trial); ``tpe_multivariate`` (hpo's default ``searcher:
   tpe``: multivariate, capped) and ``tpe_multivariate_uncapped``. The table also estimates the driver time a whole
   ``--trials`` search would spend in suggestions.
3. With ``--cap-quality``: what the cap costs in search quality. 1,000-trial searches of the
   six-parameter loss (minimum 0) with ``tpe`` at ``max_history: 200`` (five times fewer trials
   than the study, as the default 1,000 is at 5,000 trials) and uncapped, five seeds: the best
   loss after 250, 500 and 1,000 trials.

Ray's driver loop is single-threaded: the searcher's suggestion time adds directly to every
trial's overhead, which is why hpo caps TPE's history.

``--suggest-only`` runs part 2 alone and replaces the suggestion section (and its findings) of an
existing ``scale.json`` in ``--out`` (``scale_quick.json`` with ``--quick``), keeping part 1's
measurements: the 10,000-trial search takes over ten minutes. ``--quick`` (300 trials, sizes 100
and 1200, past the cap, 10 asks, one round) is a smoke test of about a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import hpo
from benchmarks.cpu_share import proc_stat

SPACE = hpo.SearchSpace({
    "lr": hpo.Float(1e-5, 1e-1, log=True),
    "dropout": hpo.Float(0.0, 0.5),
    "width": hpo.Int(16, 512),
    "depth": hpo.Int(1, 6),
    "activation": hpo.Categorical(["relu", "gelu", "tanh"]),
    "optimizer": hpo.Categorical(["adam", "sgd", "adamw"]),
})
# name -> (the hpo searcher options it stands for, the options given to hpo's `tpe` factory)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("searcher: random", {}),
    "tpe": ("searcher: {name: tpe, multivariate: false} (max_history: 1000)", {"multivariate": False}),
    "tpe_uncapped": ("searcher: {name: tpe, multivariate: false, max_history: 0}",
                     {"multivariate": False, "max_history": 0}),
    "tpe_multivariate": ("searcher: tpe (hpo's default: multivariate, max_history: 1000)", {"multivariate": True}),
    "tpe_multivariate_uncapped": ("searcher: {name: tpe, multivariate: true, max_history: 0}",
                                  {"multivariate": True, "max_history": 0}),
}


def _loss(config: dict[str, Any]) -> float:
    import math

    return ((math.log10(config["lr"]) + 3) ** 2 + config["dropout"] + 0.1 * abs(config["depth"] - 3)
            + 1e-4 * abs(config["width"] - 256) + (0.0 if config["activation"] == "gelu" else 0.2)
            + (0.0 if config["optimizer"] == "adamw" else 0.1))


def trivial(config: dict[str, Any]) -> None:
    """The trainable: one report of one metric (and when it was made, for the benchmark's clock)."""
    hpo.report({"loss": _loss(config), "t_done": time.time()})


# -- memory -------------------------------------------------------------------------------------


def _rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB (0.0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children() -> tuple[float, float]:
    """Summed RSS (MiB) and CPU seconds so far of every process under this one (Ray's GCS,
    raylet, workers)."""
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stats[int(d.name)] = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                pass
    found, todo = [], [os.getpid()]
    while todo:
        p = todo.pop()
        kids = [c for c, f in stats.items() if int(f[1]) == p]
        found += kids
        todo += kids
    cpu = sum(int(stats[p][11]) + int(stats[p][12]) for p in found) / os.sysconf("SC_CLK_TCK")
    return sum(_rss_mb(p) for p in found), cpu


def _driver_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# the driver's threads by what they do (Python thread names; the rest are Ray's C++ threads)
THREAD_ROLES = {"MainThread": "main: Tune's loop, hpo's callbacks, the searcher",
                "hpo-mlflow": "MLflow writer (hpo-mlflow)", "hpo-mlflow-end": "MLflow writer (hpo-mlflow)"}


def _thread_cpu() -> dict[int, float]:
    """CPU seconds of each of this process's threads so far, by native thread id (Linux /proc)."""
    stats = {int(tid): proc_stat(f"/proc/self/task/{tid}/stat") for tid in os.listdir("/proc/self/task")}
    return {tid: st[1] for tid, st in stats.items() if st is not None}


class RssSampler:
    """Samples the driver's RSS every ``interval`` seconds in a daemon thread: (time.time(), MiB);
    and the CPU of each of its threads, to split the driver's CPU by what its threads do
    (:meth:`cpu_by_thread`)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.threads: dict[int, tuple[str, float]] = {}  # native id -> (role, CPU seconds at the last sample)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")
        self._base = _thread_cpu() if Path("/proc/self/task").is_dir() else {}

    def _sample_threads(self) -> None:
        if not self._base and not Path("/proc/self/task").is_dir():
            return
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        for tid, secs in _thread_cpu().items():
            role = THREAD_ROLES.get(names.get(tid, ""), "other Python threads" if tid in names
                                    else "Ray's C++ threads (core worker, gRPC)")
            if tid == self._thread.native_id:
                role = "this benchmark's sampler"
            self.threads[tid] = (role, secs - self._base.get(tid, 0.0))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), _rss_mb()))
            self._sample_threads()
            self._stop.wait(self.interval)

    def cpu_by_thread(self) -> dict[str, float]:
        """The driver's CPU seconds during the ``with`` block by thread role (a thread that ended
        between two samples is counted to its last sample)."""
        out: dict[str, float] = {}
        for role, secs in self.threads.values():
            out[role] = round(out.get(role, 0.0) + secs, 2)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), _rss_mb()))
        self._sample_threads()

    def at(self, t: float) -> float:
        """The last sample taken at or before ``t`` (the first one if none)."""
        before = [mb for ts, mb in self.samples if ts <= t]
        return before[-1] if before else self.samples[0][1]


# -- 1. one big search --------------------------------------------------------------------------


def _search(name: str, trials: int, storage: Path, tracking_uri: str | None) -> Any:
    return hpo.run(
        name=name, trainable=trivial, metric="loss", mode="min", space=SPACE,
        strategy={"searcher": "random", "scheduler": "fifo", "seed": 0},
        num_samples=trials, resources={"cpu": 1}, storage_path=str(storage),
        tracking={"enabled": tracking_uri is not None, "tracking_uri": tracking_uri},
    )


def _dir_mb(path: Path) -> tuple[float, int]:
    size = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                size += os.stat(os.path.join(root, n)).st_size
                files += 1
            except OSError:
                pass
    return size / 2**20, files


def _record_counts(results: Any, db: Path | None) -> dict[str, Any]:
    """How many trials each record holds, and whether each trial is there exactly once."""
    import sqlite3

    from hpo.rundir import saved_records

    ids = [t.trial_id for t in results.trials]
    saved = [r["trial_id"] for r in saved_records(Path(results.storage_path))]  # (the run directory)
    study = len(results.study.trials) if results.study is not None else None
    out: dict[str, Any] = {"results": len(ids), "trials_json": len(saved), "optuna_trials": study}
    exact = len(set(ids)) == len(ids) and sorted(saved) == sorted(ids) and study in (None, len(ids))
    if db is not None:
        con = sqlite3.connect(db)
        runs, distinct = con.execute(
            "SELECT COUNT(*), COUNT(DISTINCT t.value) FROM tags p JOIN tags t ON t.run_uuid = p.run_uuid AND "
            "t.key = 'hpo.trial_id' WHERE p.key = 'mlflow.parentRunId' AND p.value = ?",
            (results.parent_run_id,)).fetchone()
        con.close()
        out["mlflow_child_runs"] = runs
        exact = exact and runs == distinct == len(ids)
    out["exact"] = exact
    return out


def measure_search(trials: int, variant: str, work: Path) -> dict[str, Any]:
    """One search of ``trials`` trials; ``variant`` is ``off`` or ``sqlite`` (MLflow tracking)."""
    uri = f"sqlite:///{work / 'mlflow.db'}" if variant == "sqlite" else None
    storage = work / f"runs-{variant}"
    _search(f"warmup-{variant}", 20, storage, uri)  # imports, workers, the SQLite schema: not measured
    shutil.rmtree(storage, ignore_errors=True)
    ray_start, ray_cpu0 = _children()
    load0, cpu0 = os.getloadavg()[0], _driver_cpu_s()
    with RssSampler() as rss:
        t0 = time.time()
        results = _search(f"scale-{variant}", trials, storage, uri)
        t1 = time.time()
    cpu1, load1 = _driver_cpu_s(), os.getloadavg()[0]
    ray_end, ray_cpu1 = _children()
    wall = t1 - t0
    done = sorted(t.metrics["t_done"] for t in results.trials if "t_done" in t.metrics)
    block = max(1, trials // 10)
    blocks, prev = [], t0
    for end in range(block, len(done) + 1, block):
        t = done[end - 1]
        blocks.append({"trials_done": end, "elapsed_s": round(t - t0, 2), "block_s": round(t - prev, 3),
                       "trials_per_s": round(block / (t - prev), 2) if t > prev else None,
                       "rss_mb": round(rss.at(t), 1)})
        prev = t
    storage_mb, files = _dir_mb(storage)
    counts = _record_counts(results, work / "mlflow.db" if uri else None)
    shutil.rmtree(storage, ignore_errors=True)
    step = max(1, len(rss.samples) // 400)
    mbs = [mb for _, mb in rss.samples]
    return {
        "variant": variant,
        "trials": trials,
        "completed": results.count("completed"),
        "records": counts,  # every trial exactly once in results, trials.json and MLflow
        "wall_s": round(wall, 2),
        "per_trial_ms": round(1000 * wall / trials, 2),
        "trials_per_s": round(trials / wall, 2),
        "driver_cpu_s": round(cpu1 - cpu0, 2),
        "driver_cpu_ms_per_trial": round(1000 * (cpu1 - cpu0) / trials, 2),
        "ray_processes_cpu_s": round(ray_cpu1 - ray_cpu0, 2),  # processes alive at both ends only
        "driver_cpu_ms_per_trial_by_thread": {k: round(1000 * v / trials, 2) for k, v in rss.cpu_by_thread().items()},
        "load_avg_1min": {"start": round(load0, 2), "end": round(load1, 2)},
        "after_last_trial_s": round(t1 - done[-1], 2) if done else None,  # results, trials.json, tracker flush
        "driver_rss_mb": {"start": round(mbs[0], 1), "end": round(mbs[-1], 1), "peak": round(max(mbs), 1),
                          "growth": round(mbs[-1] - mbs[0], 1),
                          "growth_kb_per_trial": round(1024 * (mbs[-1] - mbs[0]) / trials, 2)},
        "ray_processes_rss_mb": {"start": round(ray_start, 1), "end": round(ray_end, 1)},
        "storage": {"mb": round(storage_mb, 1), "files": files},
        "block_size": block,
        "blocks": blocks,
        "rss_samples": [[round(t - t0, 2), round(mb, 1)] for t, mb in rss.samples[::step]],
    }


# -- 2. suggestion cost as the study grows ------------------------------------------------------


def _sampler(name: str, seed: int = 0) -> Any:
    from hpo.strategies._builtin import _random, _tpe

    return _random(seed) if name == "random" else _tpe(seed, **SAMPLERS[name][1])


def _tpe_history_cap() -> int | None:
    """hpo's default ``max_history`` for ``tpe`` (from the factory's signature, as users see it)."""
    import inspect

    from hpo.strategies._builtin import _tpe

    default: int | None = inspect.signature(_tpe).parameters["max_history"].default
    return default


def _random_params(rng: Any) -> dict[str, Any]:
    import math

    out: dict[str, Any] = {}
    for name, p in SPACE.params.items():
        if isinstance(p, hpo.Float):
            out[name] = (math.exp(rng.uniform(math.log(p.low), math.log(p.high))) if p.log
                         else float(rng.uniform(p.low, p.high)))
        elif isinstance(p, hpo.Int):
            out[name] = int(rng.integers(p.low, p.high + 1))
        else:
            assert isinstance(p, hpo.Categorical)
            out[name] = p.choices[int(rng.integers(len(p.choices)))]
    return out


def _suggest_round(name: str, sizes: list[int], asks: int) -> list[dict[str, Any]]:
    """Times of ``asks`` asks (``study.ask()`` + ``SPACE.suggest``) at each study size, for one
    sampler on a fresh study (the same synthetic trials every round)."""
    import warnings

    import numpy as np
    import optuna
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rng = np.random.default_rng(0)
    dists = SPACE.to_optuna()
    study = optuna.create_study(sampler=_sampler(name), direction="minimize")
    out = []
    for size in sorted(sizes):
        params = [_random_params(rng) for _ in range(size - len(study.trials))]
        study.add_trials([create_trial(params=p, distributions=dists, value=_loss(p) + float(rng.normal(0, 0.1)))
                          for p in params])
        n = len(study.trials)
        ask_s, cpu_s, tell_s = [], [], []
        for _ in range(asks):
            c0, t0 = time.thread_time(), time.perf_counter()
            trial = study.ask()
            config = SPACE.suggest(trial)
            t1, c1 = time.perf_counter(), time.thread_time()
            study.tell(trial, _loss(config))
            ask_s.append(t1 - t0)
            cpu_s.append(c1 - c0)
            tell_s.append(time.perf_counter() - t1)
        out.append({"n_trials": n, "ask_s": ask_s, "cpu_s": cpu_s, "tell_s": tell_s})
    return out


def measure_suggest(names: list[str], sizes: list[int], asks: int, repeats: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Median time of ``study.ask()`` + ``SPACE.suggest`` at each study size, per sampler: every
    ask of ``repeats`` rounds pooled; in each round the samplers take turns in a rotating order."""
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            got = _suggest_round(name, sizes, asks)
            if not raw[name]:
                raw[name] = [{"n_trials": g["n_trials"], "ask_s": [], "cpu_s": [], "tell_s": [], "round_medians": []}
                             for g in got]
            for acc, g in zip(raw[name], got):
                for key in ("ask_s", "cpu_s", "tell_s"):
                    acc[key] += g[key]
                acc["round_medians"].append(round(1000 * statistics.median(g["ask_s"]), 3))
    out: dict[str, list[dict[str, Any]]] = {}
    for name, accs in raw.items():
        out[name] = []
        for acc in accs:
            ask_s = sorted(acc["ask_s"])
            out[name].append({
                "n_trials": acc["n_trials"], "asks": len(ask_s),
                "median_ms": round(1000 * statistics.median(ask_s), 3),
                "p90_ms": round(1000 * ask_s[min(len(ask_s) - 1, int(0.9 * len(ask_s)))], 3),
                "median_cpu_ms": round(1000 * statistics.median(acc["cpu_s"]), 3),
                "tell_median_ms": round(1000 * statistics.median(acc["tell_s"]), 3),
                "round_median_ms": acc["round_medians"],
            })
    return out


def measure_cap_quality(trials: int, cap: int, seeds: int) -> dict[str, Any]:
    """Search quality with the history cap: ``trials``-trial searches of the six-parameter loss
    (minimum 0) with independent ``tpe`` at ``max_history: cap`` and uncapped, the same seeds; the best
    loss after a quarter, half and all of the trials, and each search's wall time."""
    import itertools

    import optuna

    from hpo.strategies._builtin import _tpe

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    marks = [trials // 4, trials // 2, trials]
    runs: dict[str, list[dict[str, Any]]] = {"capped": [], "uncapped": []}
    for seed in range(seeds):
        for name, max_history in (("capped", cap), ("uncapped", 0)):
            study = optuna.create_study(sampler=_tpe(seed, multivariate=False, max_history=max_history),
                                        direction="minimize")
            t0 = time.perf_counter()
            study.optimize(lambda trial: _loss(SPACE.suggest(trial)), n_trials=trials)
            wall = time.perf_counter() - t0
            best = list(itertools.accumulate((t.value for t in study.trials), min))
            runs[name].append({"seed": seed, "wall_s": round(wall, 1),
                               "best": {str(m): round(best[m - 1], 5) for m in marks}})
    summary = {name: {"median_best": {str(m): statistics.median(r["best"][str(m)] for r in rs) for m in marks},
                      "median_wall_s": statistics.median(r["wall_s"] for r in rs)} for name, rs in runs.items()}
    wins = sum(c["best"][str(trials)] <= u["best"][str(trials)] for c, u in zip(runs["capped"], runs["uncapped"]))
    return {"trials": trials, "max_history": cap, "seeds": seeds, "objective": "benchmarks.scale._loss (min 0)",
            "runs": runs, "summary": summary, "capped_at_least_as_good": wins}


def estimated_total_s(points: list[dict[str, Any]], trials: int) -> float:
    """Driver CPU time a search of ``trials`` trials would spend suggesting: the measured median
    CPU cost, linearly interpolated between study sizes (flat below the first, linearly
    extrapolated from the last two beyond the last), summed over every trial."""
    xs = [float(p["n_trials"]) for p in points]
    ys = [p["median_cpu_ms"] / 1000 for p in points]

    def cost(n: float) -> float:
        if n <= xs[0] or len(xs) == 1:
            return ys[0]
        i = next((k for k in range(1, len(xs)) if n <= xs[k]), len(xs) - 1)
        return max(0.0, ys[i - 1] + (ys[i] - ys[i - 1]) * (n - xs[i - 1]) / (xs[i] - xs[i - 1]))

    return sum(cost(n) for n in range(trials))


# -- output -------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("ray", "optuna", "mlflow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            **_versions()}


def _print(res: dict[str, Any]) -> None:
    if res.get("search"):
        print(f"1. one search through hpo.run ({res['search']['description']})")
        print("   tail: last trial's report to hpo.run's return; CPU: driver CPU ms per trial; RSS in MiB; "
              "load: 1-min load average at start/end")
        print(f"{'variant':<8} {'trials':>6} {'done':>6} {'wall s':>7} {'ms/trial':>8} {'trials/s':>8} {'tail s':>6} "
              f"{'CPU':>6} {'RSS start':>9} {'end':>6} {'peak':>6} {'KB/trial':>8} {'Ray procs':>11} {'disk':>6} "
              f"{'load':>11}")
        for v in res["search"]["variants"]:
            r, ray, ld = v["driver_rss_mb"], v["ray_processes_rss_mb"], v["load_avg_1min"]
            print(f"{v['variant']:<8} {v['trials']:>6} {v['completed']:>6} {v['wall_s']:>7.1f} "
                  f"{v['per_trial_ms']:>8.2f} {v['trials_per_s']:>8.2f} {v['after_last_trial_s'] or 0:>6.1f} "
                  f"{v['driver_cpu_ms_per_trial']:>6.1f} {r['start']:>9.1f} {r['end']:>6.1f} {r['peak']:>6.1f} "
                  f"{r['growth_kb_per_trial']:>8.2f} {ray['start']:>5.0f}->{ray['end']:<5.0f} "
                  f"{v['storage']['mb']:>6.1f} {ld['start']:>5.1f}/{ld['end']:<5.1f}")
            print(f"  per block of {v['block_size']} trials: trials/s  "
                  + " ".join(f"{b['trials_per_s']:.1f}" if b["trials_per_s"] else "-" for b in v["blocks"]))
            print(f"  {'':<22}driver RSS MiB " + " ".join(f"{b['rss_mb']:.0f}" for b in v["blocks"]))
            split = v.get("driver_cpu_ms_per_trial_by_thread") or {}
            if split:
                print("  driver CPU ms per trial by thread: " + "; ".join(f"{k} {ms:.1f}" for k, ms in split.items()))
    else:
        print("1. one search through hpo.run: not measured (--suggest-only and no earlier results)")
    s = res["suggest"]
    print(f"\n2. study.ask() + suggest, 6 params: median wall / CPU ms of {s['asks']} asks x {s['repeats']} rounds "
          f"at each study size; est.: driver CPU s in suggestions over a whole {s['estimate_for_trials']}-trial search")
    print(f"{'sampler':<26} " + " ".join(f"{n:>15}" for n in s["sizes"]) + f" {'est. s':>8}")
    for name, row in s["samplers"].items():
        print(f"{name:<26} " + " ".join(f"{p['median_ms']:>7.1f} /{p['median_cpu_ms']:>6.1f}" for p in row["points"])
              + f" {row['estimated_total_s']:>8.0f}")
    print()
    for line in res["findings"]:
        print(line)


def _findings(res: dict[str, Any]) -> list[str]:
    out = []
    for v in (res.get("search") or {}).get("variants", []):
        rates = [b["trials_per_s"] for b in v["blocks"][1:] if b["trials_per_s"]]
        trend = f"{rates[0]:.1f} -> {rates[-1]:.1f} trials/s from block 2 to the last" if len(rates) > 1 else ""
        out.append(f"search ({v['variant']}): {v['completed']}/{v['trials']} trials in {v['wall_s']:.0f} s "
                   f"({v['per_trial_ms']:.1f} ms/trial); {trend}; driver RSS {v['driver_rss_mb']['start']:.0f} -> "
                   f"{v['driver_rss_mb']['end']:.0f} MiB (peak {v['driver_rss_mb']['peak']:.0f}).")
    s = res["suggest"]
    last = s["sizes"][-1]
    tail = {name: row["points"][-1]["median_ms"] for name, row in s["samplers"].items()}
    cap = s.get("tpe_max_history")
    pairs = (("tpe", "tpe_uncapped", "independent TPE"),
             ("tpe_multivariate", "tpe_multivariate_uncapped", "multivariate TPE (hpo's default)"))
    for capped, uncapped, label in pairs:
        if capped in tail and uncapped in tail:
            out.append(f"{label} at {last} trials: {tail[capped]:.0f} ms per suggestion with hpo's history cap "
                       f"(max_history {cap}), {tail[uncapped]:.0f} ms uncapped ({tail[uncapped] / tail[capped]:.1f}x); "
                       f"random: {tail.get('random', float('nan')):.1f} ms.")
    out.append(s["hpo"])
    q = res.get("cap_quality")
    if q:
        c, u, n = q["summary"]["capped"], q["summary"]["uncapped"], str(q["trials"])
        out.append(f"search quality, {q['trials']}-trial TPE searches x {q['seeds']} seeds: median best loss "
                   f"{c['median_best'][n]:.4f} with max_history {q['max_history']} vs. {u['median_best'][n]:.4f} "
                   f"uncapped (capped at least as good in {q['capped_at_least_as_good']}/{q['seeds']}); median "
                   f"search wall {c['median_wall_s']:.0f} s vs. {u['median_wall_s']:.0f} s.")
    return out


def _plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, row in res["suggest"]["samplers"].items():
        pts = row["points"]
        line = a1.plot([p["n_trials"] for p in pts], [p["median_cpu_ms"] for p in pts], "o-" if "uncapped" in name
                       else "s-", label=name)[0]
        a1.plot([p["n_trials"] for p in pts], [p["median_ms"] for p in pts], ":", color=line.get_color(), alpha=0.5)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("completed trials in the study")
    a1.set_ylabel("ms per suggestion (CPU solid, wall dotted)")
    a1.set_title(f"Optuna suggestion cost, 6 params (hpo's tpe: max_history {res['suggest'].get('tpe_max_history')})")
    a1.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)
    search = res.get("search")
    if search and search["variants"]:
        a3 = a2.twinx()
        for v in search["variants"]:
            xs = [b["trials_done"] for b in v["blocks"]]
            a2.plot(xs, [b["trials_per_s"] or 0 for b in v["blocks"]], "o-", label=f"trials/s ({v['variant']})")
            a3.plot(xs, [b["rss_mb"] for b in v["blocks"]], "s--", alpha=0.6, label=f"driver RSS ({v['variant']})")
        a2.set_xlabel("trials done")
        a2.set_ylabel(f"trials/s over each block of {search['variants'][0]['block_size']}")
        a3.set_ylabel("driver RSS (MiB)")
        a2.set_ylim(bottom=0)
        a3.set_ylim(bottom=0)
        a2.set_title(f"{search['trials']}-trial search through hpo.run")
        h1, l1 = a2.get_legend_handles_labels()
        h2, l2 = a3.get_legend_handles_labels()
        a2.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    else:
        a2.set_axis_off()
        a2.text(0.5, 0.5, "search at scale: not measured", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def suggest_section(sizes: list[int], asks: int, repeats: int, trials: int) -> dict[str, Any]:
    """Part 2: the suggestion cost of every sampler in SAMPLERS, with what hpo does about it."""
    load0, t0 = os.getloadavg()[0], time.time()
    measured = measure_suggest(list(SAMPLERS), sizes, asks, repeats)
    cap = _tpe_history_cap()
    samplers = {name: {"hpo_options": SAMPLERS[name][0], "points": points,
                       "estimated_total_s": round(estimated_total_s(points, trials), 3)}
                for name, points in measured.items()}
    return {
        "sizes": sizes, "asks": asks, "repeats": repeats,
        "space": {n: type(p).__name__ for n, p in SPACE.params.items()},
        "estimate_for_trials": trials, "samplers": samplers, "tpe_max_history": cap,
        "hpo": (f"hpo caps TPE's history: `searcher: tpe` models at most max_history={cap} finished trials per "
                "suggestion, its whole good group (the best gamma(n) trials, exactly as uncapped TPE) plus the most "
                "recent others, so the cost stops growing past that size; `searcher_options: {max_history: 0}` "
                "restores Optuna's uncapped TPE."),
        "measured": {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": round(time.time() - t0, 1),
                     "load_avg_1min": {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)},
                     "machine": _machine()},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 trials, study sizes 100 and 1200 (a smoke test)")
    ap.add_argument("--trials", type=int, help="trials in the search (default 10000; 300 with --quick)")
    ap.add_argument("--tracking", action="store_true", help="also run the search with MLflow tracking to SQLite")
    ap.add_argument("--sizes", help="comma-separated study sizes (default 100,1000,3000,10000; 100,1200 with --quick)")
    ap.add_argument("--asks", type=int, help="timed asks at each study size per round (default 20; 10 with --quick)")
    ap.add_argument("--repeats", type=int, help="rounds of the suggestion timings (default 3; 1 with --quick)")
    ap.add_argument("--suggest-only", action="store_true",
                    help="measure only the suggestion cost and update that section of the existing results")
    ap.add_argument("--cap-quality", action="store_true",
                    help="also compare search quality with and without TPE's history cap: 1000-trial searches, "
                         "max_history 200, 5 seeds (about 5 minutes); 150 trials, cap 100, 2 seeds with --quick")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([100, 1200] if args.quick
                                                                          else [100, 1000, 3000, 10_000])
    asks = args.asks or (10 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    out = Path(args.out)
    stem = "scale_quick" if args.quick else "scale"
    path = out / f"{stem}.json"

    if args.suggest_only:
        res: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {
            "benchmark": "scale", "quick": args.quick, "machine": _machine(), "search": None}
        search = res.get("search")
        trials = args.trials or (search["trials"] if search else (300 if args.quick else 10_000))
    else:
        trials = args.trials or (300 if args.quick else 10_000)
        import ray

        work = Path(tempfile.mkdtemp(prefix="hpo-bench-scale-"))
        variants = ["off", "sqlite"] if args.tracking else ["off"]
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        try:
            runs = [measure_search(trials, v, work) for v in variants]
        finally:
            ray.shutdown()
            shutil.rmtree(work, ignore_errors=True)
        res = {
            "benchmark": "scale",
            "quick": args.quick,
            "machine": _machine(),
            "search": {"trials": trials, "variants": runs,
                       "description": f"{trials} trials of a one-report trainable, random + FIFO, 1 CPU each on "
                                      "a 2-CPU embedded Ray, tracking " + " / ".join(variants)},
        }
    res["suggest"] = suggest_section(sizes, asks, repeats, trials)
    res["hpo_caps_suggest_cost"] = res["suggest"]["tpe_max_history"] is not None
    if args.cap_quality:
        res["cap_quality"] = measure_cap_quality(*((150, 100, 2) if args.quick else (1000, 200, 5)))
    res["findings"] = _findings(res)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    _plot(res, out / f"{stem}.png")
    _print(res)
    return res


if __name__ == "__main__":
    main()
