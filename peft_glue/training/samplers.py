"""Batch samplers that know nothing of GLUE: length-grouped training batches, length-sorted evaluation
batches, and how DDP ranks share them (every example once, the same number of steps on every rank)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from peft_glue.errors import UserError


def deal_batches(batches: list[list[int]], num_replicas: int, rank: int) -> list[list[int]]:
    """This rank's share of ``batches`` (``batches[rank::num_replicas]``) under DDP.

    Every rank gets the same number of batches, because DDP steps all ranks in lockstep, and every example
    goes to exactly one rank, so an epoch (or an evaluation) covers the data once. When the count does not
    divide, the largest batches are halved (halves of a length-sorted batch stay length-homogeneous) rather
    than padded with repeated examples. The same ``batches`` on every rank give the same split.
    """
    if num_replicas == 1:
        return batches
    batches = list(batches)
    for _ in range(-len(batches) % num_replicas):
        biggest = max(range(len(batches)), key=lambda b: (len(batches[b]), b))  # the last of the largest
        if len(batches[biggest]) < 2:
            raise UserError(
                f"{sum(map(len, batches))} examples cannot be shared among {num_replicas} processes; "
                "use fewer trainer.devices"
            )
        half = (len(batches[biggest]) + 1) // 2
        batches[biggest : biggest + 1] = [batches[biggest][:half], batches[biggest][half:]]
    return batches[rank::num_replicas]


@dataclass(frozen=True)
class EpochPosition:
    """Where a checkpoint stopped inside an epoch: the batches each rank had done, and how many ranks."""

    epoch: int
    batches_done: int
    world_size: int = 1


class LengthGroupedSampler(Sampler[int]):
    """Indices ordered so that every run of ``batch_size`` holds examples of similar length.

    Shuffle all examples, cut them into buckets of ``bucket_batches`` batches, sort each bucket by length,
    cut it into batches and shuffle the batches. Every example comes exactly once per epoch; the order
    depends only on ``seed`` and the epoch (``set_epoch``, called by Lightning). The batch holding the
    longest example comes first, so an out-of-memory shows at step one, and the one short batch comes last,
    so a ``BatchSampler`` of the same ``batch_size`` cuts exactly these batches.

    Under DDP (``num_replicas`` > 1) every rank draws the same global batches and takes whole batches of
    them (``deal_batches``): each example once per epoch across ranks, the same number of steps on every
    rank, and the ``num_replicas`` longest batches first, one per rank. Use it through ``GroupedBatches``
    then: a halved batch is smaller than ``batch_size``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        bucket_batches: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_size = batch_size * bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.resume_at: EpochPosition | None = None  # set after a resume from a mid-epoch checkpoint

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The epoch's batches of all ranks, in step order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), self.bucket_size):
            bucket = sorted(
                order[start : start + self.bucket_size], key=self.lengths.__getitem__, reverse=True
            )
            batches += [bucket[i : i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
        short = [batches.pop()] if batches and len(batches[-1]) < self.batch_size else []
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        by_length = sorted(range(len(batches)), key=lambda b: -self.lengths[batches[b][0]])
        longest = set(by_length[: self.num_replicas])
        front = [batches[b] for b in by_length[: self.num_replicas]]
        return front + [batch for b, batch in enumerate(batches) if b not in longest] + short

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches of the epoch, from its start."""
        return deal_batches(self.batches(), self.num_replicas, self.rank)

    def iter_batches(self) -> Iterator[list[int]]:
        """A generator: the epoch is read at the first batch, after Lightning's ``set_epoch``."""
        batches = self.rank_batches()
        if self.resume_at is not None and self.resume_at.epoch == self.epoch:
            if self.resume_at.world_size != self.num_replicas:
                raise UserError(
                    f"the checkpoint stopped mid-epoch in a run of {self.resume_at.world_size} process(es); "
                    f"resume with as many (trainer.devices x trainer.num_nodes; now {self.num_replicas})"
                )
            batches = batches[self.resume_at.batches_done :]  # a resumed epoch goes on where it stopped
        self.resume_at = None
        yield from batches

    def __iter__(self) -> Iterator[int]:
        for batch in self.iter_batches():
            yield from batch

    def __len__(self) -> int:
        return sum(map(len, self.rank_batches())) if self.num_replicas > 1 else len(self.lengths)


class GroupedBatches(Sampler[list[int]]):
    """A ``LengthGroupedSampler``'s batches as a DataLoader ``batch_sampler``, exactly as it cuts them.
    Lightning finds it through ``.sampler`` to call ``set_epoch``."""

    def __init__(self, sampler: LengthGroupedSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.sampler.iter_batches()

    def __len__(self) -> int:
        return len(self.sampler.rank_batches())


class SortedBatchSampler(Sampler[list[int]]):
    """Evaluation batches of similar length (longest first): little padding, and metrics do not care about
    order; predictions carry their ``idx`` and are put back in the original order when written.

    Under DDP each rank evaluates its share (``deal_batches``): no example twice, so the metrics that
    torchmetrics gathers from all ranks are those of one process over the whole split.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0):
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.batches = deal_batches(batches, num_replicas, rank)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
