"""Fine-tuning methods, one class each, chosen by ``conf/method/<name>.yaml``.

A method decides which parameters of a sequence classifier train (and may add new ones, as LoRA does), and
how the trained result is saved for use elsewhere and loaded back onto a freshly built base model.
Adding a method is one class here plus one yaml.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from peft_glue.errors import UserError
from peft_glue.rundir import ADAPTER_DIR, BITFIT_DIR, MODEL_DIR


@dataclass
class Method:
    """Base class. ``lr`` is the method's default learning rate (``optimizer.lr`` falls back to it)."""

    lr: float
    name: ClassVar[str]
    export_dir: ClassVar[str]  # folder in the run directory that holds the trained weights
    order: ClassVar[int] = 100  # where the report lists the method (lower first)
    sweeps: ClassVar[dict[str, str]] = {}  # hyperparameters the report plots a sweep of -> what they are

    def hyperparameters(self) -> dict:
        """The method's settings as results.json records them (besides its name)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def info(cls) -> dict:
        """What the report needs to know of the method, recorded in results.json."""
        return {"order": cls.order, "sweeps": dict(cls.sweeps)}

    def apply(self, model: PreTrainedModel) -> nn.Module:
        """Make the right parameters trainable (and add new ones); returns the model to train."""
        raise NotImplementedError

    def save(self, model: nn.Module, folder: Path) -> None:
        """Write what training changed, in a format the Hugging Face ecosystem loads."""
        raise NotImplementedError

    def load(self, base: PreTrainedModel, folder: Path) -> nn.Module:
        """Apply saved weights (from ``save``) to a freshly built base model."""
        raise NotImplementedError

    def merged(self, model: nn.Module) -> PreTrainedModel:
        """The trained model as a plain transformers model (no adapters)."""
        return model


def is_head_parameter(model: PreTrainedModel, param_name: str) -> bool:
    """Parameters outside the pretrained backbone (e.g. BERT's ``classifier``) are the new task head."""
    return not param_name.startswith(f"{model.base_model_prefix}.")


@dataclass
class Full(Method):
    """Full fine-tuning: every parameter trains; the whole model is saved with ``save_pretrained``."""

    name = "full"
    export_dir = MODEL_DIR
    order = 0

    def apply(self, model: PreTrainedModel) -> nn.Module:
        model.requires_grad_(True)
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)

    def load(self, base: PreTrainedModel, folder: Path) -> nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(folder)


BITFIT_FILE = "bitfit.safetensors"


def apply_bitfit(model: PreTrainedModel, folder: str | Path) -> PreTrainedModel:
    """Load BitFit's trained tensors (biases and head, by parameter name) into a base model in place."""
    tensors = load_file(Path(folder) / BITFIT_FILE)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected:
        raise UserError(f"{folder}/{BITFIT_FILE} holds tensors the model lacks: {unexpected[:3]}")
    return model


@dataclass
class BitFit(Method):
    """BitFit (Ben Zaken et al., 2022): only bias terms and the classification head train.

    Saved as the changed tensors in ``bitfit.safetensors``; ``apply_bitfit(model, folder)`` puts them back.
    """

    name = "bitfit"
    export_dir = BITFIT_DIR
    order = 1

    def apply(self, model: PreTrainedModel) -> nn.Module:
        for param_name, param in model.named_parameters():
            param.requires_grad = param_name.endswith(".bias") or is_head_parameter(model, param_name)
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, folder / BITFIT_FILE, metadata={"format": "pt", "method": "bitfit"})

    def load(self, base: PreTrainedModel, folder: Path) -> nn.Module:
        return self.apply(apply_bitfit(base, folder))


@dataclass
class LoRA(Method):
    """LoRA (Hu et al., 2021) from ``peft``; the classification head trains too (peft's SEQ_CLS default).

    Saved in PEFT's ``save_pretrained`` format: ``PeftModel.from_pretrained(base, folder)`` loads it.
    """

    name = "lora"
    export_dir = ADAPTER_DIR
    order = 2
    sweeps = {"r": "LoRA rank"}
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

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)

    def load(self, base: PreTrainedModel, folder: Path) -> nn.Module:
        return PeftModel.from_pretrained(base, folder)

    def merged(self, model: nn.Module) -> PreTrainedModel:
        return copy.deepcopy(model).merge_and_unload()
