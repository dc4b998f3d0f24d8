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


class TrainThroughput(pl.Callback):
    """Seconds spent training (validation excluded) and training samples processed; and the same after
    the first ``WARM_UP_STEPS`` steps (``steady_*``), which leaves out the one-off costs of a run's first
    steps (compiling, first allocations), so that runs of different lengths compare by their speed."""

    WARM_UP_STEPS = 10

    def __init__(self) -> None:
        self.samples = self.steps = 0
        self.seconds = 0.0
        self.steady_samples, self.steady_seconds = 0, 0.0
        self._samples_before_steady = 0
        self._fit_start = self._val_start = self._steady_start = 0.0
        self._val_seconds = self._steady_val_seconds = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch["labels"])
        self.steps += 1
        if self.steps == self.WARM_UP_STEPS:
            self._steady_start, self._steady_val_seconds = time.perf_counter(), self._val_seconds
            self._samples_before_steady = self.samples

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._val_seconds += time.perf_counter() - self._val_start

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        end = time.perf_counter()
        self.seconds = end - self._fit_start - self._val_seconds
        if self.steps > self.WARM_UP_STEPS:
            self.steady_seconds = end - self._steady_start - (self._val_seconds - self._steady_val_seconds)
            steady = self.samples - self._samples_before_steady
            self.steady_samples = self._all_ranks(trainer, module, steady)
        self.samples = self._all_ranks(trainer, module, self.samples)

    @staticmethod
    def _all_ranks(trainer: pl.Trainer, module: pl.LightningModule, count: int) -> int:
        """Under DDP: the count of all ranks (a sum over ranks; a no-op in a single process)."""
        return int(trainer.strategy.reduce(torch.tensor(count, device=module.device), reduce_op="sum"))

    @property
    def samples_per_second(self) -> float:
        return round(self.samples / self.seconds, 2) if self.seconds else 0.0

    @property
    def steady_samples_per_second(self) -> float | None:
        """Samples/s after the first ``WARM_UP_STEPS`` steps; None for a run no longer than those."""
        return round(self.steady_samples / self.steady_seconds, 2) if self.steady_seconds else None


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
