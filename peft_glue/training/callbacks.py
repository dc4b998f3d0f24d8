"""Callbacks: Lightning's (training throughput) and Hydra's (a multirun that lists its failed jobs and exits
non-zero)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from peft_glue.record import FAILED, RESULTS_FILE, read_results


def wait_for_gpu() -> None:
    """Let a GPU finish its queued work, so that a clock read after it counts that work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TrainThroughput(pl.Callback):
    """Seconds spent training (validation excluded) and training samples processed, in all and per epoch:
    a first epoch carries one-off costs (compiling, first allocations) that later ones do not, so a later
    epoch's speed compares runs that paid different one-off costs."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self.epoch_samples: list[int] = []
        self.epoch_seconds: list[float] = []
        self._fit_start = self._val_start = self._epoch_start = 0.0
        self._val_seconds = self._val_seconds_at_epoch_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._open_epoch()  # a run resumed mid-epoch gets no on_train_epoch_start for that epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if len(self.epoch_samples) > len(self.epoch_seconds) and self.epoch_samples[-1] == 0:
            self.epoch_samples.pop()  # the epoch on_train_start opened: this hook opens it again
        self._open_epoch()

    def _open_epoch(self) -> None:
        self._epoch_start, self._val_seconds_at_epoch_start = time.perf_counter(), self._val_seconds
        self.epoch_samples.append(0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch["labels"])
        self.epoch_samples[-1] += len(batch["labels"])

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._val_seconds += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        wait_for_gpu()
        validation = self._val_seconds - self._val_seconds_at_epoch_start
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start - validation)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        wait_for_gpu()
        self.seconds = time.perf_counter() - self._fit_start - self._val_seconds
        # under DDP: the samples of all ranks (a sum over ranks; a no-op in a single process)
        counts = torch.tensor([self.samples, *self.epoch_samples], device=module.device)
        self.samples, *self.epoch_samples = trainer.strategy.reduce(counts, reduce_op="sum").tolist()

    @property
    def samples_per_second(self) -> float:
        return round(self.samples / self.seconds, 2) if self.seconds else 0.0

    @property
    def epoch_samples_per_second(self) -> list[float]:
        """Each finished epoch's samples/s (the first with the run's one-off costs)."""
        pairs = zip(self.epoch_samples, self.epoch_seconds, strict=False)  # an interrupted epoch: no time
        return [round(samples / seconds, 2) for samples, seconds in pairs if samples and seconds]


class FailOnFailedJobs(Callback):
    """After a multirun, list the jobs that failed and leave with a non-zero status.

    Jobs catch their own errors (so one bad job never stops the sweep) and record them in results.json;
    this reads those files, so it works with any launcher.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = []
        for path in sorted(sweep_dir.glob(f"*/{RESULTS_FILE}")):
            results = read_results(path)
            if results.status == FAILED:
                failed.append(f"{path.parent.name} ({results.error or 'unknown error'})")
        if failed:
            print(f"error: {len(failed)} job(s) failed: {'; '.join(failed)}", file=sys.stderr, flush=True)
            raise SystemExit(1)
