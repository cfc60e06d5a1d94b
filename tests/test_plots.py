"""The pictures of a search are drawn over every trial (most are pruned under early stopping):
fast checks on made-up results and histories, then one real quickstart search whose parent run
carries every picture."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import pytest

from hpo import plots
from hpo.importance import importance_epoch, rung_importances
from hpo.results import Results, Step, TrialRecord
from hpo.trial_curves import compute_at_end, curves, rung_epochs

RUNGS = (2, 6, 18)  # ASHA with grace period 2, reduction factor 3, 20 epochs
EPOCHS = 20


def _accuracy(config: dict, epoch: int) -> float:
    """A made-up learning curve whose ceiling depends mostly on lr (best near 0.01)."""
    ceiling = 0.97 - 0.25 * abs(math.log10(config["lr"]) + 2) - (0.02 if config["optimizer"] == "sgd" else 0.0)
    return ceiling * (1 - math.exp(-epoch / 3))


def fake_search(n: int, seed: int = 0, completed: int | None = None, name: str = "fake") -> Results:
    """``n`` trials of an ASHA-like search: each runs to the next rung unless it is below the
    rung's median so far, then stops there (pruned); ``completed`` of those that got to the last
    rung are let finish, the others pruned there. Trial 3 is cut at epoch 4, trial 5 errors
    before any report, trial 7 diverges (NaN loss from epoch 3); the ids run against the start
    order, so trial number must come from the reports' times."""
    rnd = random.Random(seed)
    trials, histories = [], {}
    at_rung: dict[int, list[float]] = {r: [] for r in RUNGS}
    finished = 0
    for i in range(n):
        config = {"lr": 10 ** rnd.uniform(-4, -1.5), "optimizer": rnd.choice(["adam", "sgd"]),
                  "depth": rnd.randint(1, 3), "batch_size": rnd.choice([32, 64, 128])}
        tid = f"t{n - i:05d}"  # later starts get smaller ids
        stop, status = EPOCHS, "completed"
        for r in RUNGS:
            value = _accuracy(config, r)
            seen = sorted(at_rung[r])
            at_rung[r].append(value)
            if seen and value < seen[len(seen) // 2]:
                stop, status = r, "pruned"
                break
        if status == "completed" and completed is not None and finished >= completed:
            stop, status = RUNGS[-1], "pruned"
        finished += status == "completed"
        rung = max(k for k, r in enumerate(RUNGS) if r <= stop)
        record = TrialRecord(tid, config, {}, status, steps=stop, pruned_at=stop if status == "pruned" else None,
                             rung=rung, rung_epoch=RUNGS[rung])
        if i == 3:  # cut by the search after epoch 4, past the first rung
            stop = 4
            record.status, record.pruned_at, record.steps, record.cut_at = "cut", None, 4, 4
            record.rung, record.rung_epoch = 0, RUNGS[0]
        if i == 5:  # errored before its first report
            record.status, record.steps, record.error, record.pruned_at = "errored", 0, "RuntimeError: boom", None
            record.rung = record.rung_epoch = None
            trials.append(record)
            continue
        start = 1000.0 + 2 * i
        steps = []
        for e in range(1, stop + 1):
            loss = 2.0 * math.exp(-e / 3) + 0.1 if i != 7 or e < 3 else math.nan
            steps.append(Step(e, {"val_accuracy": _accuracy(config, e) + rnd.gauss(0, 0.003), "val_loss": loss,
                                  "train_loss": loss}, start + 0.1 * e))
        if i == 7:
            record.status = "diverged"
        record.metrics = dict(steps[-1].metrics)
        trials.append(record)
        histories[tid] = steps
    trials.sort(key=lambda t: t.trial_id)
    return Results(name, ["val_accuracy"], ["max"], trials, "/nonexistent-run-dir", histories=histories)


def _points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_history_plot_has_exactly_one_marker_per_trial_that_reported_and_marks_pruned_ones():
    results = fake_search(40, completed=1)
    reported = [t for t in results.trials if t.status != "errored"]
    fig = plots.history_figure(results)
    by_number, by_compute = fig.axes
    assert _points(by_number) == _points(by_compute) == len(reported) == 39
    labels = {c.get_label().split(" ")[0]: len(c.get_offsets()) for c in by_number.collections}
    assert labels["pruned"] == results.count("pruned") > 20
    assert labels["completed"] == results.count("completed") and labels["cut"] == 1 and labels["diverged"] == 1
    pruned = next(c for c in by_number.collections if c.get_label().startswith("pruned"))
    stopped = sorted(y for _, y in pruned.get_offsets())
    values = sorted(t.metrics["val_accuracy"] for t in results.trials if t.status == "pruned")
    assert stopped == pytest.approx(values)  # each at the value where it stopped (its rung)
    # the best-so-far line: completed trials only, never a pruned trial's value, no markers of its own
    (line,) = [ln for ln in by_number.lines if ln.get_label().startswith("best so far")]
    assert line.get_marker() in ("None", None, "")
    assert max(line.get_ydata()) == pytest.approx(results.best_metric)
    assert max(values) > results.best_metric  # a pruned trial above the best: the line ignores it


def test_trial_numbers_follow_the_first_report_not_the_id_and_compute_counts_every_epoch():
    results = fake_search(12)
    items = curves(results)
    assert [c.trial.trial_id for c in items] == sorted((c.trial.trial_id for c in items), reverse=True)
    assert [c.number for c in items] == list(range(1, 12))
    # the fake trials do not overlap in time (each starts 2 s after the last, epochs 0.1 s apart ... up
    # to 2 s long): the compute when one ends is every epoch of the trials before it, plus its own
    expected, total = [], 0
    for c in items:
        total += c.epochs
        expected.append(total)
    assert compute_at_end(results, items) == expected
    no_times = Results("x", ["val_accuracy"], ["max"], [TrialRecord("a", {}, {"val_accuracy": 0.5}, "completed", 3),
                                                       TrialRecord("b", {}, {"val_accuracy": 0.6}, "pruned", 2)],
                       "/nonexistent")
    assert compute_at_end(no_times, curves(no_times)) == [3, 5]


def test_learning_curves_draw_every_trial_by_status_with_rungs_and_the_best():
    results = fake_search(100)
    fig = plots.learning_curves_figure(results)
    acc, loss = fig.axes
    assert acc.get_ylabel() == "val_accuracy" and loss.get_ylabel() == "val_loss"
    from matplotlib.collections import LineCollection

    drawn = sum(len(c.get_segments()) for c in acc.collections if isinstance(c, LineCollection))
    assert drawn == 99  # every trial that reported, the errored one never did
    assert sorted({ln.get_xdata()[0] for ln in acc.lines if ln.get_linestyle() == ":"}) == list(RUNGS)
    best = results.best_trial
    (thick,) = [ln for ln in acc.lines if ln.get_color() == "black"]
    assert list(thick.get_ydata()) == [s.metrics["val_accuracy"] for s in results.histories[best.trial_id]]
    assert rung_epochs(results) == list(RUNGS)


def test_learning_curves_of_2000_trials_are_a_density_and_take_seconds(tmp_path):
    results = fake_search(2000, completed=40)
    start = time.perf_counter()
    path = plots.learning_curves(results, tmp_path / "lc.png")
    elapsed = time.perf_counter() - start
    assert path is not None and path.stat().st_size > 10_000
    assert elapsed < 8, elapsed
    fig = plots.learning_curves_figure(results)
    from matplotlib.collections import LineCollection, QuadMesh

    acc = fig.axes[0]
    assert any(isinstance(c, QuadMesh) for c in acc.collections)
    overlaid = sum(len(c.get_segments()) for c in acc.collections if isinstance(c, LineCollection))
    assert overlaid == results.count("completed") >= 30  # the completed trials over the density, not 2,000 lines
    assert "over 500" in fig.get_suptitle() and "1999 trials" in fig.get_suptitle()  # one errored silently


def test_importances_come_from_the_highest_rung_enough_trials_reached_when_one_trial_completed():
    results = fake_search(40, completed=1)
    assert results.count("completed") == 1 and results.study is None  # no Optuna study: any searcher
    epoch, reached = importance_epoch(curves(results))
    assert len(reached) >= 8 and epoch in RUNGS
    assert sum(epoch in c.by_step for c in curves(results)) == len(reached)
    assert sum(max(RUNGS) in c.by_step for c in curves(results)) < 8 or epoch == max(RUNGS)
    imp = rung_importances(results)
    assert imp is not None and imp.epoch == epoch and imp.num_trials == len(reached) and imp.num_completed <= 1
    fanova = imp.importances["fANOVA"]
    assert max(fanova, key=fanova.get) == "lr"  # the made-up curves depend on lr above all
    assert sum(fanova.values()) == pytest.approx(1.0)
    fig = plots.importances_figure(results)
    assert f"at epoch {epoch}" in fig.axes[0].get_title() and f"{len(reached)} trials" in fig.axes[0].get_title()


def test_importances_add_ped_anova_with_enough_trials_and_need_four():
    big = rung_importances(fake_search(400))
    assert big is not None and big.num_trials >= 20 and set(big.importances) == {"fANOVA", "PED-ANOVA"}
    assert max(big.importances["PED-ANOVA"], key=big.importances["PED-ANOVA"].get) == "lr"
    assert rung_importances(fake_search(3)) is None  # 3 trials reported: fewer than 4


def test_importances_sample_trials_past_the_cap_and_say_so(monkeypatch):
    import hpo.importance

    results = fake_search(400)
    full = rung_importances(results)
    monkeypatch.setattr(hpo.importance, "MAX_TRIALS", 20)
    capped = rung_importances(results)
    assert capped.num_trials == full.num_trials > 20 and capped.num_used == 20 and full.num_used == full.num_trials
    assert max(capped.importances["fANOVA"], key=capped.importances["fANOVA"].get) == "lr"
    title = plots.importances_figure(results).axes[0].get_title()
    assert f"{full.num_trials} trials reached that epoch" in title and "a random 20 of them used" in title


def test_parallel_coordinates_draw_pruned_trials_faded_and_categorical_axes():
    results = fake_search(30)
    fig = plots.parallel_coordinates_figure(results)
    ax = fig.axes[0]
    faded, bold = ax.collections[:2]
    assert len(faded.get_segments()) == 29 - results.count("completed")
    assert len(bold.get_segments()) == results.count("completed")
    assert faded.get_alpha() < bold.get_alpha()
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == ["lr", "optimizer", "depth", "batch_size", "val_accuracy"]
    texts = {t.get_text() for t in ax.texts}
    assert {"adam", "sgd"} <= texts and "(log)" in " ".join(texts)  # categories; lr spans decades: log


def test_pareto_front_draws_dominated_completed_trials_faded():
    trials = [TrialRecord(str(i), {"x": i}, {"acc": a, "size": s}, "completed")
              for i, (a, s) in enumerate([(0.9, 10), (0.95, 20), (0.8, 15), (0.85, 30), (0.97, 40)])]
    trials.append(TrialRecord("p", {"x": 9}, {"acc": 0.99, "size": 1}, "pruned"))
    results = Results("mo", ["acc", "size"], ["max", "min"], trials, "/nonexistent")
    ax = plots.pareto_figure(results).axes[0]
    (dominated,) = ax.collections
    assert sorted(map(tuple, dominated.get_offsets())) == [(0.8, 15), (0.85, 30)]
    (front,) = ax.lines
    assert list(front.get_xdata()) == [0.9, 0.95, 0.97]  # a pruned trial is never on the front


def test_histories_come_from_the_run_directory_and_every_plot_is_written(tmp_path):
    """Ray's result files as the built-in task writes them (several epochs per result, under
    hpo_history), read lazily by Results.step_histories."""
    results = fake_search(16)
    for t in results.trials:
        steps = results.histories.get(t.trial_id, [])
        if not steps:
            continue
        d = tmp_path / f"train_{t.trial_id}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(t.config))
        lines, sent = [], 0
        for k in [s.step for s in steps if s.step in RUNGS] + [steps[-1].step]:
            if k <= sent:
                continue
            epochs = [{"hpo_step": s.step, "hpo_time": s.time, **s.metrics} for s in steps if sent < s.step <= k]
            lines.append({**epochs[-1], "hpo_history": epochs[:-1], "trial_id": t.trial_id,
                          "training_iteration": len(lines) + 1})
            sent = k
        (d / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    on_disk = Results(results.name, results.metrics, results.modes, results.trials, str(tmp_path))
    assert on_disk.histories is None
    read = on_disk.step_histories()
    assert read.keys() == results.histories.keys()
    for tid, steps in results.histories.items():
        assert [s.step for s in read[tid]] == [s.step for s in steps]
        assert [s.time for s in read[tid]] == [s.time for s in steps]
        assert [s.metrics["val_accuracy"] for s in read[tid]] == [s.metrics["val_accuracy"] for s in steps]
    written = plots.all_plots(on_disk, tmp_path)
    assert [p.name for p in written] == ["optimization_history.png", "learning_curves.png",
                                         "parallel_coordinates.png", "param_importances.png"]
    assert all(p.stat().st_size > 5_000 for p in written)


@pytest.mark.slow
def test_quickstart_search_logs_every_picture_and_its_history_shows_every_trial(tmp_path, ray_address):
    from matplotlib.image import imread
    from mlflow.tracking import MlflowClient

    from hpo.rundir import saved_records
    from tests.conftest import ROOT, hpo_cli

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = hpo_cli("run", str(ROOT / "examples" / "quickstart.yaml"), "--json", "--address", ray_address,
                   "--tracking-uri", db, "--set", "num_samples=12", "--set", "task.epochs=6",
                   "--set", "task.test_best=false", cwd=tmp_path)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 12 and summary["num_pruned"] >= 1
    client = MlflowClient(db)
    logged = {a.path for a in client.list_artifacts(summary["parent_run_id"])}
    pictures = {"optimization_history.png", "learning_curves.png", "parallel_coordinates.png",
                "param_importances.png"}
    assert pictures <= logged, proc.stderr[-3000:]
    # the same results, read back from the run directory, draw the picture that was logged
    run_dir = summary["storage_path"]
    results = Results("quickstart", ["val_accuracy"], ["max"],
                      [TrialRecord(**r) for r in saved_records(Path(run_dir))], run_dir)
    assert len(results.step_histories()) == 12
    fig = plots.history_figure(results)
    assert _points(fig.axes[0]) == _points(fig.axes[1]) == 12
    redrawn = plots.optimization_history(results, tmp_path / "again.png")
    artifact = client.download_artifacts(summary["parent_run_id"], "optimization_history.png", str(tmp_path))
    assert (imread(artifact) == imread(redrawn)).all()
    lc = plots.learning_curves_figure(results)
    assert sorted({ln.get_xdata()[0] for ln in lc.axes[0].lines if ln.get_linestyle() == ":"}) == [2, 6]
