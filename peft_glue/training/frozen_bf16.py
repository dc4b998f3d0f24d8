"""Frozen matmul weights stored in bf16 under bf16 mixed precision.

With ``trainer.precision=bf16-mixed`` autocast runs every ``nn.Linear`` in bf16 and casts its fp32 weight to
bf16 again at every forward. A weight that does not train never changes, so casting it once, when training
starts, gives the same bf16 values without the per-step cast and halves its memory. Only the weights that
autocast would cast anyway are stored in bf16 (the weight and bias of a frozen ``nn.Linear``); embeddings and
LayerNorms, which autocast keeps in fp32, stay fp32, as do every trainable tensor, the optimizer state and
the loss. Checkpoints and adapter/BitFit exports hold only trainable (fp32) tensors and are unchanged; a
merged export puts the fp32 originals back first (``fp32_frozen_weights``) and adds the fp32 delta to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

BF16_MIXED = ("bf16-mixed", "bf16")  # Lightning's names of bf16 autocast (bf16-true casts everything anyway)


def wants_frozen_bf16(enabled: bool, precision: str | int | None, model: nn.Module, exact: bool) -> bool:
    """Whether to store the frozen weights in bf16: asked for (``frozen_bf16``), under bf16 autocast, some
    weight frozen, and the method ``exact`` (``Method.frozen_bf16_exact``: training stays bit-identical)."""
    frozen = any(not p.requires_grad for p in model.parameters())
    return enabled and exact and str(precision) in BF16_MIXED and frozen


def frozen_linear_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """The frozen fp32 weights and biases of the model's ``nn.Linear`` layers (peft's wrapped base layers
    included), by parameter name: what autocast would cast to bf16 at every step."""
    found: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad and param.dtype == torch.float32:
                found[f"{module_name}.{name}" if module_name else name] = param
    return found


def store_frozen_in_bf16(model: nn.Module, keep_fp32: bool = False) -> dict[str, torch.Tensor]:
    """Cast the frozen ``nn.Linear`` tensors to bf16 in place; returns their fp32 originals (on the CPU)
    when ``keep_fp32`` (a merged export needs them), else an empty dict."""
    originals: dict[str, torch.Tensor] = {}
    for name, param in frozen_linear_tensors(model).items():
        if keep_fp32:
            originals[name] = param.detach().to("cpu", copy=True)
        param.data = param.data.to(torch.bfloat16)
    return originals


@contextlib.contextmanager
def fp32_frozen_weights(model: nn.Module, originals: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Inside: the model with its fp32 original frozen weights back (bit for bit), for exporting; after:
    bf16 again."""
    params = dict(model.named_parameters())
    stored = {name: params[name].data for name in originals}
    try:
        for name, original in originals.items():
            params[name].data = original.to(stored[name].device)
        yield model
    finally:
        for name, data in stored.items():
            params[name].data = data
