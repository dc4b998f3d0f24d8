"""Fine-tuning methods, one class each, chosen by ``conf/method/<name>.yaml``.

A method decides which parameters of a sequence classifier train (and may add new ones, as LoRA does), and
how the trained result is saved for use elsewhere and loaded back onto a freshly built base model.
Adding a method is one class here plus one yaml; any method of ``peft`` runs through ``Peft`` with a yaml
(or a command line) that names its config class.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import peft
import torch
from peft import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    PeftType,
    PrefixTuningConfig,
    PromptLearningConfig,
    TaskType,
    get_peft_model,
)
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.optimizers import create_loraplus_optimizer
from peft.utils import get_peft_model_state_dict
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from peft_glue.errors import UserError
from peft_glue.record import ADAPTER_DIR, BITFIT_DIR, MODEL_DIR
from peft_glue.training.roles import backbone_modules, family, resolve
from peft_glue.training.schema import (
    AT_LEAST_ONE,
    FRACTION,
    NOT_NEGATIVE,
    POSITIVE,
    check_field_ranges,
    documented,
    ranged,
)

if TYPE_CHECKING:
    from peft_glue.training.tasks import GlueTask

log = logging.getLogger("peft_glue")


@dataclass
class Method:
    """Base class. A method's default learning rate is in its yaml, as ``optimizer.lr`` (the one home of the
    rate: results.json records it there)."""

    name: ClassVar[str]
    export_dir: ClassVar[str]  # folder in the run directory that holds the trained weights
    order: ClassVar[int] = 100  # where the report lists the method (lower first)
    sweeps: ClassVar[dict[str, str]] = {}  # hyperparameters the report plots a sweep of -> what they are

    @classmethod
    def nested_schemas(cls, values: dict) -> dict[str, type]:
        """Dataclasses typing the keys of a mapping field (``training.schema`` checks them): none."""
        return {}

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

    def adapted_modules(self, model: nn.Module) -> list[str]:
        """What training changes (results.json's ``adapted_modules``): the modules whose parameters all
        train, and single trained tensors elsewhere (BitFit's biases)."""
        return trained_parts(model)

    @property
    def notes(self) -> list[str]:
        """How the method placed itself where that needs saying (a role inside a fused matrix)."""
        return list(getattr(self, "_notes", []))

    def refuse(self, model: nn.Module, reason: str) -> UserError:
        """The one-line refusal of a method that cannot apply to this model's family."""
        return UserError(f"method={self.name} cannot run on {family(model)}: {reason}")

    def check_mergeable(self) -> None:
        """Raise a UserError (before training) when ``merged`` cannot work for this method."""

    def check_precision(self, model: nn.Module, precision: str) -> None:
        """Raise a UserError (before training) where this method fails on this model at this precision."""

    def frozen_bf16_exact(self) -> bool:
        """Whether the method uses its frozen ``nn.Linear`` weights only through the layers' own forward, so
        that storing them in bf16 under bf16 autocast trains bit-identically (``frozen_bf16.py``)."""
        return True

    @property
    def virtual_tokens(self) -> int:
        """Positions the method prepends to every input (prompt learning): ``data.max_length`` counts them."""
        return 0

    def configure_optimizer(
        self, model: nn.Module, groups: list[dict], *, lr: float, weight_decay: float, **adamw
    ) -> torch.optim.Optimizer:
        """The optimizer: AdamW over ``groups`` (the trainable parameters, split into those with
        ``weight_decay`` and those without: biases and LayerNorm weights)."""
        return torch.optim.AdamW(groups, lr=lr, **adamw)

    def start_training(self, model: nn.Module, total_steps: int) -> None:
        """Called once the number of optimizer steps of the whole run is known (before the first step)."""

    def training_loss(
        self, model: nn.Module, inputs: dict, labels: torch.Tensor, task: GlueTask
    ) -> torch.Tensor:
        """The loss a training step minimises: the task's loss of the model's logits."""
        return task.loss(model(**inputs).logits, labels)

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step, before the gradients are zeroed."""


def trained_parts(model: nn.Module) -> list[str]:
    """The largest modules whose parameters all train, then each trained tensor outside them."""
    parts: list[str] = []
    for name, module in model.named_modules():
        params = list(module.parameters())
        inside = any(name.startswith(f"{part}.") for part in parts)
        if name and params and not inside and all(p.requires_grad for p in params):
            parts.append(name)
    for name, param in model.named_parameters():
        if param.requires_grad and not any(name.startswith(f"{part}.") for part in parts):
            parts.append(name)
    return parts


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
        backbone = backbone_modules(model)
        if not any(
            n.endswith("bias") and p is not None for m in backbone.values() for n, p in m._parameters.items()
        ):
            raise self.refuse(model, "its layers have no bias terms, so BitFit would train only the head")
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
    r: int = ranged(8, AT_LEAST_ONE, help="the rank of the low-rank update")
    alpha: float = ranged(8, POSITIVE, help="the update is scaled by alpha / r")
    dropout: float = ranged(0.0, FRACTION, help="dropout on the input of the low-rank update")
    target_modules: list[str] | str = documented(
        help="the adapted modules: roles (query, key, value, ...), names, a regex, or all-linear",
        default_factory=lambda: ["query"],
    )

    def __post_init__(self) -> None:
        check_field_ranges("method", vars(self), type(self))
        if not self.target_modules:
            raise UserError("method.target_modules is empty; e.g. method.target_modules=[query,value]")
        if not isinstance(self.target_modules, str):
            self.target_modules = list(self.target_modules)

    def apply(self, model: PreTrainedModel) -> nn.Module:
        targets = resolve(model, self.target_modules, "method.target_modules")
        self._notes = log_notes(self.name, targets.notes)
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets.names,
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

    def adapted_modules(self, model: nn.Module) -> list[str]:
        return peft_adapted_modules(model)


def log_notes(method: str, notes: list[str]) -> list[str]:
    for note in notes:
        log.warning("%s: %s", method, note)
    return notes


def peft_adapted_modules(model: nn.Module) -> list[str]:
    """The modules peft put an adapter on, then the other parts that train (the head, virtual tokens)."""
    tuner = getattr(model, "base_model", None)
    targeted = list(getattr(tuner, "targeted_module_names", []) or [])
    if not targeted:
        return trained_parts(model)
    prefix = "base_model.model."
    # the head trains as peft's copy of it (``classifier.modules_to_save.default``): named as the head
    rest = [p.removeprefix(prefix).split(".modules_to_save")[0] for p in trained_parts(model)]
    return targeted + [p for p in rest if not any(p.startswith(f"{t}.") for t in targeted)]


# ----------------------------------------------------------------------------------------- any peft method
MUTATED_INITS = ("pissa", "olora", "corda")  # initialisations that change the base weights (peft's term)


def peft_config_class(name: str) -> type[PeftConfig]:
    """A peft config class by its name (``IA3Config``) or by its peft type (``IA3``, ``ia3``)."""
    found = getattr(peft, name, None)
    if isinstance(found, type) and issubclass(found, PeftConfig) and found is not PeftConfig:
        return found
    if name.upper() in {t.value for t in PeftType}:
        return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(name.upper())]
    known = sorted(cls.__name__ for cls in PEFT_TYPE_TO_CONFIG_MAPPING.values())
    raise UserError(f"method.config_class={name} is not a peft config class; one of {', '.join(known)}")


def accept_past_key_values(model: PreTrainedModel) -> PreTrainedModel:
    """Let prefix tuning reach the model: transformers 5 renamed BERT's ``past_key_values`` argument to
    ``cache``, and peft (0.21) looks for the old name. Apply to a base model before ``get_peft_model`` or
    ``PeftModel.from_pretrained`` with a prefix-tuning config."""
    if "past_key_values" in inspect.signature(model.forward).parameters:
        return model
    forward = model.forward

    def forward_with_prefix(*args, past_key_values=None, **kwargs):
        return forward(*args, cache=past_key_values, **kwargs)

    model.forward = forward_with_prefix
    return model


def convert_to_plain_lora(folder: Path, initial: dict[str, torch.Tensor]) -> None:
    """Rewrite a saved PiSSA/OLoRA adapter as a LoRA adapter of the original base weights: the trained
    update is B A - B0 A0 = [B | -B0] [A | A0], of rank 2r, with alpha scaled to keep alpha/r (alpha/sqrt(r)
    with rsLoRA). This is what peft's ``path_initial_model_for_weight_conversion`` computes."""
    weights = folder / "adapter_model.safetensors"
    tensors = load_file(weights)
    for key, start in initial.items():
        if ".lora_A." in key:
            tensors[key] = torch.cat([tensors[key], start], dim=0)
        elif ".lora_B." in key:
            tensors[key] = torch.cat([tensors[key], -start], dim=1)
    save_file(tensors, weights, metadata={"format": "pt"})
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["lora_alpha"] *= math.sqrt(2) if config.get("use_rslora") else 2
    config.update(r=2 * config["r"], init_lora_weights=True)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


TARGET_ARGUMENTS = ("target_modules", "feedforward_modules", "exclude_modules")  # take roles
# prompt learning's shape -> the transformers config attribute (aliased per family: DistilBERT's dim)
PROMPT_SHAPE = {
    "num_layers": "num_hidden_layers",
    "token_dim": "hidden_size",
    "num_attention_heads": "num_attention_heads",
}


def needs_default_targets(cls: type[PeftConfig], arguments: dict, model: PreTrainedModel) -> bool:
    """Whether peft would refuse for want of a default target list for this family (its table holds the
    common model types only): then the query and value roles, peft's choice for BERT-like models."""
    if issubclass(cls, PromptLearningConfig) or "target_modules" not in {f.name for f in fields(cls)}:
        return False
    if arguments.get("target_modules") is not None or arguments.get("target_parameters") is not None:
        return False
    return family(model) not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING


def takes_key_value_cache(model: PreTrainedModel) -> bool:
    """Whether the backbone's forward accepts a key/value cache (``cache``, or ``past_key_values`` before
    transformers 5): prefix tuning hands its prefix in through it."""
    backbone = getattr(model, "base_model", model)
    return bool({"cache", "past_key_values"} & set(inspect.signature(backbone.forward).parameters))


@dataclass
class Peft(Method):
    """Any method of ``peft``: ``config_class`` names its config class (``IA3Config``) or peft type (``HRA``),
    ``config`` holds the config's keyword arguments. task_type is SEQ_CLS, so the classification head trains
    too (peft's ``modules_to_save``). Saved in peft's ``save_pretrained`` format, which
    ``PeftModel.from_pretrained`` loads.

        python -m peft_glue.train method=peft method.config_class=HRAConfig +method.config.r=4 \\
            '+method.config.target_modules=[query,value]'
    """

    name = "peft"
    export_dir = ADAPTER_DIR
    order = 50
    config_class: str = documented("LoraConfig", "the peft config class (IA3Config) or peft type (IA3, ia3)")
    config: dict = documented(
        help="that config class's keyword arguments: +method.config.<name>=<value>", default_factory=dict
    )

    def __post_init__(self) -> None:
        self.config = dict(self.config or {})
        self.peft_config()  # a wrong class or argument fails before anything is built

    @classmethod
    def nested_schemas(cls, values: dict) -> dict[str, type]:
        """``method.config`` is typed by the peft config class it names (for the config schema)."""
        return {"config": peft_config_class(str(values.get("config_class", cls.config_class)))}

    def peft_config(self, model: PreTrainedModel | None = None) -> PeftConfig:
        """The peft config; with ``model``, its roles resolved to that model's modules and, for prompt
        learning, the model's width, depth and heads filled in (peft reads them under BERT's names only)."""
        cls = peft_config_class(self.config_class)
        valid = sorted(f.name for f in fields(cls) if f.init and f.name not in ("task_type", "peft_type"))
        unknown = sorted(set(self.config) - set(valid))
        if unknown:
            raise UserError(
                f"{cls.__name__} has no argument {', '.join(unknown)} (method.config); "
                f"its arguments: {', '.join(valid)}"
            )
        arguments = dict(self.config) if model is None else self.for_model(model, cls)
        try:
            return cls(**arguments, task_type=TaskType.SEQ_CLS)
        except (TypeError, ValueError) as error:
            raise UserError(f"method.config of {cls.__name__}: {error}".splitlines()[0]) from error

    def for_model(self, model: PreTrainedModel, cls: type[PeftConfig]) -> dict:
        arguments = dict(self.config)
        notes: list[str] = []
        if needs_default_targets(cls, arguments, model):
            arguments["target_modules"] = ["query", "value"]
            notes.append(f"peft has no default target_modules for {family(model)}: the query and value roles")
        for key in TARGET_ARGUMENTS:
            if arguments.get(key) is not None:
                targets = resolve(model, arguments[key], f"method.config.{key}")
                arguments[key], notes = targets.names, notes + targets.notes
        self._notes = log_notes(self.name, sorted(set(notes)))
        if issubclass(cls, PromptLearningConfig):
            shape = {key: getattr(model.config, attribute, None) for key, attribute in PROMPT_SHAPE.items()}
            if not issubclass(cls, PrefixTuningConfig):  # virtual tokens join the word embeddings, whose
                shape["token_dim"] = model.get_input_embeddings().embedding_dim  # width ALBERT/ELECTRA factor
            for key, value in shape.items():
                if arguments.get(key) is None and value is not None:
                    arguments[key] = value
        return arguments

    @property
    def virtual_tokens(self) -> int:
        config = self.peft_config()
        return config.num_virtual_tokens if config.is_prompt_learning else 0

    def mutated_init(self, config: PeftConfig) -> bool:
        return str(getattr(config, "init_lora_weights", "")).lower().startswith(MUTATED_INITS)

    def apply(self, model: PreTrainedModel) -> nn.Module:
        config = self.peft_config(model)
        if isinstance(config, PrefixTuningConfig):
            if not takes_key_value_cache(model):
                raise self.refuse(
                    model,
                    "its attention takes no key/value cache, which peft's prefix tuning prepends its prefix "
                    "to; prompt_tuning or p_tuning prepend virtual tokens instead",
                )
            accept_past_key_values(model)
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as error:
            where = f"method={self.name}"
            if "target_modules" in self.config:
                where = f"method.config.target_modules={self.config['target_modules']}"
            raise UserError(f"{where}: {error}".splitlines()[0]) from error
        if self.mutated_init(config):
            # PiSSA/OLoRA change the base weights: keep the initial A0, B0 so that save() can write a plain
            # LoRA adapter for the unchanged base (peft's own conversion fails with a trained head in 0.21)
            if config.use_dora or config.rank_pattern or config.alpha_pattern:
                raise UserError(f"method={self.name}: {config.init_lora_weights} with DoRA or rank patterns")
            state = get_peft_model_state_dict(peft_model)
            self._initial = {k: v.detach().clone() for k, v in state.items() if ".lora_" in k}
        return peft_model

    def adapted_modules(self, model: nn.Module) -> list[str]:
        return peft_adapted_modules(model)

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)
        initial = getattr(self, "_initial", None)
        if initial:
            convert_to_plain_lora(folder, initial)

    def load(self, base: PreTrainedModel, folder: Path) -> nn.Module:
        if isinstance(self.peft_config(), PrefixTuningConfig):
            accept_past_key_values(base)
        return PeftModel.from_pretrained(base, folder)

    def frozen_bf16_exact(self) -> bool:
        # DoRA's magnitude divides by the norm of the fp32 base weight (plus the update), outside autocast
        return not getattr(self.peft_config(), "use_dora", False)

    def check_precision(self, model: nn.Module, precision: str) -> None:
        check_bf16_on_deberta(self, model, precision)

    def check_mergeable(self) -> None:
        if self.peft_config().is_prompt_learning:
            raise UserError(
                f"merge=true: {self.name} ({self.config_class}) is prompt learning, which peft cannot "
                "merge into the weights; drop merge=true (the adapter/ export loads with PeftModel)"
            )

    def merged(self, model: nn.Module) -> PreTrainedModel:
        self.check_mergeable()
        try:
            return copy.deepcopy(model).merge_and_unload()
        except (AttributeError, NotImplementedError, ValueError) as error:
            raise UserError(
                f"merge=true: peft cannot merge {self.name} ({self.config_class}): {error}"
            ) from error


# transformers' DeBERTa-v2 attention under bf16 autocast stops with "value cannot be converted to type
# c10::BFloat16 without overflow" when these peft layers replace its projections (found by test_roles).
BF16_OVERFLOW_ON_DEBERTA = {"LoHaConfig", "LoKrConfig", "OFTConfig", "VeraConfig", "FourierFTConfig"}


def check_bf16_on_deberta(method: Peft, model: nn.Module, precision: str) -> None:
    config = peft_config_class(method.config_class).__name__
    if "bf16" in precision and family(model) == "deberta-v2" and config in BF16_OVERFLOW_ON_DEBERTA:
        reason = f"its layers overflow in DeBERTa's attention in {precision}; use trainer.precision=32-true"
        raise method.refuse(model, reason)


@dataclass
class AdaLoRA(Peft):
    """AdaLoRA (Zhang et al., 2023): peft's rank allocator prunes the ranks after every optimizer step.

    ``tinit``/``tfinal`` are fractions of the run's optimizer steps (peft wants steps, known only when
    training starts): no pruning during the first ``tinit``, final ranks fixed for the last ``tfinal``.
    ``tinit_steps``/``tfinal_steps`` give them in steps instead, as the paper's Table 8 does.
    """

    name = "adalora"
    order = 7
    sweeps = {"config.target_r": "AdaLoRA target rank"}
    tinit: float = ranged(0.1, FRACTION, help="the first fraction of the optimizer steps: no rank pruning")
    tfinal: float = ranged(0.2, FRACTION, help="the last fraction of the optimizer steps: final ranks fixed")
    tinit_steps: int | None = ranged(None, NOT_NEGATIVE, help="tinit in optimizer steps (as papers give it)")
    tfinal_steps: int | None = ranged(
        None, NOT_NEGATIVE, help="tfinal in optimizer steps (a paper's schedule)"
    )

    def peft_config(self, model: PreTrainedModel | None = None) -> PeftConfig:
        check_field_ranges("method", vars(self), type(self))
        if self.tinit + self.tfinal >= 1:
            raise UserError(f"method.tinit + method.tfinal must be < 1 (got {self.tinit} + {self.tfinal})")
        self.config.setdefault("total_step", 1_000_000)  # a placeholder until start_training knows it
        return super().peft_config(model)

    def start_training(self, model: nn.Module, total_steps: int) -> None:
        config = model.peft_config["default"]
        config.total_step = total_steps
        config.tinit, config.tfinal = int(self.tinit * total_steps), int(self.tfinal * total_steps)
        if self.tinit_steps is not None:
            config.tinit = self.tinit_steps
        if self.tfinal_steps is not None:
            config.tfinal = self.tfinal_steps
        if config.tinit >= total_steps - config.tfinal:
            raise UserError(f"adalora: {total_steps} optimizer steps leave no budgeting phase; train longer")
        model.base_model.rankallocator.set_total_step(total_steps)

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        model.base_model.update_and_allocate(step)

    def training_loss(
        self, model: nn.Module, inputs: dict, labels: torch.Tensor, task: GlueTask
    ) -> torch.Tensor:
        """The model computes its own loss (the task's: cross-entropy, or MSE for one output), so that peft
        adds AdaLoRA's orthogonal regularisation of P and Q (``orth_reg_weight``) to it."""
        return model(**inputs, labels=labels).loss


@dataclass
class LoraPlus(Peft):
    """LoRA+ (Hayou et al., 2024): LoRA whose B matrices learn ``lr_ratio`` times faster, with the optimizer
    that peft builds (``peft.optimizers.create_loraplus_optimizer``)."""

    name = "loraplus"
    order = 6
    sweeps = {"lr_ratio": "LoRA+ learning-rate ratio"}
    lr_ratio: float = ranged(16.0, POSITIVE, help="the B matrices' learning rate over the A matrices'")

    def configure_optimizer(
        self, model: nn.Module, groups: list[dict], *, lr: float, weight_decay: float, **adamw
    ) -> torch.optim.Optimizer:
        # peft's grouping: A matrices and the head's weights decay; B matrices and 1-d tensors (biases,
        # LayerNorm) at lr * ratio, decaying unless they are biases or LayerNorm weights
        if any("lr" in group for group in groups):
            raise UserError("method=loraplus sets its own learning-rate groups: leave optimizer.head_lr null")
        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=lr,
            loraplus_lr_ratio=self.lr_ratio,
            loraplus_weight_decay=weight_decay,
            **adamw,
        )


def _named(cls_name: str, name: str, order: int, sweeps: dict[str, str], doc: str) -> type[Peft]:
    cls = dataclass(type(cls_name, (Peft,), {"name": name, "order": order, "sweeps": sweeps, "__doc__": doc}))
    cls.__module__ = __name__
    return cls


RANK = {"config.r": "rank r"}
VIRTUAL = {"config.num_virtual_tokens": "virtual tokens"}
# peft methods that need nothing but their config (each has conf/method/<name>.yaml, which cites the paper)
DoRA = _named("DoRA", "dora", 3, RANK, "DoRA (Liu et al., 2024): LoRA on the direction, a learned magnitude.")
RsLoRA = _named("RsLoRA", "rslora", 4, RANK, "rsLoRA (Kalajdzievski, 2023): LoRA scaled by alpha/sqrt(r).")
PiSSA = _named("PiSSA", "pissa", 5, RANK, "PiSSA (Meng et al., 2024): LoRA initialised from the top SVD.")
VeRA = _named("VeRA", "vera", 8, RANK, "VeRA (Kopiczko et al., 2024): shared random matrices.")
FourierFT = _named(
    "FourierFT",
    "fourierft",
    9,
    {"config.n_frequency": "spectral coefficients"},
    "FourierFT (Gao et al., 2024).",
)
LoHa = _named("LoHa", "loha", 10, RANK, "LoHa (Hyeon-Woo et al., 2022): Hadamard product of low-rank pairs.")
LoKr = _named("LoKr", "lokr", 11, RANK, "LoKr (Edalati et al., 2022): Kronecker product update.")
OFT = _named("OFT", "oft", 12, {}, "OFT (Qiu et al., 2023): block-diagonal orthogonal transforms.")
IA3 = _named("IA3", "ia3", 13, {}, "(IA)^3 (Liu et al., 2022): learned rescaling of keys, values, FFN.")
LNTuning = _named("LNTuning", "ln_tuning", 14, {}, "LN tuning (Zhao et al., 2023): LayerNorms train.")
PromptTuning = _named("PromptTuning", "prompt_tuning", 15, VIRTUAL, "Prompt tuning (Lester et al., 2021).")
PTuning = _named("PTuning", "p_tuning", 16, VIRTUAL, "P-tuning (Liu et al., 2021): prompts from an encoder.")
PrefixTuning = _named("PrefixTuning", "prefix_tuning", 17, VIRTUAL, "Prefix tuning (Li & Liang, 2021).")
