"""A training step compiled with ``torch.compile`` (``compile=true``).

Inductor fuses the elementwise work around the matrix multiplies (dropout, GELU, bias adds, casts) that the
profile of ``benchmarks.profile_step`` shows outside them. Each new input shape costs a compilation (tens of
seconds on a CPU), so training batches are padded to multiples of ``LENGTH_BUCKET`` tokens
(``data.BucketPadding``): at most ``max_length / LENGTH_BUCKET`` lengths, each compiled once per batch size.
Evaluation stays eager, so it compiles nothing. ``fallback_random`` keeps torch's own random generator for
dropout, so a seed draws the same masks as an eager step and results differ only by floating-point
reassociation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LENGTH_BUCKET = 16  # tokens: multiples of it, up to data.max_length


def compile_model(model: nn.Module, max_length: int) -> nn.Module:
    """``torch.compile`` of the model for fixed shapes, allowed enough recompilations for every bucket at
    the full batch size and at the epoch's last, shorter batch."""
    shapes = 2 * math.ceil(max_length / LENGTH_BUCKET) + 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, shapes)
    torch._inductor.config.fallback_random = True
    return torch.compile(model, dynamic=False)


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (Dynamo's frame compiles and the lazily compiled
    backward graphs): subtract two readings to get a run's compile time."""
    from torch._dynamo.utils import calculate_time_spent

    return float(calculate_time_spent().get("total_wall_time", 0.0))
