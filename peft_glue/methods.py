"""Fine-tuning methods, one class each, chosen by ``conf/method/<name>.yaml``.

A method decides which parameters of a sequence classifier train, and may add new ones (LoRA).
Adding a method is one class here plus one yaml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from peft import LoraConfig, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from peft_glue.errors import UserError


@dataclass
class Method:
    """Base class. ``lr`` is the method's default learning rate (``optimizer.lr`` falls back to it)."""

    lr: float
    name: ClassVar[str]

    def apply(self, model: PreTrainedModel) -> nn.Module:
        raise NotImplementedError

    def hparams(self) -> dict:
        return {"name": self.name, **asdict(self)}


def is_head_parameter(model: PreTrainedModel, param_name: str) -> bool:
    """Parameters outside the pretrained backbone (e.g. BERT's ``classifier``) are the new task head."""
    return not param_name.startswith(f"{model.base_model_prefix}.")


@dataclass
class Full(Method):
    """Full fine-tuning: every parameter trains."""

    name = "full"

    def apply(self, model: PreTrainedModel) -> nn.Module:
        model.requires_grad_(True)
        return model


@dataclass
class BitFit(Method):
    """BitFit (Ben Zaken et al., 2022): only bias terms and the classification head train."""

    name = "bitfit"

    def apply(self, model: PreTrainedModel) -> nn.Module:
        for param_name, param in model.named_parameters():
            param.requires_grad = param_name.endswith(".bias") or is_head_parameter(model, param_name)
        return model


@dataclass
class LoRA(Method):
    """LoRA (Hu et al., 2021) from ``peft``; the classification head trains too (peft's SEQ_CLS default)."""

    name = "lora"
    r: int = 8
    alpha: float = 8
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query"])

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise UserError(f"method.r must be a whole number >= 1 (got {self.r!r}); e.g. method.r=8")
        if not 0 <= self.dropout < 1:
            raise UserError(f"method.dropout must be in [0, 1) (got {self.dropout!r})")
        if not self.target_modules:
            raise UserError("method.target_modules is empty; e.g. method.target_modules=[query,value]")
        self.target_modules = list(self.target_modules)

    def apply(self, model: PreTrainedModel) -> nn.Module:
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
        )
        try:
            return get_peft_model(model, config)
        except ValueError as error:
            raise UserError(
                f"method.target_modules={self.target_modules}: {error}".splitlines()[0]
            ) from error
