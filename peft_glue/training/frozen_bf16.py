"""Frozen matmul weights stored in bf16 under bf16 mixed precision.

With ``trainer.precision=bf16-mixed`` autocast runs every ``nn.Linear`` in bf16 and casts its fp32 weight to
bf16 again at every forward. A weight that does not train never changes, so casting it once, when training
starts, gives the same bf16 values without the per-step cast and halves its memory. Only the weights that
autocast would cast anyway are stored in bf16 (the weight and bias of a frozen ``nn.Linear``); embeddings and
LayerNorms, which autocast keeps in fp32, stay fp32, as do every trainable tensor, the optimizer state and
the loss. The fp32 originals wait in host memory and are put back when training ends (``restore_fp32``), so
exports, merges (the fp32 delta added to the fp32 weights) and whoever uses the model afterwards see the
fp32 model; checkpoints hold only trainable (fp32) tensors and are unchanged.
"""

from __future__ import annotations

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


def store_frozen_in_bf16(model: nn.Module) -> dict[str, torch.Tensor]:
    """Cast the frozen ``nn.Linear`` tensors to bf16 in place; returns their fp32 originals, on the CPU
    (``restore_fp32`` puts them back after training, for exports, merges and callers)."""
    originals: dict[str, torch.Tensor] = {}
    for name, param in frozen_linear_tensors(model).items():
        originals[name] = param.detach().to("cpu", copy=True)
        param.data = param.data.to(torch.bfloat16)
    return originals


def restore_fp32(model: nn.Module, originals: dict[str, torch.Tensor]) -> nn.Module:
    """Put the fp32 originals from ``store_frozen_in_bf16`` back (bit for bit), on the model's device."""
    params = dict(model.named_parameters())
    for name, original in originals.items():
        params[name].data = original.to(params[name].device)
    return model
