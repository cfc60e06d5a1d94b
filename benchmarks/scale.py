"""Scale: one 10,000-trial search through ``hpo.run``, and Optuna's cost per suggestion as a study grows.

    python -m benchmarks.scale [--quick] [--trials N] [--out DIR] [--tracking] [--sizes 100,1000] [--asks N]

1. Search at scale. One search of ``--trials`` (10,000) trials of a trivial trainable (reports one
   loss once, plus the wall-clock time it did so, for the throughput over time) through the real
   ``hpo.run`` on an embedded two-CPU Ray instance: random search (hpo's Optuna ask/tell searcher
   with a RandomSampler), FIFO, one CPU per trial, MLflow tracking off (``--tracking`` adds the same
   search tracked to a ``sqlite:///`` store). A 20-trial warm-up search runs first (not measured).
   The driver's RSS (``/proc/self/status``) is sampled every 0.2 s in a background thread: start,
   end and peak are reported, with the RSS of every process under the driver (Ray's GCS, raylet
   and workers) at start and end. Throughput is also reported per block of a tenth of the trials
   (1,000 of 10,000), to show whether it degrades as the search grows; the first block includes
   the search's start-up.
2. Suggestion cost. ``study.ask()`` plus hpo's ``SearchSpace.suggest`` (what the searcher does per
   trial) on a six-parameter space (log-float lr, float dropout, int width, int depth, categorical
   activation and optimizer), timed at each study size (``--sizes``: 100, 1000, 3000, 10000
   completed trials, filled cheaply with ``study.add_trials`` and synthetic values); the median of
   ``--asks`` asks at each size (each told afterwards, untimed). Samplers: ``random`` and ``tpe``
   (hpo's defaults from ``hpo.strategies._builtin``), and candidate mitigations: ``tpe_multivariate``
   (hpo's ``searcher_options: {multivariate: true}``) and ``tpe_mv_window1000`` (multivariate TPE that
   only sees the last 1,000 trials; a prototype defined here, not part of hpo). The table also
   estimates the driver time a whole ``--trials`` search would spend in suggestions.

Ray's driver loop is single-threaded: the searcher's suggestion time adds directly to every
trial's overhead. hpo's searcher (``hpo/strategies/_optuna.py``) does nothing to cap it: it keeps
one in-memory Optuna study with every trial and asks the sampler as is.

``--quick`` (300 trials, sizes 100 and 500, 10 asks) is a smoke test of about a minute.
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

SPACE = hpo.SearchSpace({
    "lr": hpo.Float(1e-5, 1e-1, log=True),
    "dropout": hpo.Float(0.0, 0.5),
    "width": hpo.Int(16, 512),
    "depth": hpo.Int(1, 6),
    "activation": hpo.Categorical(["relu", "gelu", "tanh"]),
    "optimizer": hpo.Categorical(["adam", "sgd", "adamw"]),
})
SAMPLERS = ("random", "tpe", "tpe_multivariate", "tpe_mv_window1000")
WINDOW = 1000


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


class RssSampler:
    """Samples the driver's RSS every ``interval`` seconds in a daemon thread: (time.time(), MiB)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), _rss_mb()))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), _rss_mb()))

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
    shutil.rmtree(storage, ignore_errors=True)
    step = max(1, len(rss.samples) // 400)
    mbs = [mb for _, mb in rss.samples]
    return {
        "variant": variant,
        "trials": trials,
        "completed": results.count("completed"),
        "wall_s": round(wall, 2),
        "per_trial_ms": round(1000 * wall / trials, 2),
        "trials_per_s": round(trials / wall, 2),
        "driver_cpu_s": round(cpu1 - cpu0, 2),
        "driver_cpu_ms_per_trial": round(1000 * (cpu1 - cpu0) / trials, 2),
        "ray_processes_cpu_s": round(ray_cpu1 - ray_cpu0, 2),  # processes alive at both ends only
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


class _WindowView:
    """A study as the sampler sees it: only its last ``size`` trials (everything else delegated)."""

    def __init__(self, study: Any, size: int) -> None:
        self._study, self._size = study, size

    @classmethod
    def of(cls, study: Any, size: int) -> Any:
        return cls(study, size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[Any]:
        return self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)[-self._size:]


def _window_tpe(seed: int, window: int) -> Any:
    """Multivariate TPE over a sliding window of the last ``window`` trials (a prototype, not in hpo)."""
    import optuna

    class WindowTPE(optuna.samplers.TPESampler):
        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            return super().sample_relative(_WindowView.of(study, window), trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return super().sample_independent(_WindowView.of(study, window), trial, param_name, param_distribution)

    return WindowTPE(seed=seed, n_startup_trials=10, multivariate=True)


def _sampler(name: str, seed: int = 0) -> Any:
    from hpo.strategies._builtin import _random, _tpe

    if name == "random":
        return _random(seed)
    if name == "tpe":
        return _tpe(seed)
    if name == "tpe_multivariate":
        return _tpe(seed, multivariate=True)
    if name == "tpe_mv_window1000":
        return _window_tpe(seed, WINDOW)
    raise ValueError(name)


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


def measure_suggest(name: str, sizes: list[int], asks: int) -> list[dict[str, Any]]:
    """Median time of ``study.ask()`` + ``SPACE.suggest`` at each study size, for one sampler."""
    import warnings

    import numpy as np
    import optuna
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rng = np.random.default_rng(0)
    dists = SPACE.to_optuna()
    study = optuna.create_study(sampler=_sampler(name), direction="minimize")
    points = []
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
        ask_s.sort()
        points.append({"n_trials": n, "median_ms": round(1000 * statistics.median(ask_s), 3),
                       "p90_ms": round(1000 * ask_s[min(len(ask_s) - 1, int(0.9 * len(ask_s)))], 3),
                       "median_cpu_ms": round(1000 * statistics.median(cpu_s), 3),
                       "tell_median_ms": round(1000 * statistics.median(tell_s), 3)})
    return points


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


def _print(res: dict[str, Any]) -> None:
    print(f"1. one search through hpo.run ({res['search']['description']})")
    print("   tail: last trial's report to hpo.run's return; CPU: driver CPU ms per trial; RSS in MiB; "
          "load: 1-min load average at start/end")
    print(f"{'variant':<8} {'trials':>6} {'done':>6} {'wall s':>7} {'ms/trial':>8} {'trials/s':>8} {'tail s':>6} "
          f"{'CPU':>6} {'RSS start':>9} {'end':>6} {'peak':>6} {'KB/trial':>8} {'Ray procs':>11} {'disk':>6} "
          f"{'load':>11}")
    for v in res["search"]["variants"]:
        r, ray, ld = v["driver_rss_mb"], v["ray_processes_rss_mb"], v["load_avg_1min"]
        print(f"{v['variant']:<8} {v['trials']:>6} {v['completed']:>6} {v['wall_s']:>7.1f} {v['per_trial_ms']:>8.2f} "
              f"{v['trials_per_s']:>8.2f} {v['after_last_trial_s'] or 0:>6.1f} {v['driver_cpu_ms_per_trial']:>6.1f} "
              f"{r['start']:>9.1f} {r['end']:>6.1f} {r['peak']:>6.1f} {r['growth_kb_per_trial']:>8.2f} "
              f"{ray['start']:>5.0f}->{ray['end']:<5.0f} {v['storage']['mb']:>6.1f} "
              f"{ld['start']:>5.1f}/{ld['end']:<5.1f}")
        print(f"  per block of {v['block_size']} trials: trials/s  "
              + " ".join(f"{b['trials_per_s']:.1f}" if b["trials_per_s"] else "-" for b in v["blocks"]))
        print(f"  {'':<22}driver RSS MiB " + " ".join(f"{b['rss_mb']:.0f}" for b in v["blocks"]))
    s = res["suggest"]
    print(f"\n2. study.ask() + suggest, 6 params: median wall / CPU ms of {s['asks']} asks at each study size; "
          f"est.: driver CPU s in suggestions over a whole {s['estimate_for_trials']}-trial search")
    print(f"{'sampler':<18} " + " ".join(f"{n:>15}" for n in s["sizes"]) + f" {'est. s':>8}")
    for name, row in s["samplers"].items():
        print(f"{name:<18} " + " ".join(f"{p['median_ms']:>7.1f} /{p['median_cpu_ms']:>6.1f}" for p in row["points"])
              + f" {row['estimated_total_s']:>8.0f}")
    print()
    for line in res["findings"]:
        print(line)


def _findings(res: dict[str, Any]) -> list[str]:
    out = []
    for v in res["search"]["variants"]:
        rates = [b["trials_per_s"] for b in v["blocks"][1:] if b["trials_per_s"]]
        trend = f"{rates[0]:.1f} -> {rates[-1]:.1f} trials/s from block 2 to the last" if len(rates) > 1 else ""
        out.append(f"search ({v['variant']}): {v['completed']}/{v['trials']} trials in {v['wall_s']:.0f} s "
                   f"({v['per_trial_ms']:.1f} ms/trial); {trend}; driver RSS {v['driver_rss_mb']['start']:.0f} -> "
                   f"{v['driver_rss_mb']['end']:.0f} MiB (peak {v['driver_rss_mb']['peak']:.0f}).")
    samplers = res["suggest"]["samplers"]
    last = res["suggest"]["sizes"][-1]
    tail = {name: row["points"][-1]["median_cpu_ms"] for name, row in samplers.items()}
    if "tpe" in tail:
        out.append(f"TPE (hpo default) at {last} trials: {tail['tpe']:.0f} CPU ms per suggestion "
                   f"(random: {tail.get('random', float('nan')):.1f} ms); hpo's searcher does not cap it.")
    for name in ("tpe_multivariate", "tpe_mv_window1000"):
        if name in tail and "tpe" in tail:
            out.append(f"{name} at {last}: {tail[name]:.0f} CPU ms ({tail['tpe'] / tail[name]:.1f}x less than tpe).")
    return out


def _plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, row in res["suggest"]["samplers"].items():
        pts = row["points"]
        line = a1.plot([p["n_trials"] for p in pts], [p["median_cpu_ms"] for p in pts], "o-", label=name)[0]
        a1.plot([p["n_trials"] for p in pts], [p["median_ms"] for p in pts], ":", color=line.get_color(), alpha=0.5)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("completed trials in the study")
    a1.set_ylabel("ms per suggestion (CPU solid, wall dotted)")
    a1.set_title("Optuna suggestion cost, 6 params")
    a1.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)
    a3 = a2.twinx()
    for v in res["search"]["variants"]:
        xs = [b["trials_done"] for b in v["blocks"]]
        a2.plot(xs, [b["trials_per_s"] or 0 for b in v["blocks"]], "o-", label=f"trials/s ({v['variant']})")
        a3.plot(xs, [b["rss_mb"] for b in v["blocks"]], "s--", alpha=0.6, label=f"driver RSS ({v['variant']})")
    a2.set_xlabel("trials done")
    a2.set_ylabel(f"trials/s over each block of {res['search']['variants'][0]['block_size']}")
    a3.set_ylabel("driver RSS (MiB)")
    a2.set_ylim(bottom=0)
    a3.set_ylim(bottom=0)
    a2.set_title(f"{res['search']['trials']}-trial search through hpo.run")
    h1, l1 = a2.get_legend_handles_labels()
    h2, l2 = a3.get_legend_handles_labels()
    a2.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 trials, study sizes 100 and 500 (a smoke test)")
    ap.add_argument("--trials", type=int, help="trials in the search (default 10000; 300 with --quick)")
    ap.add_argument("--tracking", action="store_true", help="also run the search with MLflow tracking to SQLite")
    ap.add_argument("--sizes", help="comma-separated study sizes (default 100,1000,3000,10000; 100,500 with --quick)")
    ap.add_argument("--asks", type=int, help="timed asks at each study size (default 20; 10 with --quick)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    trials = args.trials or (300 if args.quick else 10_000)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([100, 500] if args.quick
                                                                          else [100, 1000, 3000, 10_000])
    asks = args.asks or (10 if args.quick else 20)

    import ray

    work = Path(tempfile.mkdtemp(prefix="hpo-bench-scale-"))
    variants = ["off", "sqlite"] if args.tracking else ["off"]
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        runs = [measure_search(trials, v, work) for v in variants]
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    samplers = {}
    for name in SAMPLERS:
        points = measure_suggest(name, sizes, asks)
        samplers[name] = {"points": points, "estimated_total_s": round(estimated_total_s(points, trials), 1)}
    res: dict[str, Any] = {
        "benchmark": "scale",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    **_versions()},
        "search": {"trials": trials, "variants": runs,
                   "description": f"{trials} trials of a one-report trainable, random + FIFO, 1 CPU each on "
                                  "a 2-CPU embedded Ray, tracking " + " / ".join(variants)},
        "suggest": {"sizes": sizes, "asks": asks, "space": {n: type(p).__name__ for n, p in SPACE.params.items()},
                    "estimate_for_trials": trials, "samplers": samplers},
        "hpo_caps_suggest_cost": False,
    }
    res["findings"] = _findings(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "scale_quick" if args.quick else "scale"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    _plot(res, out / f"{stem}.png")
    _print(res)
    return res


if __name__ == "__main__":
    main()
