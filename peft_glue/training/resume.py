"""Exact resumption of interrupted runs, and what ``resume=`` means (one vocabulary, ``resume_source``).

``resume=`` takes: nothing (null: a fresh run); ``auto`` (the last checkpoint of this run's folder); a run
folder (continued in place with its saved overrides); a multirun folder (``-m``: every job continued in place,
finished ones skipped); a ``.ckpt`` file (a new run that starts from it). ``expand_resume`` turns the
folder forms into ``auto`` plus the saved overrides before Hydra composes the config.

Lightning's checkpoints restore weights, optimizer, scheduler and loop counters. Two more things decide what
happens next and are restored here: the random number generators (dropout masks) and the position inside the
epoch (which batches the length-grouped sampler still has to give). With both, a run killed at any point and
resumed from its last checkpoint ends with the same metrics as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra._internal.utils import get_args_parser
from omegaconf import OmegaConf

from peft_glue.errors import UserError, exit_with
from peft_glue.record import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    MULTIRUN_FILE,
    SAVED_OVERRIDES,
    is_multirun_folder,
    is_run_folder,
)

AUTO = "auto"


def resume_source(value: Any) -> str | Path | None:
    """``resume=`` normalised: None for a fresh run, ``AUTO``, or the path given."""
    if value is None or value is False or str(value).strip().lower() in ("", "none", "null"):
        return None
    return AUTO if value == AUTO else Path(str(value))


def checkpoint_to_resume(resume: Any, run_dir: Path, checkpoint_dir: Path) -> Path | None:
    """``resume=auto`` (or this run's own folder): the run's last checkpoint in ``checkpoint_dir``
    (ModelCheckpoint's ``dirpath``), if any. ``resume=<file.ckpt>``: that file."""
    source = resume_source(resume)
    if source is None:
        return None
    if source == AUTO or Path(source).resolve() == run_dir.resolve():
        last = checkpoint_dir / LAST_CHECKPOINT
        return last if last.is_file() else None
    if Path(source).is_file():
        return Path(source)
    raise UserError(
        f"resume={resume}: no such checkpoint; use resume=auto or resume=<run folder or .ckpt file>"
    )


class RunIdentity(pl.Callback):
    """Saves which method and model wrote a checkpoint, so that resuming it with another is refused before
    anything loads (``check_checkpoint``)."""

    def __init__(self, method: str | None, model: str | None) -> None:
        self.identity = {"method": method, "model": model}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.identity)


def check_checkpoint(path: Path, method: str | None, model: str | None) -> None:
    """One line, naming the path, for a file that is not a Lightning checkpoint or that another method or
    model wrote; read with ``weights_only=True`` (nothing in it runs) and memory-mapped (cheap)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise UserError(
            f"resume={path} is not a Lightning checkpoint ({type(error).__name__}); give a run folder or "
            f"a .ckpt from a run's {CHECKPOINT_DIR}/"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"resume={path} is not a Lightning checkpoint (it holds no state_dict)")
    saved = (checkpoint.get("callbacks") or {}).get(RunIdentity.__qualname__) or {}
    for key, wanted in (("method", method), ("model", model)):
        if None not in (saved.get(key), wanted) and saved[key] != wanted:
            raise UserError(
                f"resume={path} was written by a run with {key}={saved[key]}, not {key}={wanted}; "
                f"resume it with {key}={saved[key]}, or start a new run without resume="
            )


def expand_resume(argv: list[str]) -> list[str]:
    """``resume=<run folder>`` continues that run in place: its saved overrides, its folder, ``resume=auto``.
    ``-m resume=<multirun folder>`` does the same for every job of a sweep (finished jobs are skipped)."""
    args, _ = get_args_parser().parse_known_args(argv)
    value = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("resume=")), None)
    source = resume_source(value)
    if source is None or source == AUTO:
        return argv
    if not Path(source).exists():
        exit_with(f"resume={value}: no such file or folder; give a run folder, a multirun folder or a .ckpt")
    if not Path(source).is_dir():
        return argv
    folder = Path(source).resolve()

    def without_resume(overrides: list[str]) -> list[str]:
        return [o for o in overrides if not o.startswith("resume=")]

    extra = without_resume(args.overrides)  # e.g. trainer.max_epochs=10 to train longer
    if is_run_folder(folder):
        saved = without_resume(OmegaConf.load(folder / SAVED_OVERRIDES))
        return [*saved, *extra, f"hydra.run.dir={folder}", f"resume={AUTO}"]
    if is_multirun_folder(folder):
        saved = without_resume(OmegaConf.load(folder / MULTIRUN_FILE).hydra.overrides.task)
        return ["-m", *saved, *extra, f"hydra.sweep.dir={folder}", f"resume={AUTO}"]
    exit_with(f"resume={value} is neither a run folder (with .hydra/) nor a multirun folder (multirun.yaml)")
    return argv


def collect_rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(tuple(states["python"][:1]) + (tuple(states["python"][1]),) + tuple(states["python"][2:]))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RestoreRandomState(pl.Callback):
    """Saves the RNG states with each checkpoint and puts them back right before the first batch after a
    resume, where the uninterrupted run stood when the checkpoint was written."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": collect_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict["rng"]

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
