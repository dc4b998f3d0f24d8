"""The speed levers of issue 32 side by side in one process: the same training steps (forward, backward,
AdamW) of the framework's model, method and length-grouped batches, as

    fp32           trainer.precision=32-true
    bf16_today     bf16 autocast, frozen weights fp32 and cast at every step (frozen_bf16=false)
    bf16_frozen    bf16 autocast, frozen nn.Linear weights stored in bf16 (frozen_bf16=true, the default)
    bf16_compiled  bf16_frozen with compile=true: torch.compile for dynamic shapes, on the unpadded batches
    bf16_static    the design compile=true replaced: torch.compile(dynamic=False) on batches padded to
                   multiples of --bucket tokens (16), so that each padded length compiles once
    bf16_bucketed  bf16_frozen, eager, on bf16_static's padded batches: what the padding alone costs
    bf16_trunk     bf16_frozen with the frozen LayerNorms and embeddings in bf16 too: activations stay bf16
                   between the layers (no cast before each linear, bf16 residuals): a numerics change

    .venv/bin/python -m benchmarks.compile_step --task sst2 --method lora --steps 20 --rounds 3

Each variant first runs every distinct batch shape once (warm-up; for the compiled one that is where it
compiles, timed apart), then the variants take turns, ``--rounds`` times ``--steps`` steps each, so that noise
from other processes on a shared machine hits them alike; the median samples/s over the rounds is reported,
with every round, the ratios, and the compile break-even (compile seconds / seconds saved per step).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from transformers import DataCollatorWithPadding

from benchmarks.framework_step import FrameworkStep, step_parser, train_step
from peft_glue.training.compiled_step import CompileClock, compile_model
from peft_glue.training.frozen_bf16 import store_frozen_in_bf16

VARIANTS = (
    "fp32", "bf16_today", "bf16_frozen", "bf16_compiled", "bf16_static", "bf16_bucketed", "bf16_trunk",
)  # fmt: skip
BUCKETED = ("bf16_static", "bf16_bucketed")  # the variants that train on batches padded to a bucket
COMPILED = ("bf16_compiled", "bf16_static")
BUCKET = 16  # tokens: bf16_static's default padding multiple


def make_step(setup: FrameworkStep, variant: str) -> Callable[[dict], None]:
    """One training step of a fresh model as ``variant`` runs it."""
    torch.manual_seed(0)
    module = setup.new_module(frozen_bf16=False)  # the variant decides
    model = module.model
    if variant not in ("fp32", "bf16_today"):
        store_frozen_in_bf16(model)
    if variant == "bf16_trunk":
        for layer in model.modules():
            if isinstance(layer, nn.LayerNorm | nn.Embedding):
                for param in layer.parameters(recurse=False):
                    if not param.requires_grad:
                        param.data = param.data.to(torch.bfloat16)
    run = model
    if variant == "bf16_compiled":
        run = compile_model(model)
    elif variant == "bf16_static":
        torch._dynamo.config.recompile_limit = 64  # every padded length, at the full and the last batch size
        torch._inductor.config.fallback_random = True
        run = torch.compile(model, dynamic=False)
    optimizer = setup.new_optimizer(module)
    model.train()
    bf16 = variant != "fp32"

    def step(batch: dict) -> None:
        train_step(module, run, batch, bf16, optimizer)

    return step


def timed(step: Callable[[dict], None], batches: list[dict]) -> float:
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = step_parser(__doc__, steps=20)  # --steps: steps per round and variant
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:4]))
    parser.add_argument("--bucket", type=int, default=BUCKET, help="bf16_static's padding multiple (tokens)")
    args = parser.parse_args()
    setup = FrameworkStep.from_args(args)
    loader = setup.data.train_dataloader()
    plain = [batch for _, batch in zip(range(args.steps), loader, strict=False)]
    setup.data.collate = DataCollatorWithPadding(setup.data.tokenizer, pad_to_multiple_of=args.bucket)
    bucketed = [batch for _, batch in zip(range(args.steps), setup.data.train_dataloader(), strict=False)]
    samples = sum(len(batch["labels"]) for batch in plain)
    tokens = [sum(b["input_ids"].numel() for b in batches) for batches in (plain, bucketed)]
    print(f"tokens a round: {tokens[0]:,} unpadded, {tokens[1]:,} padded to multiples of {args.bucket}")

    steps, warmup = {}, {}
    for variant in args.variants:
        steps[variant] = make_step(setup, variant)
        batches = bucketed if variant in BUCKETED else plain
        firsts = list({tuple(b["input_ids"].shape): b for b in batches}.values())  # each shape once
        with CompileClock() as clock:
            warmup[variant] = (timed(steps[variant], firsts), clock)
        print(f"{variant}: warm-up ({len(firsts)} shapes) {warmup[variant][0]:.1f} s, "
              f"compiling {clock.seconds:.1f} s", flush=True)  # fmt: skip
    speeds: dict[str, list[float]] = {variant: [] for variant in args.variants}
    for round_ in range(args.rounds):
        for variant in args.variants:
            batches = bucketed if variant in BUCKETED else plain
            speeds[variant].append(samples / timed(steps[variant], batches))
        print(f"round {round_ + 1}: " + ", ".join(f"{v} {s[-1]:.1f}" for v, s in speeds.items()), flush=True)
    for variant in COMPILED:
        if variant in warmup:
            print(f"{variant}: {warmup[variant][1].seconds:.1f} s compiling")
    compiling = warmup["bf16_compiled"][1].seconds if "bf16_compiled" in warmup else None
    report(args, speeds, samples / len(plain), compiling)


def report(args, speeds: dict[str, list[float]], batch_size: float, compile_seconds: float | None) -> None:
    median = {variant: statistics.median(values) for variant, values in speeds.items()}
    threads = torch.get_num_threads()
    print(f"\n{args.task} {args.method}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, "
          f"{threads} threads; median samples/s:")  # fmt: skip
    for variant, value in median.items():
        print(f"  {variant:14s} {value:8.1f}   ({', '.join(f'{v:.1f}' for v in speeds[variant])})")
    for ours, theirs in (("bf16_frozen", "bf16_today"), ("bf16_compiled", "bf16_frozen"),
                         ("bf16_compiled", "bf16_today"), ("bf16_frozen", "fp32"),
                         ("bf16_static", "bf16_frozen"), ("bf16_static", "bf16_bucketed"),
                         ("bf16_bucketed", "bf16_frozen"), ("bf16_trunk", "bf16_frozen")):  # fmt: skip
        if ours in median and theirs in median:
            print(f"  {ours} / {theirs}: {median[ours] / median[theirs]:.2f}x")
    if compile_seconds is None or "bf16_frozen" not in median:
        return
    saved = batch_size / median["bf16_frozen"] - batch_size / median["bf16_compiled"]
    even = f"{compile_seconds / saved:,.0f} steps" if saved > 0 else "never (no faster per step)"
    print(f"  compile: {compile_seconds:.1f} s, {1000 * saved:.1f} ms saved a step: pays back after {even}")


if __name__ == "__main__":
    main()
