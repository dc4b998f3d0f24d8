"""FLOP counts: the analytic training FLOPs of a BERT classifier, and the machine's measured matmul peak."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FlopModel:
    """Analytic matmul FLOPs of training a BERT encoder classifier.

    Forward, per token and layer: 2*(4*h*h + 2*h*i) for the Q/K/V/output projections and the feed-forward,
    plus 2*2*seq*h for the attention scores and the weighted sum; per example: pooler and classifier. Backward
    costs 2x forward for a trainable weight matmul (input and weight gradients) but 1x for a frozen one (input
    gradient only), and 2x for the attention matmuls (both operands are activations). So training is
    3x forward for full fine-tuning; for LoRA and BitFit the frozen projections count 2x and the attention 3x
    (LoRA's adapters, a small extra, count 3x). Embedding lookups, softmax, LayerNorm, GELU, biases and the
    optimizer step are not counted.
    """

    layers: int
    hidden: int
    intermediate: int
    method: str
    num_labels: int = 2
    lora_r: int = 0
    lora_targets: int = 1  # adapted h -> h projections per layer (e.g. 1 for target_modules=[query])

    def example_flops(self, tokens: int, seq: int) -> float:
        """Training FLOPs of one example of ``tokens`` tokens, each attending to ``seq`` positions."""
        h, i = self.hidden, self.intermediate
        linear = 2 * (4 * h * h + 2 * h * i)
        attention = 2 * 2 * seq * h
        # x@A (h->r) and @B (r->h) on each adapted projection
        lora = 2 * 2 * h * self.lora_r * self.lora_targets if self.method == "lora" else 0
        linear_factor = 3 if self.method == "full" else 2
        per_token = self.layers * (linear_factor * linear + 3 * attention + 3 * lora)
        head = 2 * h * h + 2 * h * self.num_labels
        return tokens * per_token + 3 * head

    def useful(self, lengths: Iterable[int]) -> float:
        """Real tokens only, each attending to the real tokens of its own example."""
        return sum(self.example_flops(length, length) for length in lengths)

    def executed(self, shapes: Iterable[tuple[int, int]]) -> float:
        """What dense kernels compute: every position of each (batch size, padded length) batch."""
        return sum(count * self.example_flops(length, length) for count, length in shapes)


def matmul_peak(size: int | None = None) -> dict:
    """The machine's matmul peak: best time of a square matmul, fp32 and bf16, torch's default threads
    (``size`` defaults to 2048 on a CPU, 8192 on a GPU)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = size or (8192 if device == "cuda" else 2048)

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def best_flops(dtype: torch.dtype, repeats: int = 5) -> float:
        a = torch.randn(size, size, dtype=dtype, device=device)
        b = torch.randn(size, size, dtype=dtype, device=device)
        a @ b  # warm-up: kernel selection, page faults
        synchronize()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            synchronize()
            best = min(best, time.perf_counter() - start)
        return 2 * size**3 / best

    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "size": size,
        "fp32": best_flops(torch.float32),
        "bf16": best_flops(torch.bfloat16),
    }
