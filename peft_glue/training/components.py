"""One place that turns a config into the parts of a run: task, method, model (with the method applied, or
with trained weights loaded) and tokenizer. Training and ``predict`` both build through ``assemble``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import PreTrainedTokenizerBase

from peft_glue.errors import UserError
from peft_glue.training.config import build
from peft_glue.training.methods import Method
from peft_glue.training.models import ensure_padding, load_model, load_tokenizer, name_labels
from peft_glue.training.tasks import GlueTask


@dataclass
class Components:
    task: GlueTask
    method: Method
    model: nn.Module
    model_config: dict = field(repr=False)

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """Loaded on first use: a dry run never needs it (and may have no tokenizer offline). A decoder's
        missing padding token becomes its end-of-sequence token, in the model's config too."""
        tokenizer = load_tokenizer(self.model_config["name_or_path"], self.model_config["trust_remote_code"])
        ensure_padding(tokenizer, self.model)
        return tokenizer


def assemble(cfg: DictConfig, trained_weights: Path | None = None) -> Components:
    """The task and method of ``cfg``, and its model: the method applied to the base model for training, or,
    with ``trained_weights`` (a run's export folder), the trained model loaded onto a fresh base model."""
    task: GlueTask = build(cfg.task)
    method: Method = build(cfg.method, _convert_="all")
    if getattr(task, "class_weights", False) and type(method).training_loss is not Method.training_loss:
        raise UserError(
            f"task.class_weights: method {method.name} trains on the model's own (unweighted) loss; "
            "drop task.class_weights or choose another method"
        )
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    loading = {key: value for key, value in model_config.items() if key != "hub_id"}  # hub_id: a name only
    base = load_model(num_labels=task.num_labels, **loading)
    name_labels(base, task.id2label)  # in every export's config.json: the task's label names
    model = method.apply(base) if trained_weights is None else method.load(base, trained_weights)
    name_labels(model, task.id2label)  # a loaded full model (an older export may lack the names)
    return Components(task, method, model, model_config)
