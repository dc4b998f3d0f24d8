"""Does torch.compile speed up a training step on this machine? Eager vs compiled, same batches.

    .venv/bin/python -m benchmarks.compile_step --task sst2 --method lora --steps 60

Builds the model, method and length-grouped batches from the project's config as
`python -m peft_glue.train model=minilm` does, then times the same training steps (forward, backward, AdamW)
eagerly and with ``torch.compile(dynamic=True)`` (Inductor fuses dropout and the elementwise ops that the
profile of benchmarks.profile_step shows outside the matrix multiplies). Compilation and the first steps of
each are warm-up, reported apart from steady state.
"""

from __future__ import annotations

import time

import torch

from benchmarks.framework_step import FrameworkStep, step_parser


def timed_steps(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict], warmup: int
) -> tuple[float, float]:
    """(seconds of the first ``warmup`` steps, samples/s of the rest)."""
    module.train()
    marks = []
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == warmup:
            marks.append(time.perf_counter())
        loss = torch.nn.functional.cross_entropy(module(batch), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    end = time.perf_counter()
    samples = sum(len(batch["labels"]) for batch in batches[warmup:])
    return marks[0] - start, samples / (end - marks[0])


def main() -> None:
    parser = step_parser(__doc__, steps=60)  # --steps: timed steps after the warm-up
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    setup = FrameworkStep.from_args(args)
    loader = iter(setup.data.train_dataloader())
    batches = [next(loader) for _ in range(args.warmup + args.steps)]

    results = {}
    for variant in ("eager", "compiled"):
        torch.manual_seed(0)
        module = setup.new_module()
        optimizer = setup.new_optimizer(module)
        if variant == "compiled":
            module = torch.compile(module, dynamic=True)
        results[variant] = timed_steps(module, optimizer, batches, args.warmup)
        print(f"{variant}: first {args.warmup} steps {results[variant][0]:.1f} s, "
              f"then {results[variant][1]:.1f} samples/s", flush=True)  # fmt: skip
    ratio = results["compiled"][1] / results["eager"][1]
    setup_text = f"{args.task}, {args.method}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    print(f"compiled / eager, steady state: {ratio:.2f}x ({setup_text})")


if __name__ == "__main__":
    main()
