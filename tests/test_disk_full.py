"""The storage path fills up mid-search: the search stops like an interrupt (running trials cut,
every record written whole), ``hpo run`` exits 75 naming the path, its free space and the
``hpo resume`` command; after space is freed, ``hpo resume`` finishes the search with exact counts.

The end-to-end test runs in a user and mount namespace (``unshare -rm``) holding a 40 MiB tmpfs
as the storage path (real Ray on this machine, MLflow on an SQLite file outside the tmpfs); it is
skipped where the system refuses such namespaces. The fast tests check each piece with fakes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpo import disk_space
from hpo.errors import HpoConfigError, is_disk_full
from hpo.lifecycle import DISK_FULL, EXIT_CODES, resumes_as_interrupted
from hpo.rundir import write_json
from hpo.wire import DISK_FULL_KEY, STEP_KEY
from tests.conftest import ROOT
from tests.test_lifecycle import FakeTrial, Told


def _collector(run_dir: Path) -> tuple[Any, Any]:
    from hpo.lifecycle import Collector
    from hpo.strategies import TrialOutcomes

    outcomes = TrialOutcomes()
    return Collector(["loss"], Told(), outcomes, downstream=[Told()], run_dir=str(run_dir)), outcomes


# -- the pieces, with fakes (fast) --------------------------------------------------------------------


def test_a_checkpoint_the_full_disk_cannot_take_is_dropped_and_the_step_reported_flagged(monkeypatch) -> None:
    from ray import tune

    from hpo import session

    sent: list[tuple[dict, Any]] = []

    def report(metrics: dict, checkpoint: Any = None) -> None:
        if checkpoint is not None:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        sent.append((metrics, checkpoint))

    monkeypatch.setattr(tune, "report", report)
    session._send({"loss": 0.5}, checkpoint="a checkpoint")
    assert len(sent) == 1 and sent[0][1] is None and sent[0][0]["loss"] == 0.5 and DISK_FULL_KEY in sent[0][0]
    def refused(metrics: dict, checkpoint: Any = None) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tune, "report", refused)
    with pytest.raises(PermissionError):  # any other failure is the trial's own
        session._send({"loss": 0.5}, checkpoint="a checkpoint")


def test_a_full_disk_stops_the_search_like_an_interrupt_and_gives_back_the_reserve(tmp_path: Path) -> None:
    c, outcomes = _collector(tmp_path)
    c.setup()
    reserve = tmp_path / disk_space.RESERVE_FILE
    assert reserve.stat().st_size == disk_space.RESERVE_BYTES
    a, b = FakeTrial("a", last_result={"loss": 1.0, STEP_KEY: 3}), FakeTrial("b")
    c.on_step_begin(1, [a, b])
    assert not c.stop_all()
    c.on_trial_result(1, [a, b], a, {"loss": 1.0, STEP_KEY: 3, DISK_FULL_KEY: "[Errno 28] No space left"})
    assert c.interrupted == DISK_FULL and not reserve.exists()
    assert c.stop_all() and c.stop_reason.startswith(f"disk full: {tmp_path} (") and "free of" in c.stop_reason
    assert outcomes.cut_of("a") == (3, c.stop_reason) and outcomes.cut_of("b") is not None
    assert resumes_as_interrupted(c.stop_reason) and EXIT_CODES[DISK_FULL] == 75
    assert not resumes_as_interrupted("time budget") and not resumes_as_interrupted("metric check")


def test_a_trial_that_raised_the_full_disks_error_itself_stops_the_search(tmp_path: Path) -> None:
    c, _ = _collector(tmp_path)
    failed, other = FakeTrial("f", "ERROR"), FakeTrial("ok", "ERROR")
    (tmp_path / "err.txt").write_text("Failure # 1\nOSError: [Errno 28] No space left on device: 'w.pt'\n")
    (tmp_path / "other.txt").write_text("Failure # 1\nValueError: x too large\n")
    failed.error_file, other.error_file = str(tmp_path / "err.txt"), str(tmp_path / "other.txt")
    c.on_trial_error(1, [other], other)
    assert c.interrupted is None
    c.on_trial_recover(1, [failed], failed)  # with max_failures, Ray would retry it: the search stops instead
    assert c.interrupted == DISK_FULL and "trial f: OSError: [Errno 28]" in (c.disk_full or "")


def test_hpos_state_files_stay_whole_when_the_disk_fills_and_the_search_hears_of_it(tmp_path, monkeypatch) -> None:
    path = tmp_path / "trials.json"
    write_json(path, {"trials": [1, 2]})
    heard: list[str] = []

    def dump(data: Any, f: Any, **kw: Any) -> None:
        f.write('{"trials": [1, 2, ')  # half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", dump)
    with disk_space.watch(tmp_path, heard.append), pytest.raises(OSError) as raised:
        write_json(path, {"trials": [1, 2, 3]})
    monkeypatch.undo()
    assert is_disk_full(raised.value) and heard == [str(path)]
    assert json.loads(path.read_text()) == {"trials": [1, 2]} and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_rays_state_uploads_replace_files_whole_and_a_full_disk_is_reported(tmp_path, monkeypatch) -> None:
    import pyarrow.fs
    from ray.train._internal import storage

    from hpo._compat.ray import atomic_uploads

    staging, experiment = tmp_path / "staging", tmp_path / "run"
    (staging / "trial_1").mkdir(parents=True)
    (staging / "experiment_state.json").write_text('{"trials": ["new"]}')
    (staging / "trial_1" / "result.json").write_text('{"loss": 1}\n')
    experiment.mkdir()
    (experiment / "experiment_state.json").write_text('{"trials": ["old"]}')
    heard: list[str] = []
    real_copy = shutil.copy2

    def copy_then_fill(src: str, dst: str) -> None:
        Path(dst).write_text(Path(src).read_text()[:5])  # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    fs = pyarrow.fs.LocalFileSystem()
    with disk_space.watch(experiment, heard.append), atomic_uploads():
        monkeypatch.setattr(shutil, "copy2", copy_then_fill)
        storage._upload_to_fs_path(str(staging), fs, str(experiment))  # Ray's syncer looks it up here
        assert heard == [str(experiment)]  # (then tried once more, and left to the search to report)
        assert json.loads((experiment / "experiment_state.json").read_text()) == {"trials": ["old"]}
        assert not [p for p in experiment.rglob("*") if p.name.endswith(".tmp")]
        monkeypatch.setattr(shutil, "copy2", real_copy)
        storage._upload_to_fs_path(str(staging), fs, str(experiment))
    assert json.loads((experiment / "experiment_state.json").read_text()) == {"trials": ["new"]}
    assert (experiment / "trial_1" / "result.json").read_text() == '{"loss": 1}\n'


def test_a_search_does_not_start_or_resume_on_a_disk_without_room(tmp_path: Path) -> None:
    disk_space.check_free(tmp_path, need=1)
    with pytest.raises(HpoConfigError, match=r"storage_path: needs at least .* free .* free of"):
        disk_space.check_free(tmp_path / "not" / "yet", need=2**62)


# -- end to end: a tmpfs that fills up mid-search ---------------------------------------------------------

_SCRIPT = r"""
set -u
D="$1"; OUT="$2"; EXP="$3"; PY="$4"
mount -t tmpfs -o size=40m tmpfs "$D" || exit 99
(   # once a trial has completed (its 8th and last result reached the storage path), fill it up until ENOSPC
    for i in $(seq 1200); do
        find "$D" -name result.json -exec grep -l '"training_iteration": 8,' {} + 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    date +%s.%N > "$OUT/filled_at"
    dd if=/dev/zero of="$D/filler" bs=64k 2> "$OUT/fill.err"
    for i in $(seq 2400); do  # when the search's records are written (trials.json comes last)
        [ -n "$(find "$D" -name trials.json 2>/dev/null | head -n 1)" ] && break
        sleep 0.05
    done
    date +%s.%N > "$OUT/records_at"
) &
FILLER=$!
timeout 240 "$PY" -m hpo.cli run "$EXP" --json > "$OUT/run.out" 2> "$OUT/run.err"; echo $? > "$OUT/run.rc"
date +%s.%N > "$OUT/run_ended_at"
wait $FILLER
RUN=$(ls -d "$D"/disk-*)
echo "$RUN" > "$OUT/run_dir"
cp -a "$RUN" "$OUT/after_fault"
"$PY" -m hpo.cli resume "$RUN" > /dev/null 2> "$OUT/early.err"; echo $? > "$OUT/early.rc"  # no space freed yet
rm -f "$D/filler"
timeout 240 "$PY" -m hpo.cli resume "$RUN" --json > "$OUT/resume.out" 2> "$OUT/resume.err"; echo $? > "$OUT/resume.rc"
cp -a "$RUN" "$OUT/after_resume"
"""


def _namespaces_refused(probe: Path) -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe.mkdir()
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', str(probe)],
                          capture_output=True, text=True, timeout=30)
    return None if proc.returncode == 0 else f"a tmpfs in a user+mount namespace is refused: {proc.stderr.strip()}"


def _parse_all(run_dir: Path) -> None:
    """Every JSON file hpo and Ray keep in the run directory parses, every line of every result.json."""
    for name in ("hpo_state.json", "outcomes.json", "trials.json"):
        json.loads((run_dir / name).read_text())
    states = list(run_dir.glob("experiment_state-*.json"))
    assert states
    for path in states:
        json.loads(path.read_text())
    for path in run_dir.glob("*/result.json"):
        for line in path.read_text().splitlines():
            json.loads(line)
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_a_disk_that_fills_mid_search_stops_it_cleanly_and_resume_finishes_it(tmp_path: Path) -> None:
    from tests.test_lifecycle_search import check_records

    refused = _namespaces_refused(tmp_path / "probe")
    if refused:
        pytest.skip(refused)
    disk, out, db = tmp_path / "disk", tmp_path / "out", tmp_path / "mlflow.db"
    disk.mkdir()
    out.mkdir()
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "name": "disk", "trainable": "tests.trainables:checkpointed", "metric": "loss", "mode": "min",
        "space": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 8, "sleep": 0.5},
        "strategy": {"searcher": "tpe", "seed": 0}, "num_samples": 6, "max_concurrent": 2,
        "storage_path": str(disk), "tracking": {"tracking_uri": f"sqlite:///{db}"}}))
    script = tmp_path / "scenario.sh"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
           "RAY_AUTH_MODE": "disabled"}
    started = time.monotonic()
    proc = subprocess.run(["unshare", "-rm", "sh", str(script), str(disk), str(out), str(exp), sys.executable],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=560)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = (out / "run.err").read_text()
    run_dir = (out / "run_dir").read_text().strip()
    assert "No space left on device" in (out / "fill.err").read_text()  # the filler wrote until the tmpfs was full
    filled_at = float((out / "filled_at").read_text())
    recorded_after = float((out / "records_at").read_text()) - filled_at
    exited_after = float((out / "run_ended_at").read_text()) - filled_at

    # The fault: exit 75, a message naming the path and its free space, and the resume command.
    assert int((out / "run.rc").read_text()) == EXIT_CODES[DISK_FULL], err[-3000:]
    assert f"hpo: disk full: no space left at {run_dir}" in err and " free of 40.0 MiB" in err, err[-3000:]
    assert f"\n  hpo resume {run_dir}\n" in err
    assert "Traceback" not in err, err[-3000:]
    summary = json.loads((out / "run.out").read_text().strip().splitlines()[-1])
    assert summary["interrupted"] == DISK_FULL and summary["stop_reason"].startswith(f"disk full: {run_dir}")

    # What it left: every file whole, each trial that had started cut (or completed), none errored.
    after_fault = out / "after_fault"
    _parse_all(after_fault)
    records = json.loads((after_fault / "trials.json").read_text())
    assert records["stop_reason"] == summary["stop_reason"]
    assert json.loads((after_fault / "outcomes.json").read_text())["stop_reason"] == summary["stop_reason"]
    statuses = {t["trial_id"]: t["status"] for t in records["trials"]}
    cut = {t["trial_id"]: t for t in records["trials"] if t["status"] == "cut"}
    assert cut and set(statuses.values()) == {"cut", "completed"} and len(statuses) < 6, statuses  # mid-search
    assert all(t["cut_reason"] == summary["stop_reason"] for t in cut.values())

    # Resumed before any space is freed: refused, naming the path and its free space.
    early = (out / "early.err").read_text()
    assert int((out / "early.rc").read_text()) == 2 and "storage_path: needs at least 16.0 MiB free" in early, early
    assert f"free of 40.0 MiB at {run_dir}" in early

    # Space freed: resume finishes the search, every trial once everywhere; cut trials stay as recorded.
    assert int((out / "resume.rc").read_text()) == 0, (out / "resume.err").read_text()[-3000:]
    after_resume = out / "after_resume"
    _parse_all(after_resume)
    final = check_records(after_resume, db, "loss", total=6)
    assert {tid for tid, s in final.items() if s == "cut"} == set(cut)
    assert sorted(final.values()).count("completed") == 6 - len(cut)
    kept = {t["trial_id"]: t for t in json.loads((after_resume / "trials.json").read_text())["trials"]}
    assert all(kept[tid]["cut_at"] == t["cut_at"] for tid, t in cut.items())
    assert recorded_after < 60, recorded_after  # a clean stop, not a hang
    print(f"\ndisk full: records written {recorded_after:.1f} s and hpo exited {exited_after:.1f} s after the "
          f"tmpfs filled; {len(cut)} trial(s) cut, {len(statuses) - len(cut)} completed before; resume ran "
          f"{6 - len(statuses)} more; scenario {took:.0f} s")


def test_rays_uploads_of_its_staging_copy_never_write_over_hpos_own_files(tmp_path) -> None:
    """``Tuner.restore`` copies the run directory into Ray's staging directory and every save
    uploads all of it: the copy of ``hpo_state.json`` taken at the resume replaced the newer one
    (which named the MLflow parent run opened since), and the next resume opened a second one."""
    import pyarrow.fs
    from ray.train._internal import storage

    from hpo._compat.ray import atomic_uploads
    from hpo.rundir import OWN_FILES

    staging, run = tmp_path / "staging", tmp_path / "run"
    for d in (staging / "best_model", staging / "trial_1", run):
        d.mkdir(parents=True, exist_ok=True)
    for name in ("hpo_state.json", "outcomes.json", "trials.json", "optuna.journal", "best_model/model.pt"):
        (staging / name).write_text("stale")
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_text("hpo's")
    (staging / "experiment_state-1.json").write_text("ray's")
    (staging / "trial_1" / "result.json").write_text("ray's")
    with atomic_uploads(keep=OWN_FILES):
        storage._upload_to_fs_path(str(staging), pyarrow.fs.LocalFileSystem(), str(run))
        storage._upload_to_fs_path(str(staging / "hpo_state.json"), pyarrow.fs.LocalFileSystem(),
                                   str(run / "hpo_state.json"))  # a single file too
    assert {str(p.relative_to(run)): p.read_text() for p in run.rglob("*") if p.is_file()} == {
        "hpo_state.json": "hpo's", "outcomes.json": "hpo's", "trials.json": "hpo's", "optuna.journal": "hpo's",
        "best_model/model.pt": "hpo's", "experiment_state-1.json": "ray's", "trial_1/result.json": "ray's"}
