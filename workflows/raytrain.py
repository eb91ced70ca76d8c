"""The one way the workflow scripts run a Ray Train job (``stage.py``, ``lift.py``).

:func:`run_train_job`: check that the job fits this machine (a private Ray cannot grow), start (or
join) Ray, optionally make the run's :class:`workflows.runs.RunBoard` (attempt count, stop requests)
and catch SIGTERM to this driver, build the ``TorchTrainer`` (DDP over gloo on CPU, NCCL on GPU; a
worker count or an elastic ``[min, max]``), fit, and turn a failure into one
:class:`workflows.common.UserError` line. What the job writes and how its outputs are published stay
with the caller.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflows.common import UserError, check_capacity, init_ray, stop_on_sigterm

__all__ = ["TrainJob", "run_train_job"]


@dataclass
class TrainJob:
    """What :func:`run_train_job` ran: Ray's result, and the signal that stopped it (or None)."""

    result: Any
    stopped_by: str | None


def run_train_job(
    train_func: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    *,
    what: str,
    storage_path: str,
    workers: int | list[int] = 1,
    cpus_per_worker: float = 1.0,
    use_gpu: bool = False,
    max_failures: int = 0,
    board: bool = False,
    on_failure: Callable[[], str] | None = None,
    name_prefix: str = "attempt",
) -> TrainJob:
    """Run ``train_func(config)`` on ``workers`` Ray Train workers until it returns.

    Args:
        what: how messages name the job ("stage d2_16", "lift supervised").
        storage_path: Ray's ``storage_path``; each call is a fresh Ray run (``<name_prefix>-<time>-<id>``) there.
        max_failures: worker-group restarts (``FailureConfig``); the train function resumes by itself.
        board: make a :class:`workflows.runs.RunBoard` (its name goes to ``config["board"]``) and, while
            fitting, turn SIGTERM to this driver into a stop request to the workers.
        on_failure: text appended to the one-line error of a failed job (where its checkpoints are).
    Raises:
        UserError: the job needs more CPUs/GPUs than this machine has (no ``RAY_ADDRESS``), or it failed.
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": float(cpus_per_worker), **({"GPU": 1.0} if use_gpu else {})}
    least = workers[0] if isinstance(workers, list) else int(workers)
    check_capacity({k: v * least for k, v in resources.items()}, f"{what} ({least} worker(s))")
    init_ray()
    actor = None
    if board:
        from workflows.runs import BOARD_NAMESPACE, RunBoard

        config["board"] = f"board-{uuid.uuid4().hex[:12]}"
        # held while the job runs: an actor nobody references is ended by Ray
        actor = ray.remote(num_cpus=0)(RunBoard).options(name=config["board"], namespace=BOARD_NAMESPACE).remote()
    trainer = TorchTrainer(
        train_func,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=tuple(workers) if isinstance(workers, list) else int(workers),
                                     use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=time.strftime(f"{name_prefix}-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
                             storage_path=storage_path, failure_config=FailureConfig(max_failures=max_failures)),
    )
    with stop_on_sigterm(actor, f"[{what}]") as stop:
        try:
            result = trainer.fit()
        except Exception as exc:  # noqa: BLE001 - Train V2 wraps worker errors; report them in one line
            msg = str(exc).strip().splitlines()
            hint = on_failure() if on_failure else "worker logs above"
            raise UserError(f"{what} failed during training: {msg[-1] if msg else type(exc).__name__} "
                            f"({hint})") from None
    if getattr(result, "error", None):
        raise UserError(f"{what} failed during training: {result.error}")
    return TrainJob(result=result, stopped_by=stop.signal)
