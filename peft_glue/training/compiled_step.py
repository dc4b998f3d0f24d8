"""A training step compiled with ``torch.compile`` (``compile``).

Inductor fuses the elementwise work around the matrix multiplies (dropout, GELU, bias adds, casts) that the
profile of ``benchmarks.profile_step`` shows outside them. The graph is compiled for dynamic shapes: one
compilation serves every batch length, so batches keep their own length (padding them to a few fixed lengths
instead cost more than the compiled step saved: ``benchmarks.compile_step``, docs/explanation/speed.md).
Evaluation stays eager, so it compiles nothing. ``fallback_random`` keeps torch's own random generator for
dropout, so a seed draws the same masks as an eager step and results differ only by floating-point
reassociation.

``compile: null`` (the default) compiles only where it was measured to pay back: bf16 on a CPU with AMX, in
a run of at least ``PAYS_BACK_AFTER_STEPS`` optimizer steps.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from peft_glue.training.frozen_bf16 import BF16_MIXED
from peft_glue.training.hardware import cpu_has_amx

# SST-2 LoRA on MiniLM, batch 32, 2-core Xeon with AMX (benchmarks.bench_train): 59.7 s of one-off cost
# (16.0 s with Inductor's cache warm) against 14.2 ms saved a step: even after 4,196 steps (1,126 warm).
PAYS_BACK_AFTER_STEPS = 5_000


def wants_compile(
    setting: bool | None, steps: float, precision: str | int | None, device: torch.device
) -> bool:
    """``compile`` as set; unset (None): on a CPU with AMX under bf16 autocast when the run takes at least
    ``PAYS_BACK_AFTER_STEPS`` optimizer steps (elsewhere unmeasured, or measured not to pay)."""
    if setting is not None:
        return setting
    fast_cpu = device.type == "cpu" and str(precision) in BF16_MIXED and cpu_has_amx()
    return fast_cpu and steps >= PAYS_BACK_AFTER_STEPS


def compile_model(model: nn.Module, eager_on_error: bool = False) -> nn.Module:
    """``torch.compile`` of the model for dynamic shapes (every batch length and size from one graph; a
    batch of one example may add a second). ``eager_on_error``: what Dynamo cannot compile runs eagerly
    (with its warning) instead of failing the run, for a compilation nobody asked for (``compile`` unset)."""
    torch._inductor.config.fallback_random = True
    if eager_on_error:
        torch._dynamo.config.suppress_errors = True
    return torch.compile(model, dynamic=True)


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
