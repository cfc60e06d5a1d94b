"""The results of a search: every trial, the best one, and the Pareto front."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo._trials import error_text
from hpo.wire import GPU_KEY, NODE_KEY, STEP_KEY, TIME_KEY, result_steps, trial_metrics

__all__ = ["Results", "Step", "TrialRecord", "steps_of"]


@dataclass
class TrialRecord:
    """One trial: its config, last reported metrics and how it ended."""

    trial_id: str
    config: dict[str, Any]
    metrics: dict[str, float]
    status: str  # completed | pruned | cut | errored | diverged (hpo.strategies.STATUSES)
    steps: int = 0
    error: str | None = None
    pruned_at: int | None = None
    node: str | None = None
    checkpoint: str | None = None  # the trial's latest checkpoint directory, if it kept one
    rung: int | None = None  # highest ASHA rung reached (0 = the first), None without ASHA
    rung_epoch: int | None = None  # that rung's epoch
    gpu: str | None = None  # the GPU(s) the trial ran on ("none" on CPU)
    cut_at: int | None = None  # cut by the search (not a scheduler) after this step
    cut_reason: str | None = None  # why: time budget, epoch budget, SIGINT, SIGTERM, metric check
    retries: int = 0  # times Ray restarted the trial after its run failed (a lost node, a crash; max_failures)


@dataclass(frozen=True)
class Step:
    """One step (epoch) a trial reported: its number, its metrics and when it was reported
    (seconds since the Unix epoch; None when the result carries no time)."""

    step: int
    metrics: dict[str, float]
    time: float | None = None


def steps_of(results: list[dict[str, Any]]) -> list[Step]:
    """A trial's steps, in step order, from its Ray results in the order they came (each result
    may carry several steps, see :func:`hpo.wire.result_steps`). A step reported twice (a trial
    restarted from an earlier checkpoint) keeps its latest values.

    Example:
        >>> [(s.step, s.metrics) for s in steps_of([{"hpo_step": 2, "loss": 0.5, "hpo_history": [
        ...     {"hpo_step": 1, "loss": 0.9}]}])]
        [(1, {'loss': 0.9}), (2, {'loss': 0.5})]
    """
    by_step: dict[int, Step] = {}
    for result in results:
        for step, entry in result_steps(result):
            when = entry.get(TIME_KEY, entry.get("timestamp"))
            by_step[step] = Step(step, trial_metrics(entry), float(when) if isinstance(when, (int, float)) else None)
    return [by_step[k] for k in sorted(by_step)]


@dataclass
class Results:
    """What :func:`hpo.run` returns.

    ``best_config``/``best_metric`` come from trials that ran their full budget; a trial the
    scheduler pruned early, or the search cut short (time or epoch budget, interrupt), never
    wins with its low-budget value. ``interrupted`` names the signal that stopped the search.
    """

    name: str
    metrics: list[str]
    modes: list[str]
    trials: list[TrialRecord]
    storage_path: str
    mlflow_experiment_id: str | None = None
    parent_run_id: str | None = None
    study: Any = field(default=None, repr=False)  # the Optuna study, for Optuna-based searchers
    best_model_info: dict[str, Any] | None = None  # built-in task: test metrics and where the model is
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the search
    stop_reason: str | None = None  # why the search stopped early: a budget, a signal, the metric check
    # trial id -> its steps; None: read from the run directory when first asked (step_histories)
    histories: dict[str, list[Step]] | None = field(default=None, repr=False, compare=False)

    @property
    def test_metrics(self) -> dict[str, float] | None:
        """The best trial's metrics on the held-out test part (built-in task), measured once at the end."""
        return (self.best_model_info or {}).get("test_metrics")

    def best_model(self) -> Any:
        """The best trial's model as an ``nn.Module`` taking raw features (built-in task).

        Example:
            >>> results = hpo.run(load_experiment("examples/quickstart.yaml"))  # doctest: +SKIP
            >>> results.best_model()(torch.tensor(x_raw, dtype=torch.float32)).argmax(1)  # doctest: +SKIP
        """
        if not self.best_model_info:
            raise ValueError("no best model was kept: the search used its own trainable, set task.test_best "
                             "false, or no trial completed")
        from hpo.train.model_file import load_model

        return load_model(self.best_model_info["path"])

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_trials(cls, trials: list[Any], name: str, metrics: list[str], modes: list[str], outcomes: Any,
                    storage_path: str, **kw: Any) -> Results:
        """Build from Ray Tune ``Trial`` objects (as a callback's ``on_experiment_end`` sees them), with
        the search's :class:`~hpo.strategies.TrialOutcomes` deciding each one's terminal state."""
        records = []
        rungs = outcomes.rungs()
        for tr in trials:
            last = tr.last_result or {}
            m = trial_metrics(last)
            tid = tr.trial_id
            errored = tr.status == "ERROR"
            status = outcomes.status_of(tid, errored=errored, last=last, metrics=metrics)
            cut = outcomes.cut_of(tid)
            records.append(TrialRecord(
                trial_id=tid, config=dict(tr.config or {}), metrics=m, status=status,
                steps=int(last.get(STEP_KEY, last.get("training_iteration", 0))),
                error=error_text(tr) if errored else None, pruned_at=outcomes.pruned_at(tid),
                node=last.get(NODE_KEY) or last.get("node_ip"),
                checkpoint=getattr(getattr(tr, "checkpoint", None), "path", None),
                rung=rungs.get(tid, (None, None))[0], rung_epoch=rungs.get(tid, (None, None))[1],
                gpu=last.get(GPU_KEY), cut_at=cut[0] if cut else None, cut_reason=cut[1] if cut else None,
                retries=max(int(getattr(tr, "num_failures", 0) or 0) - errored, 0),
            ))
        records.sort(key=lambda t: t.trial_id)
        return cls(name, metrics, modes, records, storage_path, **kw)

    # -- queries ----------------------------------------------------------------------------

    def step_histories(self) -> dict[str, list[Step]]:
        """trial id -> every step the trial reported, in step order (the per-epoch curves the plots
        draw). Given as ``histories``, or read once from Ray's result files in the run directory
        (``storage_path``); a trial that never reported, or whose files are gone, is absent.

        Example:
            >>> r = Results("s", ["loss"], ["min"], [], "/nonexistent")
            >>> r.step_histories()
            {}
        """
        if self.histories is None:
            from hpo.rundir import trial_histories

            self.histories = {tid: steps_of(results)
                              for tid, (_, results) in trial_histories(Path(self.storage_path)).items()}
        return self.histories

    @property
    def metric(self) -> str:
        return self.metrics[0]

    def _finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "completed" and all(
            k in t.metrics and math.isfinite(t.metrics[k]) for k in self.metrics)]

    @property
    def best_trial(self) -> TrialRecord | None:
        """The best completed trial on the first metric (None if no trial completed)."""
        done = self._finished()
        if not done:
            return None
        sign = 1 if self.modes[0] == "max" else -1
        return max(done, key=lambda t: sign * t.metrics[self.metric])

    @property
    def best_config(self) -> dict[str, Any] | None:
        best = self.best_trial
        return dict(best.config) if best else None

    @property
    def best_metric(self) -> float | None:
        best = self.best_trial
        return best.metrics[self.metric] if best else None

    def pareto_front(self) -> list[TrialRecord]:
        """Completed trials no other completed trial dominates on every metric."""
        signs = [1 if m == "max" else -1 for m in self.modes]
        done = self._finished()
        pts = [[s * t.metrics[k] for s, k in zip(signs, self.metrics)] for t in done]

        def dominated(i: int) -> bool:
            return any(all(a >= b for a, b in zip(pts[j], pts[i])) and pts[j] != pts[i] for j in range(len(pts)))

        return [t for i, t in enumerate(done) if not dominated(i)]

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    @property
    def nodes(self) -> list[str]:
        """Distinct Ray nodes that ran trials."""
        return sorted({t.node for t in self.trials if t.node})

    def table(self) -> Any:
        """A pandas DataFrame: one row per trial with status, config and last metrics."""
        import pandas as pd

        rows = [{"trial_id": t.trial_id, "status": t.status, "steps": t.steps,
                 **{f"config/{k}": v for k, v in t.config.items()}, **t.metrics} for t in self.trials]
        return pd.DataFrame(rows)

    def summary(self) -> dict[str, Any]:
        """The JSON object ``hpo run --json`` prints."""
        out: dict[str, Any] = {
            "name": self.name,
            "metric": self.metric if len(self.metrics) == 1 else self.metrics,
            "mode": self.modes[0] if len(self.modes) == 1 else self.modes,
            "best_config": self.best_config,
            "best_metric": self.best_metric,
            "num_trials": len(self.trials),
            "num_completed": self.count("completed"),
            "num_errored": self.count("errored"),
            "num_pruned": self.count("pruned"),
            "num_diverged": self.count("diverged"),
            "num_cut": self.count("cut"),
            "nodes": len(self.nodes),
            "mlflow_experiment_id": self.mlflow_experiment_id,
            "parent_run_id": self.parent_run_id,
            "storage_path": self.storage_path,
            "errors": {t.trial_id: t.error for t in self.trials if t.error},
            "stop_reason": self.stop_reason,
            "interrupted": self.interrupted,
        }
        if self.best_model_info:
            out["test_metrics"] = self.test_metrics
            out["best_model"] = {k: v for k, v in self.best_model_info.items() if k != "test_metrics"}
        if len(self.metrics) > 1:
            out["pareto_front"] = [{"config": t.config, **{k: t.metrics[k] for k in self.metrics}}
                                   for t in self.pareto_front()]
        return out
