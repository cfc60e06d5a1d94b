"""Ray Tune internals hpo relies on (checked against Ray 2.60.0)."""

from __future__ import annotations

from typing import Any

__all__ = ["asha_bracket", "bracket_rungs", "kill_trial_actor", "reopen_search", "restored_run_config"]


def kill_trial_actor(trial: Any) -> bool:
    """Kill the Ray actor running ``trial`` (however stuck it is: also inside C code); Ray then
    sees the trial fail as if its worker died. Ray 2.60 keeps the handle on the private
    ``Trial.temporary_state.ray_actor``. Returns whether there was an actor to kill."""
    import ray

    actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
    if actor is None:
        return False
    ray.kill(actor, no_restart=True)
    return True


def restored_run_config(tuner: Any) -> Any:
    """The ``RunConfig`` a ``Tuner.restore`` unpickled from ``tuner.pkl`` (its callbacks are the
    search's own objects). Ray 2.60 keeps it on the private ``Tuner._local_tuner``."""
    return tuner._local_tuner.get_run_config()


# Ray's own search-algorithm state files and the key that says "no more trials" (Ray 2.60.0:
# SearchGenerator.get_state()["finished"], BasicVariantGenerator.get_state()["_finished"]).
_SEARCH_STATES = (("search_gen_state-*.json", "finished"), ("basic-variant-state-*.json", "_finished"))


def reopen_search(run_dir: Any) -> bool:
    """Let a search Ray stopped early suggest trials again on resume.

    When a search stops early Ray marks its search algorithm finished and saves it so; an
    interrupted search resumed later must go on with the trials it had not started. Returns
    whether a saved state was changed.
    """
    import glob
    import os
    import uuid

    import ray.cloudpickle as cloudpickle

    changed = False
    for pattern, key in _SEARCH_STATES:
        paths = glob.glob(os.path.join(str(run_dir), pattern))
        if not paths:
            continue
        newest = max(paths)  # Ray's own choice (_load_newest_checkpoint)
        with open(newest, "rb") as f:
            state = cloudpickle.load(f)
        if isinstance(state, dict) and state.get(key):
            state[key] = False
            tmp = os.path.join(str(run_dir), f".{uuid.uuid4()}-reopen.tmp")
            with open(tmp, "wb") as f:
                cloudpickle.dump(state, f)
            os.replace(tmp, newest)
            changed = True
    return changed


def asha_bracket(scheduler: Any, trial_id: str) -> Any:
    """The ASHA bracket a trial belongs to (Ray 2.60: ``AsyncHyperBandScheduler._trial_info``)."""
    return scheduler._trial_info.get(trial_id)


def bracket_rungs(bracket: Any) -> list[tuple[float, dict[str, Any]]]:
    """An ASHA bracket's rungs, highest milestone first, each with the trials recorded there
    (Ray 2.60: ``_Bracket._rungs``, ``[(milestone, {trial id: reward})]``)."""
    return list(bracket._rungs)
