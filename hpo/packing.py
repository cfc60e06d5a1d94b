"""Packing: several short trials run back to back inside one Ray Tune trial.

Every Ray Tune trial costs a round trip through the driver (result, searcher, scheduler,
callbacks, actor reset, next call): ~30 ms on this project's 2-core benchmark machine, a third
of a 0.1-second trial. A packed Ray trial carries several configurations; the built-in task
trains them one after another in the same worker and sends their epochs in as few reports as
the report plan allows. Each configuration stays a trial of its own everywhere hpo shows
trials (searcher, progress, MLflow child run, results, epoch budget), with its own id
``<ray trial id>.<k>``.

Packing needs a scheduler that makes no decisions inside a Ray trial (FIFO: a STOP would stop
the whole pack), or one the packed trials ask themselves from their worker (ASHA, median
stopping: :mod:`hpo.decisions`), a configuration it stops ending there. With ``pack: auto`` (the default)
the pack size follows the trials' observed length (a pack lasts about ``target_s``), starts at
1 (nothing changes for long trials) and shrinks towards the end of the search so that no worker
is left idle while another finishes a long pack.
"""

from __future__ import annotations

import os
import pickle
import statistics
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher

from hpo.wire import (
    DONE_KEY,
    END_KEY,
    ERROR_KEY,
    GPU_KEY,
    HISTORY_KEY,
    NODE_KEY,
    PACK_KEY,
    STARTED_KEY,
    TIME_KEY,
    is_packed,
    split_result,
)

__all__ = ["PackingSearcher", "SubTrial", "Unpacker"]

AUTO_TARGET_S = 1.0  # an automatic pack lasts about this long
AUTO_MAX = 8  # and holds at most this many trials (model-based searchers wait for their results)


# -- the searcher ----------------------------------------------------------------------------------


class PackingSearcher(Searcher):
    """Wraps a searcher: asks it for up to ``size`` configurations per Ray trial.

    The wrapped searcher sees each configuration as a trial of its own (id ``<ray id>.<k>``),
    told as it ends, not when its pack ends. A pack of one is an ordinary Ray trial.

    Args:
        inner: the searcher that suggests configurations.
        num_samples: configurations in the whole search (None: until the searcher finishes).
        size: configurations per Ray trial, or ``"auto"``.
        target_s: ``auto``: how long a pack should last.
        max_size: ``auto``: the most configurations in one pack.
        adaptive: the searcher learns from results (TPE, GP, ...): ``auto`` then keeps at least
            8 rounds of packs per worker, so its suggestions still follow earlier results.
    """

    def __init__(self, inner: Any, num_samples: int | None, size: int | str = "auto",
                 target_s: float = AUTO_TARGET_S, max_size: int = AUTO_MAX, adaptive: bool = True) -> None:
        super().__init__(metric=getattr(inner, "metric", None), mode=getattr(inner, "mode", None))
        self.inner = inner
        self.num_samples = num_samples
        self.size = size
        self.target_s = target_s
        self.max_size = max_size
        self.adaptive = adaptive
        self.suggested = 0
        self.finished = False
        self.packs: dict[str, list[str]] = {}  # packed Ray trial id -> its trial ids
        self.ended: set[str] = set()
        self.last: dict[str, dict[str, Any]] = {}  # trial id -> its latest result
        self.durations: deque[float] = deque(maxlen=64)  # recent trials' own time, seconds
        self.live: set[str] = set()  # Ray trials suggested and not yet complete
        self.peak_live = 1

    @property
    def study(self) -> Any:
        """The wrapped searcher's Optuna study, if it has one."""
        return getattr(self.inner, "study", None)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, config, **spec))

    def pack_size(self) -> int:
        """How many configurations the next Ray trial gets."""
        remaining = None if self.num_samples is None else self.num_samples - self.suggested
        if self.size != "auto":
            k = int(self.size)
        elif len(self.durations) < 2:
            k = 1  # nothing measured yet: long trials never pack
        else:
            typical = statistics.median(self.durations)
            k = max(1, min(self.max_size, int(self.target_s / max(typical, 1e-3))))
            if remaining is not None:
                # Towards the end, smaller packs keep every worker busy until the last; a
                # learning searcher keeps getting results between its suggestions.
                k = min(k, max(1, remaining // ((8 if self.adaptive else 2) * self.peak_live)))
        return max(1, min(k, remaining)) if remaining is not None else max(1, k)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.finished or (self.num_samples is not None and self.suggested >= self.num_samples):
            return Searcher.FINISHED  # type: ignore[return-value]  # Ray's sentinel string
        k = self.pack_size()
        if k == 1:
            config = self.inner.suggest(trial_id)
            if config == Searcher.FINISHED:
                self.finished = True
            elif config is not None:
                self._started(trial_id)
            return config
        subs: list[list[Any]] = []
        for i in range(k):
            sid = f"{trial_id}.{i:02d}"
            config = self.inner.suggest(sid)
            if config is None or config == Searcher.FINISHED:
                self.finished = config == Searcher.FINISHED
                break
            subs.append([sid, config])
        if not subs:
            return Searcher.FINISHED if self.finished else None  # type: ignore[return-value]
        self.packs[trial_id] = [sid for sid, _ in subs]
        self.suggested += len(subs) - 1
        self._started(trial_id)
        return {PACK_KEY: subs, DONE_KEY: {}}

    def _started(self, trial_id: str) -> None:
        self.suggested += 1
        self.live.add(trial_id)
        self.peak_live = max(self.peak_live, len(self.live))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.packs:
            self.inner.on_trial_result(trial_id, result)
            return
        for sid, sub in split_result(result):
            self._sub_result(sid, sub)

    def _sub_result(self, sid: str, sub: dict[str, Any]) -> None:
        if sid in self.ended:
            return
        if sub.get(END_KEY):
            self.ended.add(sid)
            self.last.pop(sid, None)
            error = ERROR_KEY in sub
            if not error and STARTED_KEY in sub and TIME_KEY in sub:
                self.durations.append(float(sub[TIME_KEY]) - float(sub[STARTED_KEY]))
            self.inner.on_trial_complete(sid, result=None if error else sub, error=error)
        else:
            self.last[sid] = sub
            self.inner.on_trial_result(sid, sub)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.live.discard(trial_id)
        subs = self.packs.pop(trial_id, None)
        if subs is None:
            if result and not error and STARTED_KEY in result and TIME_KEY in result:
                self.durations.append(float(result[TIME_KEY]) - float(result[STARTED_KEY]))
            self.inner.on_trial_complete(trial_id, result=result, error=error)
            return
        if result and not error:
            for sid, sub in split_result(result):
                self._sub_result(sid, sub)
        for sid in subs:  # cut by the search (told as such by hpo's outcomes) or failed before they ended
            if sid not in self.ended:
                self.ended.add(sid)
                last = self.last.pop(sid, None)
                self.inner.on_trial_complete(sid, result=None if error else last, error=error)

    def save(self, checkpoint_path: str) -> None:
        # Ray keeps exactly the one file it names: the wrapped searcher's state goes inside it.
        with tempfile.TemporaryDirectory(prefix="hpo-searcher-") as tmp:
            self.inner.save(os.path.join(tmp, "inner.pkl"))
            inner = Path(tmp, "inner.pkl").read_bytes()
        state = {k: v for k, v in self.__dict__.items() if k != "inner"}
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"state": state, "inner": inner}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        with tempfile.TemporaryDirectory(prefix="hpo-searcher-") as tmp:
            Path(tmp, "inner.pkl").write_bytes(saved["inner"])
            self.inner.restore(os.path.join(tmp, "inner.pkl"))
        self.__dict__.update(saved["state"])


# -- the callbacks ---------------------------------------------------------------------------------


class SubTrial:
    """One trial of a packed Ray trial, as hpo's callbacks and results see it (the attributes
    of Ray's ``Trial`` they read)."""

    def __init__(self, trial_id: str, config: dict[str, Any], parent: Any) -> None:
        self.trial_id = trial_id
        self.config = config
        self.parent = parent
        self.status = "PENDING"
        self.last_result: dict[str, Any] = {}
        self.error_msg: str | None = None
        self.checkpoint = None  # packed trials keep no checkpoints

    @property
    def error_file(self) -> Any:
        return None if self.error_msg else getattr(self.parent, "error_file", None)

    def __repr__(self) -> str:
        return f"SubTrial({self.trial_id}, {self.status})"


class Unpacker(Callback):
    """Passes Ray Tune's events to hpo's callbacks, a packed trial's as events of the trials it
    carries: each starts with its first step, reports its own steps, completes (or errors) at
    its last. Unpacked trials pass through unchanged."""

    def __init__(self, callbacks: list[Any]) -> None:
        self.callbacks = list(callbacks)
        self._subs: dict[str, list[SubTrial]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"callbacks": self.callbacks, "_subs": {}}

    def _of(self, trial: Any) -> list[SubTrial] | None:
        if not is_packed(trial.config):
            return None
        subs = self._subs.get(trial.trial_id)
        if subs is None:
            subs = self._subs[trial.trial_id] = [SubTrial(sid, cfg, trial) for sid, cfg in trial.config[PACK_KEY]]
            ended = trial.config.get(DONE_KEY) or {}
            for sub in subs:  # a resumed search: the trials that had ended, as they ended
                if sub.trial_id in ended:
                    record = ended[sub.trial_id]
                    sub.status, sub.last_result, sub.error_msg = record["status"], record["result"], record["error"]
        return subs

    @staticmethod
    def _ended(trial: Any, sub: SubTrial) -> None:
        """Keep how a trial ended in its pack's config: Ray saves it with the search, so a retry
        skips the trial and a resumed search still has its result."""
        result = dict(sub.last_result)  # with the steps sent along with it: a resume replays them
        trial.config.setdefault(DONE_KEY, {})[sub.trial_id] = {"status": sub.status, "result": result,
                                                               "error": sub.error_msg}
        # Ray caches a trial's saved JSON and rebuilds it only on its own changes: without this the
        # experiment state keeps the pack's config as it started, and a resume re-runs ended trials.
        invalidate = getattr(trial, "invalidate_json_state", None)  # ray.tune.experiment.Trial (2.60)
        if invalidate is not None:
            invalidate()

    def unended(self, trial: Any) -> list[str]:
        """The ids of a packed Ray trial's trials that have not ended (not started, or running)."""
        return [s.trial_id for s in self._of(trial) or [] if s.status in ("PENDING", "RUNNING")]

    def expand(self, trials: list[Any], started_only: bool = False) -> list[Any]:
        """Ray's trials with each packed one replaced by the trials it carries."""
        out: list[Any] = []
        for t in trials:
            subs = self._of(t)
            if subs is None:
                out.append(t)
            else:
                out.extend(s for s in subs if not started_only or s.status != "PENDING")
        return out

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, method)(*args, **kwargs)

    # Ray's hooks -----------------------------------------------------------------------------

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self._each("setup", stop=stop, num_samples=num_samples, total_num_samples=total_num_samples, **info)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._each("on_step_begin", iteration, self.expand(trials), **info)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._each("on_step_end", iteration, self.expand(trials), **info)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._of(trial) is None:  # a packed trial's trials start with their first step
            self._each("on_trial_start", iteration, trials, trial, **info)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        subs = self._of(trial)
        if subs is None:
            self._each("on_trial_result", iteration, trials, trial, result, **info)
            return
        by_id = {s.trial_id: s for s in subs}
        for sid, sent in split_result(result):
            sub = by_id.get(sid)
            if sub is None or sub.status in ("TERMINATED", "ERROR"):
                continue  # a retried pack re-sends a trial that had ended: it is on record already
            if sub.status == "PENDING":
                sub.status = "RUNNING"
                self._each("on_trial_start", iteration, trials, sub)
            error = sent.get(ERROR_KEY)
            sub_result: dict[str, Any] | None = sent
            if error is not None:  # the failure itself is no result; the epochs sent along with it are
                earlier: list[dict[str, Any]] = list(sent.get(HISTORY_KEY, []))
                extra = {k: sent[k] for k in (NODE_KEY, GPU_KEY, "trial_id") if k in sent}
                sub_result = {**earlier[-1], **extra, HISTORY_KEY: earlier[:-1]} if earlier else None
            if sub_result is not None:
                sub.last_result = sub_result
                self._each("on_trial_result", iteration, trials, sub, sub_result)
            if error is not None:
                self._error(iteration, trials, sub, str(error))
                self._ended(trial, sub)
            elif sub_result is not None and sub_result.get(END_KEY):
                sub.status = "TERMINATED"
                self._each("on_trial_complete", iteration, trials, sub)
                self._ended(trial, sub)

    def _error(self, iteration: int, trials: list, sub: SubTrial, message: str | None) -> None:
        if sub.status == "PENDING":
            self._each("on_trial_start", iteration, trials, sub)
        sub.status, sub.error_msg = "ERROR", message
        self._each("on_trial_error", iteration, trials, sub)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        subs = self._of(trial)
        if subs is None:
            self._each("on_trial_complete", iteration, trials, trial, **info)
            return
        for sub in subs:  # cut by the search (a budget, an interrupt) before they ended
            if sub.status == "PENDING":
                self._each("on_trial_start", iteration, trials, sub)
            if sub.status in ("PENDING", "RUNNING"):
                sub.status = "TERMINATED"
                self._each("on_trial_complete", iteration, trials, sub)
                self._ended(trial, sub)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        subs = self._of(trial)
        if subs is None:
            self._each("on_trial_error", iteration, trials, trial, **info)
            return
        from hpo._trials import error_text

        cause = error_text(trial)
        for sub in subs:
            if sub.status == "RUNNING":
                self._error(iteration, trials, sub, cause)
            elif sub.status == "PENDING":  # never ran: its pack's worker failed first
                self._error(iteration, trials, sub, f"not run: its packed Ray trial failed ({cause})")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        subs = self._of(trial)
        if subs is None:
            self._each("on_trial_recover", iteration, trials, trial, **info)
        for sub in subs or []:
            if sub.status == "RUNNING":
                sub.status = "PENDING"  # the retry runs it again from its start (steps on record are kept)

    def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._each("on_trial_save", iteration, trials, trial, **info)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._each("on_trial_restore", iteration, trials, trial, **info)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        self._each("on_checkpoint", iteration, trials, trial, checkpoint, **info)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._each("on_experiment_end", self.expand(trials, started_only=True), **info)

    def get_state(self) -> dict | None:
        return None

