"""The variants bench_train compares: the framework as a user runs it (a) and with the speed levers of issue
32 switched (a0, a32, ac), and the transformers.Trainer baselines (b), (c), (c')."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    letter: str
    description: str
    padded: bool = False  # every example padded to max_length
    bf16: bool = False
    framework: tuple[str, ...] | None = None  # a framework run: `python -m peft_glue.train` + these overrides

    @property
    def compiled(self) -> bool:
        return "compile=true" in (self.framework or ())


VARIANTS = {
    "framework": Variant(
        "a", "peft_glue: Lightning + Hydra, per-batch padding, length-grouped batches", framework=()
    ),
    "framework_today": Variant(
        "a0",
        "as (a), frozen weights in fp32 and cast at every step (frozen_bf16=false)",
        framework=("frozen_bf16=false",),
    ),
    "framework_fp32": Variant(
        "a32", "as (a) in fp32 (trainer.precision=32-true)", framework=("trainer.precision=32-true",)
    ),
    "framework_compiled": Variant(
        "ac",
        "as (a) with compile=true (torch.compile, dynamic shapes)",
        framework=("compile=true",),
    ),
    "hf_padded": Variant("b", "transformers.Trainer, padded to 128 (run_glue default), fp32", padded=True),
    "hf_dynamic": Variant("c", "transformers.Trainer, dynamic padding + group_by_length, fp32"),
    "hf_dynamic_bf16": Variant(
        "c'", "transformers.Trainer, dynamic padding + group_by_length, bf16", bf16=True
    ),
}
ALIASES = {variant.letter: name for name, variant in VARIANTS.items()} | {"c2": "hf_dynamic_bf16"}


def parse_variants(values: Sequence[str]) -> list[str]:
    """Variant names from names or letters, space- or comma-separated, in the order of ``VARIANTS``."""
    wanted = {ALIASES.get(v, v) for value in values for v in value.split(",") if v}
    unknown = wanted - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    return [name for name in VARIANTS if name in wanted]
