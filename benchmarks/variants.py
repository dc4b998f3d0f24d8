"""The variants bench_train compares: (a) the framework, (b), (c), (c') transformers.Trainer baselines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    letter: str
    description: str
    padded: bool = False  # every example padded to max_length
    bf16: bool = False


VARIANTS = {
    "framework": Variant("a", "peft_glue: Lightning + Hydra, per-batch padding, length-grouped batches"),
    "hf_padded": Variant("b", "transformers.Trainer, padded to 128 (run_glue default), fp32", padded=True),
    "hf_dynamic": Variant("c", "transformers.Trainer, dynamic padding + group_by_length, fp32"),
    "hf_dynamic_bf16": Variant(
        "c'", "transformers.Trainer, dynamic padding + group_by_length, bf16", bf16=True
    ),
}
ALIASES = {variant.letter: name for name, variant in VARIANTS.items()} | {"c2": "hf_dynamic_bf16"}


def parse_variants(values: Sequence[str]) -> list[str]:
    """Variant names from names or letters, space- or comma-separated, in (a), (b), (c), (c') order."""
    wanted = {ALIASES.get(v, v) for value in values for v in value.split(",") if v}
    unknown = wanted - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    return [name for name in VARIANTS if name in wanted]
