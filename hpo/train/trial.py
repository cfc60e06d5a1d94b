"""The built-in task as Ray Tune trials: :func:`train`, the function trainable around a
:class:`~hpo.train.loop.TaskRun` (one report per decision step, checkpoints, the scheduler asked
from the worker when it is), :func:`train_pack` (several configurations in one Ray trial,
:mod:`hpo.packing`), and :func:`keep_final_model` (a completed trial's final model, kept where
the search's end finds it)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import torch

from hpo.train.data import Dataset
from hpo.train.loop import TaskRun, device_for_trial
from hpo.wire import PRUNED_KEY, KeepModels, ReportPlan

__all__ = ["keep_final_model", "train", "train_pack"]


def train(config: dict[str, Any], data: Dataset | None = None, threads: int = 1,
          plan: ReportPlan | None = None, keep: KeepModels | None = None, ask: Any = None) -> None:
    """Ray Tune function trainable for the built-in task: reports metrics every epoch.

    Reports ``train_loss``, ``val_loss``, the task's validation metrics, ``epoch_time_s``,
    ``lr`` and the cost metrics ``param_count``, ``train_time_s`` and ``latency_us``. A NaN/inf
    loss ends the trial with ``diverged = 1``. Resumes from the trial's last checkpoint when
    there is one (a retry, a resumed search, HyperBand, or PBT continuing another trial's model
    with this trial's mutated learning rate and weight decay). ``plan`` says which epochs the
    scheduler decides at: the epochs in between travel with the next report. With ``keep``, a
    trial that completes its budget saves its final model first (:func:`keep_final_model`).
    With ``ask`` (:class:`hpo.decisions.AskScheduler`), the scheduler is asked from here.
    """
    from hpo.session import Reporter

    trial_id = None
    if keep is not None or ask is not None:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
    report = Reporter(plan)
    try:
        _train_one(config, data, threads, report, keep, trial_id, ask)
    except Exception:
        if ask is not None and trial_id:
            ask.failed(trial_id)  # as Ray Tune tells its scheduler of a failed trial
        raise
    finally:
        report.flush()  # the epochs since the last report, also when training raised


def train_pack(config: dict[str, Any], task: dict[str, Any], data: Dataset | None = None, threads: int = 1,
               plan: ReportPlan | None = None, keep: KeepModels | None = None, ask: Any = None) -> None:
    """A packed Ray trial (:mod:`hpo.packing`): its trials one after another, their steps tagged
    with their own ids. A trial that raises is reported as failed and the next one starts; one
    the scheduler stops (``ask``: :mod:`hpo.decisions`) ends there and the next one starts."""
    from hpo.session import Reporter
    from hpo.wire import DONE_KEY, PACK_KEY

    done = set(config.get(DONE_KEY, ()))  # a retried pack skips the trials already on record
    todo = [(sid, sub) for sid, sub in config[PACK_KEY] if sid not in done]
    report = Reporter(plan)
    try:
        for i, (sid, sub) in enumerate(todo):
            report.begin(sid, final=i == len(todo) - 1)
            try:
                _train_one({**task, **sub}, data, threads, report, keep, sid, ask)
            except Exception as exc:  # noqa: BLE001  (one configuration's failure is its own)
                if ask is not None:
                    ask.failed(sid)
                report.fail(f"{type(exc).__name__}: {exc}"[:500])
    finally:
        report.flush()


def keep_final_model(run: TaskRun, run_dir: str, trial_id: str, metrics: dict[str, Any]) -> bool:
    """Save a trial's final model where the search's end finds it (``trial_models/<trial id>.pt``,
    :func:`hpo.train.model_file.trial_model_files`), with the step, the metrics it reports there
    and its scores on the test part (``<trial id>.json``, written last): the best trial's model is
    then loaded, not trained again. Each file is written to a temporary name and renamed into
    place. A write that fails (a full or read-only disk) is logged and the trial goes on: the
    search's end retrains that trial if it is the best. Returns whether both files were written."""
    from hpo.train.model_file import model_payload, trial_model_files

    if len(run.trainers) != 1:  # cross-validation: the best configuration is refit on all rows instead
        return False
    model_path, scores_path = trial_model_files(run_dir, trial_id)
    tmp = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (model_path, scores_path)]
    try:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        test = run.trainers[0].evaluate_test()
        torch.save(model_payload(run), tmp[0])
        os.replace(tmp[0], model_path)
        record = {"trial_id": trial_id, "step": run.epoch,
                  "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                  "test_metrics": {f"test_{k}": v for k, v in test.items()}}
        tmp[1].write_text(json.dumps(record))
        os.replace(tmp[1], scores_path)
        return True
    except OSError as exc:
        for p in tmp:
            p.unlink(missing_ok=True)
        logging.getLogger("hpo").warning("hpo: trial %s: its final model was not saved in %s (%s); if it is the "
                                         "best, the search's end trains it again", trial_id, model_path.parent, exc)
        return False


def _train_one(config: dict[str, Any], data: Dataset | None, threads: int, report: Any,
               keep: KeepModels | None = None, trial_id: str | None = None, ask: Any = None) -> TaskRun:
    from ray import tune

    from hpo.train.model_file import load_payload

    run = TaskRun(config, data, threads, device_for_trial())
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            run.load_state_dict(load_payload(os.path.join(d, "state.pt"), run.device))
    freq = run.cfg.checkpoint_freq
    # Restored at its last epoch (PBT copied a trial's final checkpoint; a resumed trial whose last
    # result was lost): nothing is left to train, and the trial ends with that model, evaluated,
    # as its last result and kept model. Without this report its record would keep its result
    # from before the copy, and its kept model would not match it.
    restored_done = ckpt is not None and run.epoch >= run.cfg.epochs
    for metrics in [run.evaluated()] if restored_done else run.epochs():
        last = run.epoch >= run.cfg.epochs or "diverged" in metrics or "early_stopped" in metrics
        pruned = False
        answer = ask(trial_id, run.epoch, metrics, last) if ask is not None and trial_id else None
        if answer is not None:  # the scheduler, asked from here (hpo.decisions)
            stop, marks = answer
            metrics = {**metrics, **marks}
            pruned = PRUNED_KEY in marks
            last = last or stop
        if keep is not None and trial_id and "diverged" not in metrics and not pruned \
                and (last or run.epoch == keep.max_t):
            # Before the report: a scheduler may stop the trial's worker once it has its last result.
            keep_final_model(run, keep.run_dir, trial_id, metrics)
        if freq and (run.epoch % freq == 0 or last) and "diverged" not in metrics:
            with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
                torch.save(run.state_dict(), os.path.join(tmp, "state.pt"))
                report(run.epoch, metrics, checkpoint=tune.Checkpoint.from_directory(tmp), last=last)
        else:
            report(run.epoch, metrics, last=last)
        if last:
            break  # stopped by the scheduler before its budget
    return run
