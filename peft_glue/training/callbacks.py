"""Callbacks: Lightning's (training throughput, a CSV logger that survives resumes) and Hydra's (a multirun
that lists its failed jobs and exits non-zero)."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback
from lightning_fabric.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from peft_glue.record import FAILED, RESULTS_FILE


class TrainThroughput(pl.Callback):
    """Seconds spent training (validation excluded) and training samples processed."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._fit_start = self._val_start = 0.0
        self._val_seconds = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch["labels"])

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._val_seconds += time.perf_counter() - self._val_start

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._fit_start - self._val_seconds
        # under DDP: the samples of all ranks (a sum over ranks; a no-op in a single process)
        self.samples = int(
            trainer.strategy.reduce(torch.tensor(self.samples, device=module.device), reduce_op="sum")
        )

    @property
    def samples_per_second(self) -> float:
        return round(self.samples / self.seconds, 2) if self.seconds else 0.0


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv (and warns on any non-empty folder, which a
    Hydra run folder always is). A resumed run appends to it instead, so the curves from before the
    interruption are kept; rows the killed attempt logged after its last checkpoint stay too, and readers
    keep the last row of each step (``peft_glue.results.runs.read_metrics``)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger that keeps the metrics of earlier attempts of the same run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class FailOnFailedJobs(Callback):
    """After a multirun, list the jobs that failed and leave with a non-zero status.

    Jobs catch their own errors (so one bad job never stops the sweep) and record them in results.json;
    this reads those files, so it works with any launcher.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = []
        for path in sorted(sweep_dir.glob(f"*/{RESULTS_FILE}")):
            record = json.loads(path.read_text())
            if record.get("status") == FAILED:
                failed.append(f"{path.parent.name} ({record.get('error', 'unknown error')})")
        if failed:
            print(f"error: {len(failed)} job(s) failed: {'; '.join(failed)}", file=sys.stderr, flush=True)
            raise SystemExit(1)
