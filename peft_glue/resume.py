"""Exact resumption of interrupted runs.

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
from pytorch_lightning.callbacks import ModelCheckpoint

from peft_glue.errors import UserError


def checkpoint_to_resume(resume: str | None, run_dir: Path, checkpoint_dir: Path) -> Path | None:
    """``resume=auto``: the run's last checkpoint in ``checkpoint_dir`` (ModelCheckpoint's ``dirpath``), if
    any. ``resume=<file.ckpt>``: that file."""
    if resume in (None, "", "none", False):
        return None
    if resume == "auto" or Path(resume).resolve() == run_dir.resolve():
        last = checkpoint_dir / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        return last if last.is_file() else None
    path = Path(resume)
    if path.is_file():
        return path
    raise UserError(
        f"resume={resume}: no such checkpoint; use resume=auto or resume=<run folder or .ckpt file>"
    )


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
