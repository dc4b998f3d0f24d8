"""Dropout that is cheap on a CPU.

torch draws a CPU dropout mask with ``bernoulli_``, one float per element, which makes dropout a visible
share of a small model's training step on a CPU (measured figures: ``benchmarks/README.md``). Here the mask
comes from raw 32-bit random integers, two 16-bit draws from each: the same Bernoulli(1 - p) keep mask,
inverted scaling 1 / (1 - p), the same torch generator (so ``seed`` still fixes it), at a fraction of the
cost. The keep probability is exact to 2^-15.

BERT's attention dropout runs inside ``scaled_dot_product_attention``; in training on a CPU an attention
function registered with transformers computes softmax(QK^T / sqrt(d) + mask) V itself, with this dropout.
Everything else (evaluation, GPUs, no dropout) goes to transformers' own SDPA attention and torch's dropout.
Nothing changes until ``use_cpu_dropout`` is called: it registers the attention function the first time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "sdpa_cpu_dropout"  # SDPA, with the attention dropout above when training on a CPU


def lane_thresholds(keep: float) -> tuple[int, int] | None:
    """Thresholds for the two int16 halves of a non-negative int32 from ``random_()``, in memory order: the
    low half is uniform over all 16 bits, the high half over 15 (the sign bit is always 0). None when nothing
    would be dropped."""
    low, high = round(keep * 2**16) - 2**15, round(keep * 2**15)
    if low >= 2**15 - 1 or high >= 2**15:
        return None
    return (low, high) if sys.byteorder == "little" else (high, low)


def fast_dropout(x: torch.Tensor, p: float, site: int = 0) -> torch.Tensor:
    """``nn.functional.dropout(x, p, training=True)``, with the mask drawn from 16-bit random integers.
    ``site`` tells dropouts of the same tensor apart in a compiled graph (``random_draws``)."""
    if p >= 1.0:
        return torch.zeros_like(x)
    thresholds = lane_thresholds(1.0 - p)
    if thresholds is None:
        return x
    if torch.compiler.is_compiling():
        keep = lane_keep(random_draws(x, site), thresholds, x.numel()).view(x.shape)
    else:
        keep = lane_mask(x.shape, thresholds, torch.lt, x.device)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def lane_mask(
    shape: torch.Size, thresholds: tuple[int, int], compare: Callable, device: torch.device | None = None
) -> torch.Tensor:
    """A boolean tensor of ``shape``: ``compare`` (``torch.lt`` for a keep mask) of each 16-bit draw of
    fresh ``random_()`` int32s against its lane's threshold from ``lane_thresholds``."""
    n = shape.numel()
    draws = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_()
    halves = draws.view(torch.int16).view(-1, 2)
    mask = torch.empty(halves.shape, dtype=torch.bool, device=device)
    for lane, threshold in enumerate(thresholds):  # per half: 2x faster than one broadcast
        compare(halves[:, lane], threshold, out=mask[:, lane])
    return mask.view(-1)[:n].view(shape)


def lane_keep(draws: torch.Tensor, thresholds: tuple[int, int], n: int) -> torch.Tensor:
    """``lane_mask``'s keep mask (flat, ``n`` long) from its int32 ``draws``, written for the compiler: the
    threshold of element i is its lane's, picked by the parity of i, so that Inductor fuses the compare
    into the kernel that applies the mask (no mask tensor of its own, no strided writes)."""
    halves = draws.view(torch.int16)[:n]
    odd = torch.arange(n, device=draws.device) % 2
    return halves < thresholds[0] + (thresholds[1] - thresholds[0]) * odd


@torch.library.custom_op(
    "peft_glue::random_draws", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,)
)
def random_draws(x: torch.Tensor, site: int) -> torch.Tensor:
    """``lane_mask``'s int32 draws for a dropout of ``x``, as a custom op for ``torch.compile``: Dynamo
    cannot trace ``random_()`` (a graph break at every dropout), and an op of its own keeps torch's
    generator, so a compiled step draws the masks an eager one draws. The compiler merges calls with equal
    arguments, so each takes ``x`` (ordered after what computes it) and its dropout's ``site`` (LoRA's
    dropouts of query and value see the same ``x``); tagged nondeterministic, so that it is not recomputed
    in the backward."""
    return torch.empty((x.numel() + 1) // 2, dtype=torch.int32, device=x.device).random_()


@random_draws.register_fake
def _(x: torch.Tensor, site: int) -> torch.Tensor:
    return torch.empty(((x.numel() + 1) // 2,), dtype=torch.int32, device=x.device)


class CpuDropout(nn.Dropout):
    """``nn.Dropout`` that draws its mask with ``fast_dropout`` for tensors on a CPU."""

    site = 0  # which dropout of the model it is (use_cpu_dropout numbers them)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0 and x.device.type == "cpu":
            return fast_dropout(x, self.p, self.site)
        return super().forward(x)


def sdpa_with_cpu_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except for training with dropout on a CPU (module docstring)."""
    causal = kwargs.get("is_causal", getattr(module, "is_causal", False))
    if dropout == 0.0 or query.device.type != "cpu" or causal:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling or query.size(-1) ** -0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA's mask: True = attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = fast_dropout(scores.softmax(dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Make ``ATTENTION`` known to transformers (idempotent)."""
    AttentionInterface.register(ATTENTION, sdpa_with_cpu_dropout)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_cpu_dropout(model: PreTrainedModel) -> PreTrainedModel:
    """Swap the model's dropouts for ``CpuDropout`` and, where it uses SDPA, its attention for
    ``sdpa_with_cpu_dropout``. Nothing changes on a GPU, and exports are unaffected (transformers does not
    save the attention choice in config.json)."""
    sites = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                sites += 1
                dropout = CpuDropout(child.p, child.inplace)
                dropout.site = sites
                setattr(parent, name, dropout)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        register_attention()
        model.set_attn_implementation(ATTENTION)
    return model
