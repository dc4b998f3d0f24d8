"""The LightningModule: a Hugging Face sequence classifier (with its method applied) trained with AdamW, its
learning rate scheduled by transformers' ``get_scheduler`` (``scheduler.name``).

Loss, metrics and predictions come from the task (classification or regression)."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric
from transformers import get_scheduler

from peft_glue.errors import UserError
from peft_glue.training.compiled_step import compile_model, wants_compile
from peft_glue.training.data import MODEL_INPUTS
from peft_glue.training.methods import Method, is_head_parameter
from peft_glue.training.models import accepted_inputs
from peft_glue.training.schema import ScheduleName
from peft_glue.training.tasks import GlueTask, split_suffix

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")  # as transformers.Trainer: no decay on these
# scheduler.name -> transformers' schedule; both keep the linear warmup of scheduler.warmup_ratio
# (transformers' own "constant" has no warmup: it would ignore that key)
TRANSFORMERS_SCHEDULES = {ScheduleName.linear: "linear", ScheduleName.constant: "constant_with_warmup"}


def head_parameter_ids(model: nn.Module) -> set[int]:
    """The ids of the task head's parameters (RoBERTa's ``classifier``; under peft, its trained copy)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {id(param) for name, param in base.named_parameters() if is_head_parameter(base, name)}


def parameter_groups(model: nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """AdamW's groups of the trainable parameters: with ``weight_decay`` or without (biases and LayerNorm
    weights); with ``head_lr``, the task head's apart at that learning rate (VeRA trains its head so)."""
    head = head_parameter_ids(model) if head_lr is not None else set()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = []
    for in_head in (False, True):
        for decays in (True, False):
            params = [
                p for n, p in trainable if (id(p) in head) == in_head and n.endswith(NO_DECAY) != decays
            ]
            group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
            groups.append(group | ({"lr": head_lr} if in_head else {}))
    return [group for group in groups if group["params"]]


def stage_of(split: str) -> str:
    """The logging prefix of an evaluation set: ``val`` for validation sets, ``test`` for test sets."""
    return "val" if split.startswith("validation") else "test"


class GlueClassifier(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        task: GlueTask,
        lr: float,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        head_lr: float | None = None,
        warmup_ratio: float = 0.0,
        schedule: str = ScheduleName.linear,
        method: Method | None = None,
        compile: bool | None = False,
    ):
        super().__init__()
        self.model = model
        self.compile = compile  # the setting; None: where it pays (compiled_step.wants_compile)
        # the training step's torch.compile of ``model`` (made in on_fit_start), kept outside the module tree
        # so that state_dict and checkpoints do not list the model twice; evaluation uses ``model`` (eager)
        object.__setattr__(self, "compiled_model", None)
        self.task = task
        self.method = method or Method()  # the optimizer and per-step hooks of the method
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, tuple(betas), eps
        self.head_lr = head_lr
        self.warmup_ratio, self.schedule = warmup_ratio, ScheduleName(schedule)
        metrics = task.metric_collection()
        # one collection and loss mean per evaluation set (MNLI: matched and mismatched), keyed by split;
        # torchmetrics syncs their states over all DDP ranks when computed: exact metrics of the whole split
        self.eval_metrics = nn.ModuleDict(
            {
                split: metrics.clone(prefix=f"{stage_of(split)}/", postfix=split_suffix(split))
                for split in task.evaluation_splits
            }
        )
        self.eval_losses = nn.ModuleDict({split: MeanMetric() for split in task.evaluation_splits})
        self.val_history: list[dict[str, float]] = []  # one entry per finished validation epoch
        self.strict_loading = False  # checkpoints of PEFT methods hold only the trainable tensors
        # the inputs this family takes: no token_type_ids for DistilBERT, ModernBERT
        self.model_inputs = accepted_inputs(model, MODEL_INPUTS)

    def trainable_state_keys(self) -> set[str]:
        return {name for name, param in self.named_parameters() if param.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only what training changes: a LoRA checkpoint of bert-base is ~2 MB, not 1.3 GB."""
        keep = self.trainable_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["val_history"] = self.val_history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = self.trainable_state_keys() - checkpoint["state_dict"].keys()
        if missing:
            raise UserError(
                f"the checkpoint lacks {len(missing)} trained tensors (e.g. {min(missing)}); "
                "was it written by a run with another method or model?"
            )
        self.val_history = checkpoint.get("val_history", [])

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(**{key: batch[key] for key in self.model_inputs if key in batch}).logits

    def on_fit_start(self) -> None:
        """Compile the training step when asked, or, unset, when the run is long enough for it to pay back
        (the trainer knows its number of steps only now)."""
        steps = self.trainer.estimated_stepping_batches
        if wants_compile(self.compile, steps, self.trainer.precision, self.device):
            compiled = compile_model(self.model, eager_on_error=self.compile is None)
            object.__setattr__(self, "compiled_model", compiled)

    def on_train_epoch_start(self) -> None:
        # from_pretrained returns eval mode and Lightning restores submodule modes: force dropout on.
        self.model.train()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        inputs = {key: batch[key] for key in self.model_inputs if key in batch}
        model = self.model if self.compiled_model is None else self.compiled_model
        loss = self.method.training_loss(model, inputs, batch["labels"], self.task)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        # Reading the loss on the host waits for a GPU, so look only when Lightning logs anyway (a diverged
        # run stays non-finite) and at the end of each epoch, not at every step.
        check = self.global_step % self.trainer.log_every_n_steps == 0 or self.trainer.is_last_batch
        if check and not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} by step {self.global_step} "
                f"(epoch {self.current_epoch}); lower optimizer.lr (now {self.lr:g}) "
                "or set trainer.gradient_clip_val=1.0"
            )
        return loss

    def _split(self, stage: str, dataloader_idx: int) -> str:
        """The evaluation set that loader ``dataloader_idx`` of ``stage`` ("validation"/"test") serves."""
        return self._splits(stage)[dataloader_idx]

    def _evaluate(self, batch: dict, split: str) -> None:
        logits = self(batch)
        loss = self.task.loss(logits, batch["labels"])
        self.eval_metrics[split].update(self.task.predictions(logits), batch["labels"])
        loss_mean = self.eval_losses[split]
        loss_mean.update(loss, weight=len(batch["labels"]))
        # a Metric: Lightning computes (and syncs) it at epoch end
        self.log(f"{stage_of(split)}/loss{split_suffix(split)}", loss_mean, add_dataloader_idx=False)

    def _compute(self, stage: str) -> dict[str, torch.Tensor]:
        """The metrics of every evaluation set of ``stage``, with the task's derived ones; resets them."""
        prefix = f"{stage_of(stage)}/"
        values: dict[str, torch.Tensor] = {}
        for split in self._splits(stage):
            computed = {k.removeprefix(prefix): v for k, v in self.eval_metrics[split].compute().items()}
            computed.update(self.task.derive(computed, split_suffix(split)))
            values.update({f"{prefix}{k}": v for k, v in computed.items()})
            self.eval_metrics[split].reset()
        return values

    def _splits(self, stage: str) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        return datamodule.eval_splits(stage) if datamodule is not None else [stage]

    def _log_computed(self, values: dict[str, torch.Tensor], **kwargs) -> None:
        """Log metrics that torchmetrics already synchronised: every rank holds the same values, and the
        max over ranks keeps them exact (it also stops Lightning asking for sync_dist under DDP)."""
        self.log_dict(values, sync_dist=True, reduce_fx="max", add_dataloader_idx=False, **kwargs)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._split("validation", dataloader_idx))

    def on_validation_epoch_end(self) -> None:
        values = self._compute("validation")
        self._log_computed(values, prog_bar=True)
        if not self.trainer.sanity_checking:
            epoch_metrics = {key.removeprefix("val/"): float(value) for key, value in values.items()}
            self.val_history.append({"epoch": self.current_epoch, "step": self.global_step, **epoch_metrics})

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._split("test", dataloader_idx))

    def on_test_epoch_end(self) -> None:
        self._log_computed(self._compute("test"))

    def predict_step(
        self, batch: dict, batch_idx: int, dataloader_idx: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["idx"], self.task.predictions(self(batch))

    def configure_optimizers(self):
        optimizer = self.method.configure_optimizer(
            self.model,
            parameter_groups(self.model, self.weight_decay, self.head_lr),
            lr=self.lr,
            weight_decay=self.weight_decay,
            betas=self.betas,
            eps=self.eps,
        )
        total_steps = self.trainer.estimated_stepping_batches
        self.method.start_training(self.model, int(total_steps))
        scheduler = get_scheduler(
            TRANSFORMERS_SCHEDULES[self.schedule],
            optimizer,
            num_warmup_steps=math.ceil(self.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.method.after_optimizer_step(self.model, self.global_step)  # gradients not yet zeroed
