"""Chaos: ``hpo run`` killed with SIGKILL at N seeded random moments, resumed after each, then checked.

    python -m benchmarks.chaos [--kills 5] [--seed 0] [--trials 16] [--out DIR]

One search (a TPE searcher over a 0.3-s-per-step trainable, 4 steps, 2 trials at a time, MLflow on
a fresh SQLite store) on a local Ray cluster this script starts (``ray start`` head, two CPUs).
Each attempt (``hpo run``, then ``hpo resume``) is killed with SIGKILL of its whole process group
after a delay drawn uniformly from [1, 12] s (seeded), at most ``--kills`` times; the last resume
runs to its end. Then every record must agree, exactly:

* ``trials.json``: exactly ``--trials`` trials, each id once, every one completed;
* the Optuna study: exactly ``--trials`` trials, none RUNNING, COMPLETE ones = completed trials;
* MLflow: one parent run (FINISHED), exactly one child run per trial (FINISHED), none RUNNING,
  and each child's ``loss`` history holds every step of the trial's ``result.json`` once.

Prints one JSON line (kills done, the moments, attempts, wall time, the checks and their verdict)
and writes it to ``benchmarks/results/chaos.json``; exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _start_cluster(work: Path) -> str:
    from hpo.testing.processes import free_port

    port = free_port()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                    "--num-cpus=2", f"--temp-dir={work / 'ray'}", "--include-dashboard=false"],
                   check=True, env=_env(), capture_output=True)
    return f"127.0.0.1:{port}"


def _checks(work: Path, run_dir: Path, trials: int) -> dict[str, bool]:
    from hpo.rundir import saved_records, trial_histories
    from hpo.wire import result_steps

    records = list(saved_records(run_dir))
    ids = Counter(r["trial_id"] for r in records)
    out = {"trials.json: exact count": len(records) == trials and set(ids.values()) == {1},
           "trials.json: all completed": {r["status"] for r in records} == {"completed"}}
    saved = sorted(run_dir.glob("searcher-state-*.pkl"))  # the study as the search saved it last
    study = pickle.loads(saved[-1].read_bytes()).get("study") if saved else None
    states = Counter(t.state.name for t in study.trials) if study is not None else Counter()
    out["optuna: exact count, all COMPLETE"] = states == Counter({"COMPLETE": trials})
    con = sqlite3.connect(work / "mlflow.db")
    state = json.loads((run_dir / "hpo_state.json").read_text())
    parent = state["parent_run_id"]
    rows = con.execute("SELECT r.run_uuid, r.status, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                       "AND t.key = 'hpo.trial_id' WHERE r.lifecycle_stage = 'active' AND r.run_uuid IN "
                       "(SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' AND value = ?)",
                       (parent,)).fetchall()
    per_trial = Counter(tid for _, _, tid in rows)
    out["mlflow: one run per trial"] = set(per_trial) == set(ids) and set(per_trial.values()) == {1}
    out["mlflow: parent and children FINISHED"] = (
        {s for _, s, _ in rows} == {"FINISHED"}
        and con.execute("SELECT status FROM runs WHERE run_uuid = ?", (parent,)).fetchone()[0] == "FINISHED")
    histories = trial_histories(run_dir)
    steps_ok = True
    for run_id, _, tid in rows:
        logged = [s for (s,) in con.execute("SELECT step FROM metrics WHERE run_uuid = ? AND key = 'loss'",
                                            (run_id,))]
        history = histories.get(tid, ({}, []))[1]
        expected = sorted({int(step) for r in history for step, _ in result_steps(r)})
        steps_ok &= sorted(logged) == expected
    out["mlflow: every step once"] = steps_ok
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="hpo-chaos-"))
    exp = work / "chaos.yaml"
    exp.write_text(json.dumps({
        "name": "chaos", "trainable": "tests.trainables:quadratic", "metric": "loss", "mode": "min",
        "space": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 4, "sleep": 0.3},
        "num_samples": args.trials, "max_concurrent": 2, "strategy": {"searcher": "tpe", "seed": args.seed},
        "tracking": {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}"}}))
    address = _start_cluster(work)
    t0 = time.monotonic()
    moments, attempts, code = [], 0, None
    try:
        from hpo.rundir import find_run_dir

        while True:
            started = any((work / "hpo_results").glob("chaos-*/hpo_state.json"))
            cmd = ["resume", "chaos"] if started else ["run", str(exp)]
            proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", *cmd, "--address", address], cwd=work,
                                    env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            attempts += 1
            if len(moments) < args.kills:
                delay = rng.uniform(1, 12)
                try:
                    code = proc.wait(delay)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    moments.append(round(delay, 2))
                    continue
            else:
                code = proc.wait(600)
            if code == 0:
                break
            err = proc.stderr.read() if proc.stderr else ""
            raise SystemExit(f"attempt {attempts} exited {code}:\n{err[-3000:]}")
        run_dir = find_run_dir("chaos", str(work / "hpo_results"))
        checks = _checks(work, run_dir, args.trials)
    finally:
        from hpo.testing.processes import stop_processes_under

        stop_processes_under(str(work / "ray"))  # this cluster only (`ray stop` would stop every one)
    summary = {"kills": len(moments), "moments_s": moments, "attempts": attempts, "seed": args.seed,
               "trials": args.trials, "wall_s": round(time.monotonic() - t0, 1), "checks": checks,
               "ok": all(checks.values())}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "chaos.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
