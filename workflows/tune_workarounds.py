"""Work-arounds that a Ray Tune sweep of Ray Train runs needs on Ray 2.60 and wandb 0.31.

``workflows/tune.py`` reads like Ray's own Tune example; what it needs beyond that lives here, one
section per behaviour worked around:

1. **Placement groups of stopped trials leak.** Train V2 runs a trial's workers in a placement group
   made by the trial's ``TrainController``. Tune stops a trial (ASHA, or ``max_t``) by terminating
   the trial actor, which kills the controller before it removes that group; Ray's detached
   ``PlacementGroupCleaner`` polls the State API, which needs the dashboard, so without one (a local
   ``ray.init(include_dashboard=False)``) every stopped trial keeps its worker CPUs and the next
   trial never starts ("worker group startup timed out"). Rank 0 of each trial registers its group
   with a :class:`PlacementGroupLedger` actor (:func:`register_placement_group`); the driver-side
   :func:`release_callback` removes the groups of finished trials once their actors are gone.
2. **A worker group that cannot start is retried forever.** Train V2's default
   ``controller_failure_limit=-1`` lets a trial whose CPUs never come free hold the sweep:
   :data:`START_RETRIES` bounds it, and :func:`stall_watchdog` (``--stall-timeout``) ends a sweep in
   which nothing happens with one line naming the unfinished trials and the cluster's free resources.
3. **wandb offline runs lose their history.** Ray ends a trial's logging actor with ``ray.kill`` as
   soon as ``run.finish()`` returns, which also kills wandb's ``wandb-core`` child; offline,
   ``finish()`` can return before that process has written the run's metrics.
   :func:`flushing_wandb_callback` waits for ``wandb.teardown()``, and tells every logging actor to
   finish when a sweep aborts (else Ray waits out ``upload_timeout`` for each).
4. **A restored sweep brings back the killed driver's callbacks.** ``Tuner.restore`` takes no run
   config and unpickles the old callbacks, whose actor handles and clocks belong to the dead
   driver: :func:`use_callbacks` gives the restored tuner this driver's.
"""

from __future__ import annotations

import os
import time
from typing import Any

from workflows.common import UserError

__all__ = ["LEDGER_NAMESPACE", "START_RETRIES", "WANDB_FLUSH_TIMEOUT_S", "PlacementGroupLedger", "SweepStalled",
           "find_cause", "flushing_wandb_callback", "register_placement_group", "release_callback",
           "stall_watchdog", "use_callbacks"]

LEDGER_NAMESPACE = "c2f-pose-tune"
START_RETRIES = 1  # worker-group start-up retries of a trial (each waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S)
WANDB_FLUSH_TIMEOUT_S = 120  # offline: how long the end of the sweep waits for a trial's wandb writer
_RELEASE_AFTER_S = 3.0  # after a trial completes: its actor (and so its controller) is gone by then
_WATCH_S = 60.0  # keep removing groups registered late by a dying controller for this long


# --------------------------------------------------------------------------------------------
# 1. placement groups of stopped trials
class PlacementGroupLedger:
    """Ray actor (num_cpus=0): placement-group ids (hex) registered per trial id."""

    def __init__(self) -> None:
        self._pgs: dict[str, list[str]] = {}

    def add(self, trial_id: str, pg_hex: str) -> None:
        self._pgs.setdefault(str(trial_id), []).append(pg_hex)

    def pop(self, trial_id: str) -> list[str]:
        return self._pgs.pop(str(trial_id), [])

    def pop_all(self) -> list[str]:
        out = [h for v in self._pgs.values() for h in v]
        self._pgs.clear()
        return out


def register_placement_group(ledger: str | None, trial_id: str | None) -> None:
    """In a trial's Ray Train worker: rank 0 registers the worker group's placement group with the
    ledger actor named ``ledger`` (bookkeeping only: a failure prints one line)."""
    import ray

    pg = ray.util.get_current_placement_group()
    if not ledger or pg is None or ray.train.get_context().get_world_rank() != 0:
        return
    try:
        actor = ray.get_actor(ledger, namespace=LEDGER_NAMESPACE)
        ray.get(actor.add.remote(trial_id, pg.id.hex()), timeout=30)
    except Exception as exc:  # noqa: BLE001 - bookkeeping only; Ray's own cleaner may still work
        print(f"[tune] could not register placement group: {exc}", flush=True)


def _remove_placement_groups(pg_hexes: list[str]) -> int:
    """Remove the listed placement groups that still exist; returns how many were removed."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    n = 0
    for h in pg_hexes:
        pg = PlacementGroup(PlacementGroupID(bytes.fromhex(h)))
        try:
            if placement_group_table(pg).get("state", "REMOVED") == "REMOVED":
                continue
            remove_placement_group(pg)
            n += 1
        except Exception:  # noqa: BLE001 - already gone / raced with Ray's own cleaner
            pass
    return n


def release_callback(ledger_name: str):
    """Driver-side Tune callback removing the Train placement groups of finished trials."""
    from ray.tune import Callback

    class _ReleaseTrainPlacementGroups(Callback):
        """Holds the ledger's name, not a handle: Tune pickles its callbacks with the sweep's state."""

        def __init__(self) -> None:
            self._done: dict[str, float] = {}  # trial id -> time it completed / errored
            self.removed = 0

        @staticmethod
        def _ledger():
            import ray

            return ray.get_actor(ledger_name, namespace=LEDGER_NAMESPACE)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._done[trial.trial_id] = time.monotonic()

        def on_trial_error(self, iteration, trials, trial, **info):
            self._done[trial.trial_id] = time.monotonic()

        def on_step_begin(self, iteration, trials, **info):
            import ray

            now = time.monotonic()
            for tid, t in list(self._done.items()):
                if now - t < _RELEASE_AFTER_S:
                    continue
                self.removed += _remove_placement_groups(ray.get(self._ledger().pop.remote(tid)))
                if now - t > _WATCH_S:
                    del self._done[tid]

        def on_experiment_end(self, trials, **info):
            import ray

            self.removed += _remove_placement_groups(ray.get(self._ledger().pop_all.remote()))

    return _ReleaseTrainPlacementGroups()


# --------------------------------------------------------------------------------------------
# 2. sweeps that stall
class SweepStalled(RuntimeError):
    """Raised by the stall watchdog: no trial event for ``--stall-timeout`` seconds."""


def find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of type ``kind`` in its ``__cause__``/``__context__`` chain
    (Tune wraps a callback's error)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def stall_watchdog(limit_s: float):
    """Driver-side Tune callback raising :class:`SweepStalled` when no trial has started, reported a
    result, completed or failed for ``limit_s`` seconds; the message names the unfinished trials and
    the free CPUs/GPUs and placement groups of the cluster (what a stuck trial usually waits for)."""
    from ray.tune import Callback

    class _StallWatchdog(Callback):
        def __init__(self) -> None:
            self._last = time.monotonic()

        def _event(self, *args, **kwargs) -> None:
            self._last = time.monotonic()

        on_trial_start = on_trial_result = on_trial_complete = on_trial_error = _event

        def on_step_begin(self, iteration, trials, **info):
            idle = time.monotonic() - self._last
            if idle < limit_s:
                return
            waiting = [f"{t.trial_id} {t.status}" for t in trials if t.status in ("RUNNING", "PENDING", "PAUSED")]
            raise SweepStalled(f"no trial started, reported or ended for {idle:.0f} s (--stall-timeout "
                               f"{limit_s:g}); unfinished: {', '.join(waiting) or 'none'}; {_cluster_state()}")

    return _StallWatchdog()


def _cluster_state() -> str:
    """One line: free/total CPUs (and GPUs), the placement groups by state, this machine's load."""
    import ray
    from ray.util.placement_group import placement_group_table

    try:
        free, total = ray.available_resources(), ray.cluster_resources()
        res = ", ".join(f"{k} {free.get(k, 0):g}/{total[k]:g} free" for k in ("CPU", "GPU") if k in total)
        states: dict[str, int] = {}
        for pg in placement_group_table().values():
            states[pg.get("state", "?")] = states.get(pg.get("state", "?"), 0) + 1
        groups = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
        load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
        return f"cluster: {res}; placement groups: {groups}{load}"
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return f"cluster state unavailable ({type(exc).__name__})"


# --------------------------------------------------------------------------------------------
# 3. wandb offline history
def flushing_wandb_callback(**kwargs: Any):
    """Ray's driver-side ``WandbLoggerCallback`` (same arguments) whose per-trial logging actor waits
    for wandb to write before Ray kills it."""
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class _FlushingWandbLoggingActor(_WandbLoggingActor):
        def run(self):
            super().run()  # logs the queued results, ends with wandb.finish()
            self._wandb.teardown()  # blocks until wandb-core has flushed and exited

    class _FlushingWandbLoggerCallback(WandbLoggerCallback):
        _logger_actor_cls = _FlushingWandbLoggingActor

        def on_experiment_end(self, trials, **info):
            # A trial ended without Tune's trial-end event (the sweep aborted) never tells its actor
            # to finish: tell every actor now (a second END after the one it already got is never read).
            for trial in list(self._trial_logging_actors):
                self._signal_logging_actor_stop(trial=trial)
            super().on_experiment_end(trials, **info)

    return _FlushingWandbLoggerCallback(**kwargs)


# --------------------------------------------------------------------------------------------
# 4. restored sweeps
def use_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Give a tuner made by ``Tuner.restore`` this driver's callbacks instead of the pickled ones."""
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None or not hasattr(internal, "get_run_config"):
        raise UserError("this Ray version restores Tune sweeps differently: start over with --fresh")
    internal.get_run_config().callbacks = callbacks
