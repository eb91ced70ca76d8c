"""The one way the workflow scripts run a Ray Train job (``stage.py``, ``lift.py``, each trial of ``tune.py``).

:func:`run_train_job`: check that the job fits this machine (a private Ray cannot grow), start (or
join) Ray, optionally make the run's :class:`workflows.runs.RunBoard` (attempt count, stop requests)
and catch SIGTERM to this driver, build the ``TorchTrainer`` (DDP over gloo on CPU, NCCL on GPU; a
worker count or an elastic ``[min, max]``), fit, and turn a failure into one
:class:`workflows.common.UserError` line. What the job writes and how its outputs are published stay
with the caller.

Ray is imported where it is used: importing it installs its loggers and reads its environment
(``workflows/console.py`` sets both up first).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workflows.common import UserError, check_capacity, init_ray
from workflows.runs import BOARD_NAMESPACE, RunBoard, stop_on_sigterm

__all__ = ["TrainJob", "run_train_job", "start_board", "torch_trainer"]


@dataclass
class TrainJob:
    """What :func:`run_train_job` ran: Ray's result, and the signal that stopped it (or None)."""

    result: Any
    stopped_by: str | None


def start_board(config: dict[str, Any], prefix: str = "board") -> Any:
    """Start the run's :class:`workflows.runs.RunBoard` actor and put its name in ``config["board"]``
    (the workers find it there). Returns the handle: hold it while the job runs, as Ray ends an actor
    nobody references."""
    import ray

    config["board"] = f"{prefix}-{uuid.uuid4().hex[:12]}"
    return ray.remote(num_cpus=0)(RunBoard).options(name=config["board"], namespace=BOARD_NAMESPACE).remote()


def torch_trainer(
    train_func: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    *,
    storage_path: str,
    workers: int | list[int] = 1,
    resources: dict[str, float] | None = None,
    use_gpu: bool = False,
    max_failures: int = 0,
    name_prefix: str = "attempt",
    callbacks: Sequence[Any] = (),
    controller_failure_limit: int | None = None,
) -> Any:
    """The one ``TorchTrainer`` set-up of the workflows (stage, lift, each tune trial): DDP over gloo
    on CPU, NCCL on GPU; ``workers`` a count or an elastic ``[min, max]``; each fit a fresh Ray run
    (``<name_prefix>-<time>-<id>``) under ``storage_path``; ``max_failures`` worker-group restarts (the
    train function resumes by itself); ``controller_failure_limit`` bounds the retries of a worker
    group that cannot start (Ray's default retries for ever)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    failure = FailureConfig(max_failures=max_failures, **({"controller_failure_limit": controller_failure_limit}
                                                           if controller_failure_limit is not None else {}))
    return TorchTrainer(
        train_func,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=tuple(workers) if isinstance(workers, list) else int(workers),
                                     use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=time.strftime(f"{name_prefix}-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
                             storage_path=storage_path, failure_config=failure, callbacks=list(callbacks)),
    )


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
        storage_path: Ray's ``storage_path``; each call is a fresh Ray run there (:func:`torch_trainer`).
        max_failures: worker-group restarts (``FailureConfig``); the train function resumes by itself.
        board: start a :class:`workflows.runs.RunBoard` (:func:`start_board`) and, while fitting, turn
            SIGTERM to this driver into a stop request to the workers.
        on_failure: text appended to the one-line error of a failed job (where its checkpoints are).
    Raises:
        UserError: the job needs more CPUs/GPUs than this machine has (no ``RAY_ADDRESS``), or it failed.
    """
    resources = {"CPU": float(cpus_per_worker), **({"GPU": 1.0} if use_gpu else {})}
    least = workers[0] if isinstance(workers, list) else int(workers)
    check_capacity({k: v * least for k, v in resources.items()}, f"{what} ({least} worker(s))")
    init_ray()
    actor = start_board(config) if board else None
    trainer = torch_trainer(train_func, config, storage_path=storage_path, workers=workers, resources=resources,
                            use_gpu=use_gpu, max_failures=max_failures, name_prefix=name_prefix)
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
