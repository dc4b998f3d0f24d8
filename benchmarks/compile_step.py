"""Does torch.compile speed up a training step on this machine? Eager vs compiled, same batches.

    .venv/bin/python benchmarks/compile_step.py --task sst2 --method lora --steps 60

Builds the model, method and length-grouped batches as `python -m peft_glue.train model=minilm` does, then
times the same training steps (forward, backward, AdamW) eagerly and with ``torch.compile(dynamic=True)``
(Inductor fuses dropout and the elementwise ops that the profile of profile_step.py shows outside the
matrix multiplies). Compilation and the first steps of each are warm-up, reported apart from steady state.
"""

from __future__ import annotations

import time

import torch
from profile_step import new_method, new_model, step_parser, training_data  # this folder's sibling script

from peft_glue.data import MODEL_INPUTS


def timed_steps(model: torch.nn.Module, batches: list[dict], lr: float, warmup: int) -> tuple[float, float]:
    """(seconds of the first ``warmup`` steps, samples/s of the rest)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    marks = []
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == warmup:
            marks.append(time.perf_counter())
        inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
        loss = torch.nn.functional.cross_entropy(model(**inputs).logits, batch["labels"])
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
    task, path, data = training_data(args)
    loader = iter(data.train_dataloader())
    batches = [next(loader) for _ in range(args.warmup + args.steps)]

    results = {}
    for variant in ("eager", "compiled"):
        torch.manual_seed(0)
        method = new_method(args.method)
        model = new_model(args, method, task, path)
        if variant == "compiled":
            model = torch.compile(model, dynamic=True)
        results[variant] = timed_steps(model, batches, method.lr, args.warmup)
        print(f"{variant}: first {args.warmup} steps {results[variant][0]:.1f} s, "
              f"then {results[variant][1]:.1f} samples/s", flush=True)  # fmt: skip
    ratio = results["compiled"][1] / results["eager"][1]
    setup = f"{args.task}, {args.method}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    print(f"compiled / eager, steady state: {ratio:.2f}x ({setup})")


if __name__ == "__main__":
    main()
