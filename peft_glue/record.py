"""The run record that joins the two wings: a run folder's layout and ``RunResults``, the typed
``results.json``, defined once.

Training writes it (``RunRecord``); every reader (report, comparison, card, submit, tracking, analyze, export)
reads it through ``read_results`` and named fields. It depends on nothing else in the package, so the results
wing reads runs without importing torch or Lightning.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

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


DEFAULT_MONITOR = "accuracy"  # the monitor of results.json files written before task_info existed
NOT_METRICS = ("epoch", "step")  # bookkeeping entries of a validation-metrics dict, not metrics


def looks_local(name_or_path: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else (absolute, relative, deeper) is a path."""
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1


def is_hub_id(name_or_path: str | None) -> bool:
    """A Hub model id (``bert-base-uncased``, ``org/name``), not a local folder."""
    if not name_or_path or Path(name_or_path).expanduser().exists():
        return False
    return not looks_local(name_or_path)


@dataclass
class TaskInfo:
    """What a task says of itself, so that readers need not import the task."""

    metrics: list[str] = field(default_factory=list)
    monitor: str = DEFAULT_MONITOR
    regression: bool = False
    labels: list[str] = field(default_factory=list)
    glue_columns: dict[str, str] = field(default_factory=dict)  # GLUE's column -> the metric it shows
    submission_files: list[str] = field(default_factory=list)
    dataset: dict[str, str] | None = None  # a task of one's own: its files or Hub dataset; None: GLUE


@dataclass
class MethodInfo:
    """What the report needs of a method: its place in tables and the hyperparameters it sweeps."""

    order: int | None = None
    sweeps: dict[str, str] = field(default_factory=dict)


@dataclass
class Splits:
    """Where validation and test came from, and how many examples each split held."""

    validation_from: str | None = None  # "train" (carved), "glue_dev" or "validation_file" (task=file)
    test_from: str | None = (
        None  # "glue_dev", "glue_test", "validation_file", "test_file" or "train" (carved)
    )
    validation_size: int | float | None = None
    test_size: int | float | None = None
    split_seed: int | None = None
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class Provenance:
    """Which code, libraries, hardware, data and base model produced a run (``training/provenance.py``)."""

    peft_glue: str | None = None  # the package's version
    git_commit: str | None = None  # of the checkout the package was imported from; None for a wheel
    git_dirty: bool | None = None  # that checkout had uncommitted changes
    libraries: dict[str, str] = field(default_factory=dict)  # python, torch, transformers, peft, ...
    hardware: dict[str, Any] = field(default_factory=dict)  # cpu, cpu_cores, gpu, gpu_count, cuda
    precision: str | None = None
    data: dict[str, str] = field(default_factory=dict)  # local file -> sha256, or hub:<dataset> -> revision
    base_model: dict[str, Any] = field(default_factory=dict)  # hub_id, hub_commit | path, weights_sha256

    def code(self) -> str:
        """``0.1.0 @ 1a2b3c4d (dirty)``: the code in one short string."""
        commit = f" @ {self.git_commit[:8]}" if self.git_commit else ""
        return f"{self.peft_glue or '?'}{commit}{' (dirty)' if self.git_dirty else ''}"


NESTED = {"task_info": TaskInfo, "method_info": MethodInfo, "splits": Splits, "provenance": Provenance}


@dataclass
class RunResults:
    """What ``results.json`` holds: every field optional, since a failed run stops where it failed.

    Read it with ``RunResults.from_dict`` (older files and keys written by newer versions included: the
    latter are kept in ``extra``) and through the accessors below, never by re-deriving keys.
    """

    status: str = RUNNING  # one of STATUSES
    error: str | None = None  # with status failed
    task: str | None = None
    task_info: TaskInfo | None = None
    method: dict[str, Any] = field(default_factory=dict)  # name and hyperparameters, as asked
    method_info: MethodInfo | None = None
    model: str | None = None  # the model option (``conf/model/<name>.yaml``)
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    optimizer: dict[str, Any] = field(default_factory=dict)  # lr, weight_decay, ...
    batch_size: int | None = None
    train_subset: int | None = None
    validation_size: int | float | None = None  # carved from train; None: GLUE dev validates
    test_size: int | float | None = None  # carved from train (a dataset without a test file)
    max_epochs: int | None = None
    precision: str | None = None
    devices: int | str | list[int] | None = None  # the trainer's devices; [N]: the GPU a sweep gave the job
    device: str | None = None  # where the model ran at the end, e.g. cuda:3 or cpu
    visible_devices: str | None = None  # the job's CUDA_VISIBLE_DEVICES, as Ray or SLURM set it
    model_name_or_path: str | None = None
    data_dir: str | None = None  # the local GLUE folder read; None: the Hub
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_percent: float | None = None
    adapted_modules: list[str] | None = (
        None  # modules the method adapted, or single tensors it trains (BitFit)
    )
    adaptation_notes: list[str] = field(default_factory=list)  # e.g. a role inside a fused projection
    resumed_from: str | None = None
    init_from: dict[str, Any] | None = None  # the run whose trained weights this one started from
    val: dict[str, dict[str, float]] | None = None  # "best" and "last" epoch metrics
    val_history: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: dict[str, Any] | None = None  # path, epoch, step, monitor, value
    splits: Splits | None = None
    train_seconds: float | None = None
    train_samples: int | None = None
    train_samples_per_second: float | None = None
    # each epoch's: the first with the run's one-off costs (compiling, first allocations), later ones without
    train_epoch_samples_per_second: list[float] | None = None
    frozen_bf16: bool | None = None  # frozen linear weights stored in bf16 while training (bf16-mixed)
    compile: bool | None = None  # the training step was torch.compile'd
    compile_seconds: float | None = None  # of train_seconds, the time spent compiling
    exports: dict[str, str] | None = None  # "weights" (and "merged") -> folder
    test: dict[str, float] | None = None  # metrics of a labelled test split
    predictions: list[str] | None = None  # the submission files of the unlabelled test split(s)
    peak_memory_mb: float | None = None
    threads: int | None = None
    provenance: Provenance | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    # ------------------------------------------------------------------------------------------ reading
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunResults:
        known = {f.name for f in fields(cls)} - {"extra"}
        typed = {key: value for key, value in values.items() if key in known}
        for key, nested in NESTED.items():
            if isinstance(typed.get(key), dict):
                names = {f.name for f in fields(nested)}
                typed[key] = nested(**{k: v for k, v in typed[key].items() if k in names})
        if isinstance(typed.get("predictions"), str):  # before MNLI's two files, one path
            typed["predictions"] = [typed["predictions"]]
        for key in ("method", "optimizer", "overrides", "val_history"):
            if typed.get(key) is None:
                typed.pop(key, None)
        extra = {key: value for key, value in values.items() if key not in known}
        return cls(**typed, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with ``extra`` merged back in."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        values = {key: asdict(v) if is_dataclass(v) else v for key, v in values.items()}
        return {**values, **self.extra}

    # ------------------------------------------------------------------------------------------ accessors
    @property
    def method_name(self) -> str | None:
        return self.method.get("name")

    @property
    def monitor(self) -> str:
        """The metric that picks the best epoch (the task's)."""
        return self.task_info.monitor if self.task_info else DEFAULT_MONITOR

    @property
    def best(self) -> dict[str, float]:
        """The validation metrics of the best epoch ({} when the run never validated)."""
        return (self.val or {}).get("best") or {}

    @property
    def monitor_value(self) -> float:
        """The best epoch's value of the monitored metric; NaN when the run never validated."""
        return float(self.best.get(self.monitor, math.nan))

    @property
    def learning_rate(self) -> float | None:
        """``optimizer.lr``; older records kept a method default in ``method.lr`` where a failed run lacks
        the optimizer."""
        return self.optimizer.get("lr", self.method.get("lr"))

    @property
    def validation_carved(self) -> bool:
        """Whether validation was carved from train (GLUE dev then serves as the test split)."""
        return bool(self.splits and self.splits.validation_from == "train")

    @property
    def hub_model_id(self) -> str | None:
        """The base model's Hub id: given as one, or the Hub model whose local copy the run loaded."""
        if self.provenance and self.provenance.base_model.get("hub_id"):
            return self.provenance.base_model["hub_id"]
        return self.model_name_or_path if is_hub_id(self.model_name_or_path) else None

    @property
    def model_label(self) -> str | None:
        """The model option, or, where ``model.name_or_path=`` replaced its checkpoint, that checkpoint's last
        path part: two families run under one option are two models in a report."""
        given = next((o.split("=", 1)[1] for o in self.overrides if o.startswith("model.name_or_path=")), "")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(given.strip("'\"").rstrip("/")).name)
        return name or self.model

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same configuration: every identity field except the seed. The learning
        rate is one field (``lr``), wherever an older record kept it."""
        method = {key: value for key, value in self.method.items() if key != "lr"}
        return {
            "task": self.task,
            "model": self.model_label,
            "method": method,
            "lr": self.learning_rate,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "train_subset": self.train_subset,
            "validation_size": self.validation_size,
            "test_size": self.test_size,
            **({"init_from": self.init_from.get("task")} if self.init_from else {}),
        }


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
def read_results(run_dir: Path) -> RunResults | None:
    """A run folder's results.json (or that file itself), or None when there is none."""
    path = Path(run_dir)
    path = path if path.is_file() else path / RESULTS_FILE
    return RunResults.from_dict(json.loads(path.read_text())) if path.is_file() else None


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


class RunRecord:
    """The run's ``RunResults`` and its results.json; ``save`` rewrites the file, so a crash still leaves
    the latest state. Under DDP only global rank 0 writes (``writes``); other ranks keep theirs in memory.
    """

    def __init__(self, run_dir: Path, **fields: Any):
        self.results = RunResults(**fields)
        self.path = Path(run_dir) / RESULTS_FILE
        self.writes = launched_as_rank_zero()

    @property
    def folder(self) -> Path:
        return self.path.parent

    def save(self, **updates: Any) -> None:
        """Set fields and write; an unknown name is a TypeError (every key of results.json is declared)."""
        replaced = replace(self.results, **updates)  # checks the names
        for key, nested in NESTED.items():
            if isinstance(updates.get(key), dict):
                setattr(replaced, key, nested(**updates[key]))
        self.results = replaced
        if self.writes:
            write_atomic(self.path, json.dumps(self.results.to_dict(), indent=2, default=str) + "\n")
