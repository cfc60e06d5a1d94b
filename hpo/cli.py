"""The ``hpo`` command: run, validate, resume, export and report searches; nightly searches; list strategies;
find lr bounds.

Heavy imports (Ray, torch, MLflow) happen only inside the commands that need them, so
``hpo --help`` and ``hpo validate`` stay fast.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
from typing import Any

from hpo.errors import HpoConfigError, SearchInterrupted


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpo", description="Distributed hyperparameter optimization for PyTorch.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the search an experiment file describes")
    r.add_argument("experiment", help="experiment YAML file")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the experiment file (repeatable)")
    r.add_argument("--address", help="join an existing Ray cluster (e.g. 127.0.0.1:6379 or 'auto')")
    r.add_argument("--working-dir", metavar="PATH", help="a directory Ray ships to every node: the trainable's "
                                                        "module is imported from there (replaces working_dir)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: experiment file, MLFLOW_TRACKING_URI, "
                                          "or sqlite:///mlflow.db)")
    r.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")

    n = sub.add_parser("nightly", help="run tonight's search of an experiment, warm-started from earlier nights")
    n.add_argument("experiment", help="experiment YAML file")
    n.add_argument("--date", help="the night, YYYY-MM-DD (default: today in nightly.timezone)")
    n.add_argument("--time-budget", help="the night's search time, e.g. 2h, 30m, 90s (default: nightly.time_budget)")
    n.add_argument("--dry-run", action="store_true",
                   help="compare the night's best model with the champion and record the decision, "
                        "but do not move the 'champion' alias")
    n.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the experiment file (repeatable)")
    n.add_argument("--address", help="join an existing Ray cluster")
    n.add_argument("--tracking-uri", help="MLflow tracking URI")
    n.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")

    sc = sub.add_parser("schedule", help="print or install the job that runs `hpo nightly` on a cron schedule")
    sc.add_argument("experiment", help="experiment YAML file")
    sc.add_argument("--cron", required=True, help='five-field cron expression, e.g. "0 2 * * *"')
    sc.add_argument("--target", help="cron, systemd, kubernetes or github-actions (optional with --show-next)")
    sc.add_argument("--tz", help="IANA time zone of the schedule (default: the machine's; GitHub Actions: UTC)")
    sc.add_argument("--install", action="store_true", help="install it (crontab, systemd units) or write it to --out")
    sc.add_argument("--show-next", type=int, default=0, metavar="N", help="print the next N run times")
    sc.add_argument("--out", help="directory to write the files to (kubernetes, github-actions, or instead of "
                                  "the systemd unit directory)")
    sc.add_argument("--image", help="container image with hpo installed (kubernetes)")

    nr = sub.add_parser("nightly-report", help="the trend across nights: HTML, Markdown and a PNG plot")
    nr.add_argument("name_or_experiment", help="an experiment YAML file, or the experiment's name")
    nr.add_argument("--storage-path", help="where its nights are (default: the file's storage_path, or hpo_results)")
    nr.add_argument("--out", help="output directory (default <storage_path>/<name>-trend)")
    nr.add_argument("--tracking-uri", help="MLflow tracking URI of the nights' parent runs")
    nr.add_argument("--no-mlflow", action="store_true", help="do not log the files on the nights' parent runs")
    nr.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")

    v = sub.add_parser("validate", help="check an experiment file without running anything")
    v.add_argument("experiment")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    sub.add_parser("strategies", help="list searchers and schedulers, built-in and plug-in")

    s = sub.add_parser("resume", help="continue a killed or interrupted search")
    s.add_argument("name_or_path", help="a run directory, or a search name (its newest run)")
    s.add_argument("--storage-path", default="hpo_results", help="where runs of that name are (default hpo_results)")
    s.add_argument("--address")
    s.add_argument("--working-dir", metavar="PATH", help="ship this directory instead of the recorded one")
    s.add_argument("--tracking-uri")
    s.add_argument("--json", action="store_true")

    m = sub.add_parser("sync-mlflow", help="replay a search from Ray's storage into MLflow (idempotent)")
    m.add_argument("name_or_path", help="a run directory, or a search name (its newest run)")
    m.add_argument("--storage-path", default="hpo_results")
    m.add_argument("--tracking-uri")
    m.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="write an HTML and a Markdown report of a search from MLflow")
    rp.add_argument("name", help="the search name (its MLflow experiment)")
    rp.add_argument("--tracking-uri")
    rp.add_argument("--run-id", help="a specific search (parent run); default: the newest")
    rp.add_argument("--out", default=".", help="directory for NAME-report.html and NAME-report.md")

    e = sub.add_parser("export", help="export a search's best model (model.pt, torch.export model.pt2, config.json)")
    e.add_argument("name_or_path", help="a run directory, or a search name (its newest run)")
    e.add_argument("--storage-path", default="hpo_results")
    e.add_argument("--out", required=True, help="directory to write the model files to")

    d = sub.add_parser("dashboard", help="open a search's Optuna study in optuna-dashboard (bound to 127.0.0.1)")
    d.add_argument("name_or_path", help="a run directory, or a search name (its newest run)")
    d.add_argument("--storage-path", default="hpo_results")
    d.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free one)")
    d.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; the dashboard has no login)")

    lf = sub.add_parser("lr-find", help="learning-rate range test on an experiment's task; proposes lr bounds")
    lf.add_argument("experiment")
    lf.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    lf.add_argument("--min-lr", type=float, default=1e-6)
    lf.add_argument("--max-lr", type=float, default=1.0)
    lf.add_argument("--steps", type=int, default=100)
    lf.add_argument("--plot", help="write the loss-versus-lr curve to this PNG")
    lf.add_argument("--json", action="store_true")
    return p


def _lr_find(args: argparse.Namespace) -> None:
    from hpo.config import load_experiment
    from hpo.errors import HpoConfigError as Err
    from hpo.train.builtin import check_before_launch
    from hpo.train.lr_find import center_config, lr_find

    exp = load_experiment(args.experiment, args.overrides)
    if not exp.is_builtin:
        raise Err("trainable", "lr-find runs the built-in task (hpo.train:train)", exp.trainable)
    data = check_before_launch(exp)
    config = {**exp.task, **center_config(exp.space)}
    result = lr_find(config, data, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    if args.plot:
        result.plot(args.plot)
    if args.json:
        print(json.dumps({k: v for k, v in result.to_dict().items()}))
        return
    print(f"steepest descent at lr {result.steepest_lr:.3g}; lowest loss at lr {result.min_loss_lr:.3g}")
    print("proposed search space entry:")
    print(f"  {result.space_yaml()}")


def _print_summary(results: Any, as_json: bool) -> None:
    summary = results.summary()
    if as_json:
        print(json.dumps(summary, default=str), flush=True)
        return
    print(f"search {summary['name']}: {summary['num_trials']} trials "
          f"({summary['num_completed']} completed, {summary['num_pruned']} pruned, {summary['num_cut']} cut, "
          f"{summary['num_errored']} errored, {summary['num_diverged']} diverged) on {summary['nodes']} node(s)")
    if summary.get("stop_reason"):
        print(f"stopped early: {summary['stop_reason']}")
    from hpo.leaderboard import Leaderboard, sig

    tty = sys.stdout.isatty()
    best = summary["best_metric"]
    print(f"best {summary['metric']}: {sig(best) if tty and best is not None else best}")
    if not tty:  # logs and pipes keep the exact configuration on one line
        print(f"best config: {json.dumps(summary['best_config'], default=str)}")
    print(Leaderboard.from_results(results).text(top=5))
    for tid, err in summary["errors"].items():
        print(f"  errored trial {tid}: {err}")
    if summary.get("pareto_front"):
        print(f"pareto front: {len(summary['pareto_front'])} trials")
    print(f"storage: {summary['storage_path']}")
    if summary["parent_run_id"]:
        print(f"mlflow: experiment {summary['mlflow_experiment_id']}, parent run {summary['parent_run_id']}")


def _nightly(args: argparse.Namespace) -> int:
    from hpo.config import load_experiment
    from hpo.lineage import NightLocked
    from hpo.nightly import EXIT_RUNNING, nightly

    exp = load_experiment(args.experiment, args.overrides)
    try:
        night = nightly(exp, date=args.date, time_budget=args.time_budget, address=args.address,
                        tracking_uri=args.tracking_uri, dry_run=args.dry_run)
    except NightLocked as exc:
        print(f"hpo: {exc}; this one exits", file=sys.stderr)
        if args.json:
            print(json.dumps({"name": exp.name, "night": args.date, "exit_code": EXIT_RUNNING}), flush=True)
        return EXIT_RUNNING
    if night.message:
        print(f"hpo: {night.message}", file=sys.stderr)
    s = night.summary
    if args.json:
        print(json.dumps(s, default=str), flush=True)
    elif s:
        lineage = f"{s['lineage']} (new)" if s.get("new_lineage") else s["lineage"]
        print(f"night {s['night']} of {s['name']}: {s['trials_this_night']} trials tonight, "
              f"{s['trials_in_study']} in lineage {lineage}")
        print(f"best {s['metric']} tonight: {s['best_metric']}")
        print(f"best config tonight: {json.dumps(s['best_config'], default=str)}")
        if s.get("decision"):
            print(f"champion ({s['registered_model']}, on {s['compared_on']}): {s['decision']}; challenger "
                  f"version {s['challenger_version']} scored {s['challenger_score']}, the champion before "
                  f"(version {s['champion_before']}) {s['champion_score']}; champion now: version "
                  f"{s['champion_after']}" + (" (dry run: alias not moved)" if s.get("dry_run") else ""))
        print(f"data fingerprint: {s['data_fingerprint']}; run directory: {s['run_dir']}; exit code {s['exit_code']}")
    return night.exit_code


def _schedule(args: argparse.Namespace) -> None:
    from hpo.config import load_experiment
    from hpo.schedule import DEFAULT_IMAGE, build_schedule, install, next_runs

    exp = load_experiment(args.experiment)  # a bad file fails before anything is printed or installed
    sched = None
    if args.target is not None or not args.show_next:
        sched = build_schedule(exp, args.experiment, args.cron, args.target or "", args.tz, args.image or DEFAULT_IMAGE)
    for when in next_runs(args.cron, max(args.show_next, 0), args.tz):
        print(f"{'# next run: ' if sched else ''}{when.isoformat(' ')}")
    if sched is None:
        return
    for note in sched.notes:
        print(f"hpo: note: {note}", file=sys.stderr)
    if args.install or (args.out and sched.target != "cron"):
        for line in install(sched, args.out):
            print(line)
        return
    for name, text in sched.files.items():
        print(text if len(sched.files) == 1 else f"# ---- {name} ----\n{text}", end="")


def _nightly_report(args: argparse.Namespace) -> int:
    from hpo.trend import nightly_report

    t = nightly_report(args.name_or_experiment, args.storage_path, args.out, args.tracking_uri, not args.no_mlflow)
    failed = [run for run, err in t["logged"].items() if err]  # each one logged a warning with its error
    if failed:
        print(f"hpo: the trend is not logged on {len(failed)} of {len(t['logged'])} parent runs", file=sys.stderr)
    if args.json:
        keys = ("name", "storage_path", "html", "markdown", "png", "rows", "tracking_uri", "logged")
        print(json.dumps({k: t[k] for k in keys}, default=str), flush=True)
    else:
        print(f"{len(t['rows'])} nights of {t['name']}: wrote {t['html']}, {t['markdown']} and {t['png']}")
        if t["logged"]:
            print(f"logged under trend/ on {len(t['logged']) - len(failed)} of {len(t['logged'])} parent runs")
    return 1 if failed else 0


def _strategies() -> None:
    from hpo.strategies import list_strategies

    infos = list_strategies()
    width = max(len(i.name) for i in infos)
    for role, kinds in (("searchers", ("sampler", "searcher")), ("schedulers", ("scheduler",))):
        print(f"{role}:")
        for i in infos:
            if i.kind in kinds:
                extra = f" (aliases: {', '.join(i.aliases)})" if i.aliases else ""
                print(f"  {i.name:<{width}}  {i.description}{extra}")


_exit_code: list[int] = []  # what the command returned, when run as a program (see _exit_now)


def _exit_now() -> None:
    """The program's last exit handler (registered before any other): once Python has joined its
    threads and run every other handler (Ray's disconnect, MLflow's, logging's), leave without the
    interpreter's teardown, which frees every object of torch, MLflow, Ray and matplotlib one by
    one and took 3 s after a search on a busy 2-core machine. Every file hpo writes is closed
    by then; stdout and stderr are flushed here."""
    if not _exit_code:
        return  # an uncaught exception: the usual exit, traceback and all
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_code[0])


def main(argv: list[str] | None = None) -> int:
    """The ``hpo`` command; ``argv`` None: the program's own arguments (and its fast exit)."""
    if argv is None:
        atexit.register(_exit_now)  # before anything registers its own: it runs last
        code = _main(argv)
        _exit_code.append(code)
        return code
    return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "strategies":
            _strategies()
        elif args.command == "validate":
            from hpo.config import load_experiment
            from hpo.train.builtin import check_before_launch

            exp = load_experiment(args.experiment, args.overrides)
            check_before_launch(exp)  # the one validation pass, then the built-in task's data against it
            print(f"ok: {exp.name}: {len(exp.space)} parameters, {exp.strategy.searcher}+{exp.strategy.scheduler}, "
                  f"{exp.resolved_num_samples()} trials")
        elif args.command == "run":
            from hpo.config import load_experiment
            from hpo.runner import run

            exp = load_experiment(args.experiment, args.overrides)
            _print_summary(run(exp, address=args.address, tracking_uri=args.tracking_uri,
                               working_dir=args.working_dir), args.json)
        elif args.command == "nightly":
            return _nightly(args)
        elif args.command == "nightly-report":
            return _nightly_report(args)
        elif args.command == "schedule":
            _schedule(args)
        elif args.command == "resume":
            from hpo.runner import resume

            results = resume(args.name_or_path, storage_path=args.storage_path, address=args.address,
                             tracking_uri=args.tracking_uri, working_dir=args.working_dir)
            _print_summary(results, args.json)
        elif args.command == "sync-mlflow":
            from hpo.sync import sync_mlflow

            results = sync_mlflow(args.name_or_path, storage_path=args.storage_path, tracking_uri=args.tracking_uri)
            _print_summary(results, args.json)
        elif args.command == "export":
            from hpo.export import export_best

            for path in export_best(args.name_or_path, args.out, storage_path=args.storage_path):
                print(f"wrote {path}")
        elif args.command == "dashboard":
            from hpo.dashboard import open_dashboard

            open_dashboard(args.name_or_path, args.storage_path, args.host, args.port,
                           announce=lambda line: print(line, flush=True))
        elif args.command == "lr-find":
            _lr_find(args)
        elif args.command == "report":
            from hpo.reports import build_report

            files = build_report(args.name, tracking_uri=args.tracking_uri, out_dir=args.out, run_id=args.run_id)
            print(f"wrote {files.html} and {files.markdown}; attached to run {files.parent_run_id} under report/")
    except HpoConfigError as exc:
        print(f"hpo: error: {exc}", file=sys.stderr)
        return 2
    except SearchInterrupted as exc:
        _print_summary(exc.results, getattr(args, "json", False))
        print(f"hpo: {exc.message}" if exc.message else
              f"hpo: {exc.signal_name}: the search stopped; running trials were cut and recorded. "
              f"Continue it with:\n  {exc.resume_command}", file=sys.stderr)
        return exc.exit_code  # 130 SIGINT, 143 SIGTERM, 75 disk full (hpo.lifecycle.EXIT_CODES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
