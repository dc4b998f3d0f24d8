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
import time

import torch
from torch import nn

LENGTH_BUCKET = 16  # tokens: multiples of it, up to data.max_length


def compile_model(model: nn.Module, max_length: int, dynamic: bool = False) -> nn.Module:
    """``torch.compile`` of the model for fixed shapes, allowed enough recompilations for every bucket at
    the full batch size and at the epoch's last, shorter batch (``dynamic``: one graph for every length,
    measured by benchmarks/compile_step.py)."""
    shapes = 2 * math.ceil(max_length / LENGTH_BUCKET) + 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, shapes)
    torch._inductor.config.fallback_random = True
    return torch.compile(model, dynamic=dynamic)


class CompileClock:
    """Inside ``with``: the wall seconds spent compiling (``seconds``), from Dynamo's compile start and end
    callbacks, which fire around every graph compile, the lazily compiled backward graphs included."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _start(self, _args: object) -> None:
        self._started = time.perf_counter()

    def _end(self, _args: object) -> None:
        self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> CompileClock:
        torch._dynamo.callback_handler.register_start_callback(self._start)
        torch._dynamo.callback_handler.register_end_callback(self._end)
        return self

    def __exit__(self, *exc: object) -> None:
        torch._dynamo.callback_handler.remove_start_callback(self._start)
        torch._dynamo.callback_handler.remove_end_callback(self._end)
