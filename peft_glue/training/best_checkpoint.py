"""The checkpoint a run is judged by: the epoch that the task's monitor metric picked on validation.

``conf/config.yaml``'s ``best_checkpoint`` is a Lightning ``ModelCheckpoint(monitor="val/<monitor>",
mode="max", save_top_k=1)``; after training, ``restore_best`` loads that checkpoint back into the module, so
export, test and predictions all use the selected epoch rather than the last one. ``last.ckpt`` (the
``checkpoint`` callback) stays for resuming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from peft_glue.errors import UserError


def monitoring_checkpoint(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The trainer's ModelCheckpoint that keeps the best epoch by a monitored metric, if any."""
    return next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)


def restore_best(trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, Any] | None:
    """Load the best checkpoint's (trainable) tensors into ``module``; what results.json records of it.
    None when no checkpoint was monitored (checkpointing off): the module keeps its last weights."""
    callback = monitoring_checkpoint(trainer)
    if callback is None or not callback.best_model_path:
        return None
    path = Path(callback.best_model_path)
    checkpoint = torch.load(path, map_location=module.device, weights_only=True)
    state = checkpoint["state_dict"]
    missing = {name for name, p in module.named_parameters() if p.requires_grad} - state.keys()
    if missing:
        raise UserError(f"{path} lacks {len(missing)} trained tensors (e.g. {min(missing)})")
    module.load_state_dict(state, strict=False)
    score = callback.best_model_score
    return {
        "path": str(path),
        "epoch": checkpoint.get("epoch"),
        "step": checkpoint.get("global_step"),
        "monitor": callback.monitor,
        "value": None if score is None else float(score),
    }
