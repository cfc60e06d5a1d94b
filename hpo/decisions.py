"""A stopping scheduler's decisions, asked from inside the trials' workers.

Packed trials (:mod:`hpo.packing`) carry several configurations in one Ray trial. Ray Tune's
scheduler sees only the Ray trial, so its STOP would stop the whole pack. A scheduler that
declares ``decides_in_worker`` (ASHA, median stopping) runs instead in the search's *decision
table*: one small Ray actor (no CPU of its own) holding the very scheduler object Ray Tune would
have held (called with no controller). Each
configuration's worker asks it at the scheduler's decision steps and at its last step, and the
table calls the scheduler exactly as Ray Tune's controller does for an unpacked trial
(``on_trial_add`` before the first question, ``on_trial_result`` at a decision step,
``on_trial_complete`` after a STOP or at the trial's last step). A configuration told STOP ends
there and its pack goes on with the next one. The answer travels in the step's result
(``hpo_pruned``, ``hpo_rung``); the driver's collector copies it into the search's
:class:`~hpo.strategies.TrialOutcomes` before the searcher or any callback sees the step, so the
configuration is pruned in Results, ``trials.json``, Optuna (PRUNED, with its intermediate
values) and MLflow exactly as an unpacked trial is.

Every question and its answer is appended to ``decisions.jsonl`` in the run directory, in the
order the table answered them. A table that starts over (``hpo resume``, or its actor restarted)
replays that file first and so goes on from exactly the state the last one had; a test replays
it through Ray's own scheduler and gets the same decisions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpo.wire import PRUNED_KEY, RUNG_KEY, STEP_KEY

__all__ = ["AskScheduler", "DecisionTable", "start_table"]


class _Trial:
    """What Ray's schedulers read of a trial: its id, config and status (one object per id, as
    schedulers that key their state by trial expect)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.config: dict[str, Any] = {}
        self.status = "RUNNING"
        self.stopped_at: int | None = None  # the step the scheduler stopped it at

    def __repr__(self) -> str:
        return f"_Trial({self.trial_id})"


class DecisionTable:
    """A scheduler driven by its trials' questions, as Ray Tune's controller would drive it.

    Args:
        scheduler: hpo's recording wrapper around the strategy's scheduler
            (:func:`hpo.strategies.wrap_scheduler`): it records stops before the budget as
            pruned and ASHA's rungs in its own ``outcomes``, read back for each answer.
        metric, mode: what Ray Tune would have told the scheduler.
        log: the decisions log to replay first, then append to (None: no log).

    Example:
        >>> from hpo.strategies import StrategySpec, TrialOutcomes, build_scheduler
        >>> spec = StrategySpec("random", "asha", scheduler_options={"grace_period": 1})
        >>> table = DecisionTable(build_scheduler(spec, None, 9, TrialOutcomes()), "loss", "min")
        >>> table.ask("a", 1, 0.5, decide=True, last=False)["stop"]
        False
        >>> table.ask("b", 1, 0.9, decide=True, last=False)  # worse than a's 0.5 at rung 1
        {'stop': True, 'pruned': 1, 'rung': [0, 1]}
    """

    def __init__(self, scheduler: Any, metric: str, mode: str, log: str | None = None) -> None:
        self.scheduler = scheduler
        self.metric = metric
        scheduler.set_search_properties(metric, mode)
        self.trials: dict[str, _Trial] = {}
        self._log = None
        if log is not None:
            path = Path(log)
            if path.exists():
                self._replay(path)
            self._log = open(path, "a", buffering=1)  # noqa: SIM115  (one line per answer, for as long as the table lives)

    def _replay(self, path: Path) -> None:
        with open(path) as f:
            for line in f:
                try:
                    q = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill: its worker never got the answer
                self._apply(q["trial"], q["step"], q.get("value"), q["decide"], q["last"], q.get("error", False))

    def ask(self, trial_id: str, step: int, value: float | None, *, decide: bool, last: bool,
            error: bool = False) -> dict[str, Any]:
        """One question: ``value`` of the metric at ``step``; ``decide``: a decision step; ``last``:
        the trial's last step (its budget, divergence or patience); ``error``: the trial raised.

        Returns ``stop`` (end the trial here), ``pruned`` (the step it was pruned at, if it was)
        and ``rung`` (``[index, step]`` of the highest rung it is recorded at, if any).
        """
        answer = self._apply(trial_id, step, value, decide, last, error)
        if self._log is not None:
            entry = {"trial": trial_id, "step": step, "value": value, "decide": decide, "last": last,
                     "stop": answer["stop"]}
            if error:
                entry["error"] = True
            self._log.write(json.dumps(entry) + "\n")
        return answer

    def _apply(self, trial_id: str, step: int, value: float | None, decide: bool, last: bool,
               error: bool) -> dict[str, Any]:
        trial = self.trials.get(trial_id)
        if trial is None:
            trial = self.trials[trial_id] = _Trial(trial_id)
            self.scheduler.on_trial_add(None, trial)
        stop = False
        if trial.status == "TERMINATED":
            # Asked again after it ended: its pack failed before the driver heard of the end, and the
            # retry runs it again. The scheduler has let it go (as Ray Tune never retries an ended
            # trial); the answer repeats the stop it was given.
            stop = trial.stopped_at is not None and step >= trial.stopped_at
        elif error:  # Ray Tune tells a scheduler only that the trial failed
            trial.status = "ERROR"
            self.scheduler.on_trial_error(None, trial)
        else:
            result: dict[str, Any] = {STEP_KEY: int(step)}
            if value is not None:
                result[self.metric] = value
            if decide:
                decision = self.scheduler.on_trial_result(None, trial, result)
                if decision not in ("CONTINUE", "STOP"):  # a plug-in that declared decides_in_worker wrongly
                    raise RuntimeError(f"scheduler {type(getattr(self.scheduler, 'inner', self.scheduler)).__name__} "
                                       f"declares decides_in_worker but decided {decision!r} for trial {trial_id} "
                                       f"at step {step}: only CONTINUE and STOP can be decided inside a packed trial")
                stop = decision == "STOP"
            if stop or last:
                trial.status, trial.stopped_at = "TERMINATED", step if stop else None
                self.scheduler.on_trial_complete(None, trial, result)
        outcomes = self.scheduler.outcomes
        rung = outcomes.rung_of(trial_id)
        return {"stop": stop, "pruned": outcomes.pruned_at(trial_id), "rung": list(rung) if rung else None}

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class AskScheduler:
    """What a trial's worker holds: the decision table's actor, the steps the scheduler decides
    at (``None``: every step) and the metric it reads. Picklable (Ray sends it to every trial).

    Calling it with a step's metrics returns ``None`` when nothing is decided at that step, else
    ``(stop, marks)``: whether the trial ends here and the keys to add to the step's result.
    """

    def __init__(self, actor: Any, steps: frozenset[int] | None, metric: str) -> None:
        self.actor = actor
        self.steps = steps
        self.metric = metric

    def __call__(self, trial_id: str, step: int, metrics: dict[str, Any], last: bool
                 ) -> tuple[bool, dict[str, Any]] | None:
        decide = self.steps is None or step in self.steps
        if not (decide or last):
            return None
        import ray

        value = metrics.get(self.metric)
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        answer = ray.get(self.actor.ask.remote(trial_id, step, value, decide=decide, last=last))
        marks: dict[str, Any] = {}
        if answer["pruned"] is not None:
            marks[PRUNED_KEY] = int(answer["pruned"])
        if answer["rung"] is not None:
            marks[RUNG_KEY] = answer["rung"]
        return bool(answer["stop"]), marks

    def close(self) -> None:
        """End the table's actor (the search is over; on a joined cluster it would outlive it).
        Its log is complete: every answer was written before it was returned."""
        import ray

        if self.actor is None:
            return
        actor, self.actor = self.actor, None
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001  (Ray already shut down: the actor went with it)
            pass

    def failed(self, trial_id: str) -> None:
        """The trial raised: the scheduler is told, as Ray Tune tells it of a failed trial. Best
        effort: the trial's own failure is what its worker reports, whatever happens here."""
        import logging

        import ray

        try:
            ray.get(self.actor.ask.remote(trial_id, 0, None, decide=False, last=False, error=True))
        except Exception as exc:  # noqa: BLE001
            logging.getLogger("hpo").warning("hpo: trial %s: its failure was not told to the scheduler (%s)",
                                             trial_id, exc)


def start_table(scheduler: Any, metric: str, mode: str, log: str, steps: frozenset[int] | None,
                name: str | None = None) -> AskScheduler:
    """Start the search's decision table (a Ray actor on the driver's node, where ``log`` is, named
    ``name`` in Ray's ``hpo`` namespace) and return what the trials ask it through. Call after
    ``ray.init``; end it with :meth:`AskScheduler.close` (it would outlive the search on a joined
    cluster).

    A restarted actor (its process died) replays ``log`` and goes on; a question it was asked when
    it died is asked again.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor_cls = ray.remote(num_cpus=0, max_restarts=3, max_task_retries=3)(DecisionTable)
    actor = actor_cls.options(  # type: ignore[attr-defined]
        name=name, namespace="hpo" if name else None,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(scheduler, metric, mode, log)
    return AskScheduler(actor, steps, metric)
