"""Candidate speed-ups for a CPU training step, each timed against what peft_glue does now.

    .venv/bin/python -m benchmarks.micro_levers            # all three
    .venv/bin/python -m benchmarks.micro_levers attention  # or: dropout, matmul

After cpu_dropout, a third of a step is still outside the matrix multiplies (benchmarks.profile_step).
Each check here times one idea for that third on the shapes of a MiniLM step (batch 32, 12 heads of 32,
hidden 384, SST-2 ~15 and MRPC ~55 tokens), forward and backward, median of many calls in one process:

  attention  training.cpu_dropout's attention vs one that folds the 1/sqrt(d) scale and the padding mask
             into the QK^T matmul (baddbmm), saving two passes over the scores forward and backward
  dropout    fast_dropout (x * float mask) vs the mask applied with masked_fill or torch.where
  matmul     a Linear's x @ W^T (what nn.Linear runs) vs x @ a pre-transposed copy of W, in GFLOP/s

A lever is worth building only if it beats the current code by more than this machine's noise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from peft_glue.training.cpu_dropout import fast_dropout, lane_mask, lane_thresholds, sdpa_with_cpu_dropout

HEADS, HEAD_DIM, HIDDEN, BATCH, P = 12, 32, 384, 32, 0.1


def median_ms(run: Callable[[], None], calls: int = 40, warmup: int = 5) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def fused_scale_mask_attention(
    module: torch.nn.Module | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
) -> tuple[torch.Tensor, None]:
    """The candidate: softmax(mask + scale * QK^T) in one baddbmm, then fast_dropout and the weighted sum."""
    batch, heads, length, dim = query.shape
    q = query.reshape(batch * heads, length, dim)
    k_t = key.reshape(batch * heads, length, dim).transpose(1, 2)
    if attention_mask is None:
        bias, beta = q.new_zeros(()).expand(batch * heads, length, length), 0.0
    else:  # SDPA's boolean mask, True = attend
        bias = torch.zeros(attention_mask.shape, dtype=query.dtype)
        bias.masked_fill_(~attention_mask, torch.finfo(query.dtype).min)
        bias, beta = bias.expand(batch, heads, length, length).reshape(batch * heads, length, length), 1.0
    scores = torch.baddbmm(bias, q, k_t, beta=beta, alpha=scaling)
    weights = fast_dropout(scores.softmax(dim=-1), dropout)
    out = torch.bmm(weights, value.reshape(batch * heads, length, dim))
    return out.view(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def attention_inputs(length: int, padded: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """q, k, v in the (batch, heads, length, dim) view of a (batch, length, hidden) projection, as BERT
    passes them, and SDPA's boolean padding mask (a quarter of the batch 5 tokens shorter) or None."""

    def projection() -> torch.Tensor:
        return torch.randn(BATCH, length, HEADS, HEAD_DIM).transpose(1, 2).requires_grad_()

    mask = None
    if padded:
        keep = torch.ones(BATCH, length, dtype=torch.bool)
        keep[: BATCH // 4, length - 5 :] = False
        mask = keep[:, None, None, :].expand(BATCH, 1, length, length)
    return [projection() for _ in range(3)], mask


def check_attention() -> None:
    (q, k, v), mask = attention_inputs(9, padded=True)
    outputs = []
    for attention in (sdpa_with_cpu_dropout, fused_scale_mask_attention):
        torch.manual_seed(0)  # same dropout mask
        outputs.append(attention(None, q, k, v, mask, scaling=HEAD_DIM**-0.5, dropout=P)[0])
    assert torch.allclose(*outputs, atol=1e-5), "the candidate computes something else"
    print("attention, forward + backward, ms (median of 40):  current  baddbmm")
    for length in (15, 55, 100):
        for padded in (False, True):
            (q, k, v), mask = attention_inputs(length, padded)
            times = []
            for attention in (sdpa_with_cpu_dropout, fused_scale_mask_attention):

                def run(attention=attention, q=q, k=k, v=v, mask=mask) -> None:
                    out = attention(None, q, k, v, mask, scaling=HEAD_DIM**-0.5, dropout=P)[0]
                    out.backward(torch.ones_like(out))

                times.append(median_ms(run))
            case = f"length {length:3d}, {'padded' if padded else 'no mask'}"
            print(f"  {case}: {times[0]:8.2f} {times[1]:8.2f}")


def masked_fill_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return _drop_mask_candidate(x, p, lambda scaled, drop: scaled.masked_fill_(drop, 0))


def where_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return _drop_mask_candidate(x, p, lambda scaled, drop: torch.where(drop, 0.0, scaled))


def _drop_mask_candidate(
    x: torch.Tensor, p: float, apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """fast_dropout's draws, compared into a drop mask (not a keep mask) that ``apply`` zeroes with."""
    thresholds = lane_thresholds(1.0 - p)
    assert thresholds is not None
    return apply(x * (1.0 / (1.0 - p)), lane_mask(x.shape, thresholds, torch.ge))


def check_dropout() -> None:
    candidates = {"x * mask (now)": fast_dropout, "masked_fill": masked_fill_dropout, "where": where_dropout}
    x = torch.randn(64, 64)
    for candidate in candidates.values():
        torch.manual_seed(0)
        kept = candidate(x, P) != 0
        assert abs(kept.float().mean().item() - (1 - P)) < 0.03, "keep rate off"
    print("dropout, forward + backward, ms (median of 40):  " + "  ".join(candidates))
    for shape in ((BATCH, 15, HIDDEN), (BATCH, HEADS, 15, 15), (BATCH, 55, HIDDEN), (BATCH, HEADS, 55, 55)):
        x = torch.randn(shape, requires_grad=True)
        times = []
        for candidate in candidates.values():

            def run(candidate=candidate, x=x) -> None:
                out = candidate(x, P)
                out.backward(torch.ones_like(out))

            times.append(median_ms(run))
        print(f"  {str(shape):18s} " + "  ".join(f"{t:8.2f}" for t in times))


def check_matmul() -> None:
    print("Linear forward, GFLOP/s (median of 40):  x @ W^T (nn.Linear)  x @ W^T pre-transposed")
    for tokens in (448, 1760):  # an SST-2 and an MRPC batch of 32
        for fan_in, fan_out in ((HIDDEN, HIDDEN), (HIDDEN, 4 * HIDDEN), (4 * HIDDEN, HIDDEN)):
            x, weight, bias = torch.randn(tokens, fan_in), torch.randn(fan_out, fan_in), torch.randn(fan_out)
            transposed = weight.t().contiguous()
            flops = 2 * tokens * fan_in * fan_out
            rates = []
            for w in (weight.t(), transposed):
                rates.append(flops / median_ms(lambda b=bias, x=x, w=w: torch.addmm(b, x, w)) / 1e6)
            print(f"  {tokens:5d} x {fan_in:4d} -> {fan_out:4d}: {rates[0]:8.1f} {rates[1]:8.1f}")


CHECKS = {"attention": check_attention, "dropout": check_dropout, "matmul": check_matmul}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checks", nargs="*", help=f"any of {', '.join(CHECKS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.checks) - CHECKS.keys()
    if unknown:
        parser.error(f"unknown check {', '.join(sorted(unknown))}; choose from {', '.join(CHECKS)}")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.checks or CHECKS:
        CHECKS[name]()


if __name__ == "__main__":
    main()
