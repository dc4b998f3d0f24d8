"""The layout of a run folder and the schema of its ``results.json``, defined once.

Everything that writes or reads a run folder (training, predict, report, analyze, the multirun failure
callback) takes its file names, export folder names and statuses from here. This module depends on nothing
else in the package, so light tools (report, analyze) can read runs without importing torch or Lightning.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

# ---------------------------------------------------------------------------------------------- file names
RESULTS_FILE = "results.json"  # the run record below (RunResults)
METRICS_FILE = "metrics.csv"  # per-step and per-epoch metrics (the csv logger)
HYDRA_DIR = ".hydra"  # Hydra's copy of the run's config and overrides
SAVED_CONFIG = f"{HYDRA_DIR}/config.yaml"
SAVED_OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"
MULTIRUN_FILE = "multirun.yaml"  # at the top of a sweep folder
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"  # Lightning's ModelCheckpoint ``save_last`` name

# Export folders of the trained weights, one per kind of method (``Method.export_dir``)
MODEL_DIR = "model"  # a whole transformers model (full fine-tuning)
BITFIT_DIR = "bitfit"  # BitFit's changed tensors
ADAPTER_DIR = "adapter"  # a peft adapter (``PeftModel.from_pretrained``)
MERGED_DIR = "merged"  # merge=true: a plain transformers model with the adapter merged in

# ---------------------------------------------------------------------------------------------- statuses
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
DRY_RUN = "dry_run"
STATUSES = (COMPLETED, DRY_RUN, FAILED, RUNNING)


class RunResults(TypedDict, total=False):
    """What ``results.json`` holds (every key optional: a failed run stops where it failed)."""

    status: str  # one of STATUSES
    error: str  # with status failed
    task: str
    task_info: dict[str, Any]  # metrics, monitor, regression: what the report needs to know of the task
    method: dict[str, Any]  # name and hyperparameters
    method_info: dict[str, Any]  # order (display order), sweeps (hyperparameters a sweep varies)
    model: str
    seed: int
    overrides: list[str]
    optimizer: dict[str, Any]
    batch_size: int
    train_subset: int | None
    max_epochs: int
    precision: str
    model_name_or_path: str
    data_dir: str | None  # the local GLUE folder read; None: the Hub
    trainable_params: int
    total_params: int
    trainable_percent: float
    resumed_from: str | None
    val: dict[str, dict[str, float]] | None  # "best" and "last" epoch metrics
    val_history: list[dict[str, float]]
    train_seconds: float
    train_samples: int
    train_samples_per_second: float
    exports: dict[str, str] | None
    test: dict[str, float] | None  # metrics of a labelled test split
    predictions: str | None  # the submission file of an unlabelled test split
    peak_memory_mb: float
    threads: int


# ---------------------------------------------------------------------------------------------- writing
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
    folder.parent.mkdir(parents=True, exist_ok=True)
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


# ---------------------------------------------------------------------------------------------- the record
def read_results(run_dir: Path) -> RunResults:
    """A run folder's results.json, or {} when it has none."""
    path = Path(run_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def is_run_folder(folder: Path) -> bool:
    return (Path(folder) / SAVED_OVERRIDES).is_file()


def is_multirun_folder(folder: Path) -> bool:
    return (Path(folder) / MULTIRUN_FILE).is_file()


def launched_as_rank_zero() -> bool:
    """Whether this process is (or will be) DDP's global rank 0, the one that writes the run folder, known
    before the Trainer exists: the processes that Lightning's ``ddp``, torchrun or SLURM start for the other
    ranks and nodes say otherwise in their environment."""
    return all(
        os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    )


class RunRecord(dict):
    """The content of results.json; ``save`` rewrites it, so a crash still leaves the latest state.

    Under DDP only global rank 0 writes (``writes``); the other ranks keep their record in memory.
    """

    def __init__(self, run_dir: Path, **fields: Any):
        super().__init__(status=RUNNING, **fields)
        self.path = Path(run_dir) / RESULTS_FILE
        self.writes = launched_as_rank_zero()

    @property
    def folder(self) -> Path:
        return self.path.parent

    def save(self, **updates: Any) -> None:
        self.update(updates)
        if self.writes:
            write_atomic(self.path, json.dumps(self, indent=2, default=str) + "\n")
