"""Where a training step's time goes: torch.profiler over the framework's own model, method and batches.

    .venv/bin/python -m benchmarks.profile_step --task sst2 --method lora --steps 20
    .venv/bin/python -m benchmarks.profile_step --task sst2 --method lora --steps 20 --compile

Builds the model and method from the project's config exactly as `python -m peft_glue.train model=minilm`
does, takes length-grouped batches of the real training data from the framework's data module, and profiles
forward, backward and the AdamW step. Prints the operators by self CPU time, grouped into matrix multiplies
(the work a faster precision or kernel speeds up) and everything else (elementwise, normalisation, autograd
and Python overhead), and the matmul FLOP/s (the profiler's count of executed matmul FLOPs) inside the
kernels and over the whole step. ``--compile`` profiles the step as ``compile=true`` runs it, after compiling
it on the same batches; Inductor's fused kernels then show by name (its kernel profile is switched on).
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.framework_step import FrameworkStep, step_parser, train_step
from peft_glue.training.compiled_step import compile_model

MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "mkldnn")
GROUPS = {
    "matrix multiplies": MATMUL_OPS,
    "casts (dtype conversions, copies)": ("aten::to", "aten::_to_copy", "aten::copy_"),
    "attention (sdpa)": ("scaled_dot_product", "_flash_attention", "_efficient_attention"),
    "layer norm": ("layer_norm",),
    "dropout masks": ("bernoulli", "random_", "aten::lt", "random_draws"),
    "compiled fused kernels (elementwise, norms, softmax)": ("cpp_fused",),
    "compiled graphs' own code (Python wrapper)": ("CompiledFxGraph", "CompiledFunction", "Compiled Region"),
    "gelu / elementwise": ("gelu", "dropout", "aten::add", "aten::mul", "aten::div", "aten::sub"),
    "optimizer (AdamW)": ("_foreach", "adam"),
}


def group_of(name: str) -> str:
    for group, markers in GROUPS.items():
        if any(marker in name for marker in markers):
            return group
    return "other (copies, indexing, autograd bookkeeping)"


def main() -> None:
    parser = step_parser(__doc__, steps=20)
    parser.add_argument("--compile", action="store_true", help="the compiled step (compile=true)")
    args = parser.parse_args()
    torch.manual_seed(0)
    setup = FrameworkStep.from_args(args)
    module = setup.new_module().train()
    loader = setup.data.train_dataloader()
    batches = [batch for _, batch in zip(range(args.steps + 3), loader, strict=False)]
    run = module.model
    if args.compile:
        torch._inductor.config.cpp.enable_kernel_profile = True
        run = compile_model(module.model)
        for batch in batches[3:]:  # compile for these batches first (dynamic shapes: once)
            train_step(module, run, batch, setup.bf16, None)
        module.model.zero_grad(set_to_none=True)
    optimizer = setup.new_optimizer(module)
    pending = iter(batches)

    def step() -> None:
        train_step(module, run, next(pending), setup.bf16, optimizer)

    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
        step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = time.perf_counter() - start
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    grouped: dict[str, float] = defaultdict(float)
    for event in events:
        grouped[group_of(event.key)] += event.self_cpu_time_total
    threads = torch.get_num_threads()
    precision = ("compiled, " if args.compile else "") + ("bf16 autocast" if setup.bf16 else "fp32")
    frozen = " (frozen weights in bf16)" if setup.bf16 and setup.cfg.frozen_bf16 else ""
    print(
        f"{args.task} {args.method}, batch {args.batch_size}, {args.steps} steps, {threads} threads, "
        f"{precision}{frozen}"
    )
    print(f"{'share':>6}  {'ms/step':>8}  group")
    for group, micros in sorted(grouped.items(), key=lambda item: -item[1]):
        print(f"{100 * micros / total:5.1f}%  {micros / 1e3 / args.steps:8.1f}  {group}")
    outside = max(0.0, wall * 1e6 - total)  # microseconds of the step not inside any operator
    print(
        f"step {1e3 * wall / args.steps:.1f} ms wall; outside any operator (Python, module "
        f"code, dispatch, profiler) ~{outside / 1e3 / args.steps:.1f} ms"
    )
    flops = sum(event.flops for event in events)  # the profiler counts matmul FLOPs (mm, addmm, bmm)
    matmul_seconds = grouped["matrix multiplies"] / 1e6
    print(
        f"matmul FLOP/s: {flops / matmul_seconds / 1e9:.1f} G inside the matmul kernels, "
        f"{flops / (total / 1e6) / 1e9:.1f} G over the whole step"
    )
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
