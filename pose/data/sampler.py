"""Training order as a pure function of (seed, epoch): resumable, and the same whatever the world size.

An epoch is ``epoch_order(n, seed, epoch)`` (a permutation of the ``n`` training samples) cut into
``n // global_batch`` global batches (the tail that does not fill one is dropped; a split smaller than
one batch gives one short batch). Global batch ``b`` holds the same samples whether one worker or
eight train it: :func:`shard_sizes` splits it into consecutive per-rank slices, and
:func:`shard_loss_scale` weights each rank's mean loss so that the gradient DDP averages over the
ranks equals the gradient of the mean loss over the whole global batch, however unevenly it is split.

:class:`ShardedBatchSampler` yields, for one rank, the keys ``(row, epoch)`` of its slice of each
global batch from a given position on (``set_position(epoch, start_batch)``): a run resumed at
iteration ``it`` (epoch ``e``, batch ``b`` of it) sees exactly the batches an uninterrupted run would,
none replayed or skipped. :class:`pose.data.PackedDataset` draws a key's augmentation from
``(seed, epoch, row)``, so augmentation too is a function of the key, not of how many draws came
before.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["ShardedBatchSampler", "epoch_order", "shard_loss_scale", "shard_sizes"]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Permutation (int64, length ``n``) of the training samples for ``epoch``; depends only on its arguments."""
    if n < 0 or epoch < 0:
        raise ValueError(f"n and epoch must be >= 0, got n={n}, epoch={epoch}")
    return np.random.default_rng([int(seed) % 2**63, 0x5A3D, int(epoch)]).permutation(n).astype(np.int64)


def shard_sizes(global_batch: int, world: int) -> list[int]:
    """Samples of a global batch per rank: as even as possible, the first ``global_batch % world``
    ranks one more (``[6, 5, 5]`` for 16 over 3)."""
    if global_batch < 1 or world < 1:
        raise ValueError(f"global_batch and world must be >= 1, got {global_batch}, {world}")
    if world > global_batch:
        raise ValueError(f"{world} workers cannot share a global batch of {global_batch} samples "
                         "(each needs at least one): lower the workers or raise batch_size")
    base, extra = divmod(global_batch, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def shard_loss_scale(n_rank: int, n_batch: int, world: int) -> float:
    """Factor for rank's mean loss over ``n_rank`` of the batch's ``n_batch`` samples: DDP averages the
    ranks' gradients, so ``world * n_rank / n_batch`` makes that average the gradient of the batch mean
    (1.0 when the batch splits evenly)."""
    return world * n_rank / n_batch


class ShardedBatchSampler(torch.utils.data.Sampler):
    """One rank's batches of keys ``(row, epoch)`` (see the module docstring).

    Args:
        n: training samples (rows of the dataset).
        global_batch: samples per optimisation step, over all ranks.
        rank, world: this rank and the number of ranks.
        seed: seed of the order.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must lie in [0, {world}), got {rank}")
        self.n, self.global_batch, self.rank, self.world, self.seed = n, global_batch, rank, world, seed
        self.batches_per_epoch = max(1, n // global_batch)
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration over the sampler yields ``epoch``'s batches from ``start_batch`` on."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must lie in [0, {self.batches_per_epoch}], got {start_batch}")
        self.epoch, self.start = int(epoch), int(start_batch)

    def rank_slice(self, batch_len: int) -> tuple[int, int]:
        """``[lo, hi)`` of this rank inside a global batch of ``batch_len`` samples."""
        sizes = shard_sizes(batch_len, self.world)
        lo = sum(sizes[: self.rank])
        return lo, lo + sizes[self.rank]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = epoch_order(self.n, self.seed, self.epoch)
        size = min(self.global_batch, self.n)
        for b in range(self.start, self.batches_per_epoch):
            batch = order[b * size:(b + 1) * size]
            lo, hi = self.rank_slice(len(batch))
            yield [(int(i), self.epoch) for i in batch[lo:hi]]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start
