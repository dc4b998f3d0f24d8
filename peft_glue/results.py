"""What a run leaves in its folder: results.json (written atomically) and the GLUE submission file."""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from transformers import PreTrainedTokenizerBase

from peft_glue.methods import Method

RESULTS_FILE = "results.json"


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file, then rename: a kill never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp makes it private; results are for everyone who can read the run folder
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_folder_atomic(folder: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a temporary sibling folder, then swap it in: never a half-written export."""
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    tmp.chmod(0o755)
    try:
        write(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def export_trained(
    method: Method, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, run_dir: Path, merge: bool
) -> dict[str, str]:
    """The trained weights in the method's own format (and, with merge, as a plain transformers model)."""

    def save_merged(folder: Path) -> None:
        method.merged(model).save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    exports = {
        "weights": str(write_folder_atomic(run_dir / method.export_dir, lambda f: method.save(model, f)))
    }
    if merge:
        exports["merged"] = str(write_folder_atomic(run_dir / "merged", save_merged))
    return exports


def read_results(run_dir: Path) -> dict:
    """A run folder's results.json, or {} when it has none."""
    path = Path(run_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def launched_as_rank_zero() -> bool:
    """Whether this process is (or will be) DDP's global rank 0, known before the Trainer exists: the
    processes that Lightning's ``ddp``, torchrun or SLURM start for the other ranks and nodes say otherwise
    in their environment."""
    return all(
        os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    )


class RunRecord(dict):
    """The content of results.json; ``save`` rewrites it, so a crash still leaves the latest state.

    Under DDP only global rank 0 writes (``writes``); the other ranks keep their record in memory.
    """

    def __init__(self, run_dir: Path, **fields: Any):
        super().__init__(status="running", **fields)
        self.path = Path(run_dir) / RESULTS_FILE
        self.writes = launched_as_rank_zero()

    def save(self, **updates: Any) -> None:
        self.update(updates)
        if self.writes:
            write_atomic(self.path, json.dumps(self, indent=2, default=str) + "\n")


def gather_predictions(
    predictions: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Under DDP each rank predicted its own share of the test batches: collect all shares on every rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return predictions
    local = [(idx.cpu(), pred.cpu()) for idx, pred in predictions]
    shares: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(shares, local)
    return [batch for share in shares for batch in share]


def write_submission(path: Path, predictions: list[tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """GLUE leaderboard format: `index<TAB>prediction`, one line per test example, in index order."""
    indices = torch.cat([idx for idx, _ in predictions]).tolist()
    labels = torch.cat([pred for _, pred in predictions]).tolist()
    rows = sorted(zip(indices, labels, strict=True))
    lines = ["index\tprediction", *(f"{i}\t{label}" for i, label in rows)]
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by tensors, or on CPU the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
    keep the last row of each step (``peft_glue.report.read_metrics``)."""

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
