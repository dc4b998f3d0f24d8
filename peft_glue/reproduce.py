"""Train a finished run's configuration again and say whether its metrics match: bitwise where the code,
libraries and hardware are the same (every metric and the exported weights' bytes), else the differences in
metrics, weights and environment.

    python -m peft_glue.reproduce outputs/runs/<run>                 # or its results.json, or a model card
    python -m peft_glue.reproduce <run> --out outputs/reproduce/x    # where the new run goes

The new run is ``python -m peft_glue.train`` with the original's command-line overrides (and its seed),
in a process of its own, as a user would start it. Exit status 0: metrics and weights match bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from peft_glue.errors import UserError, exit_with
from peft_glue.record import RESULTS_FILE, SAVED_OVERRIDES, Provenance, RunResults, read_results

TRAIN_COMMAND = "python -m peft_glue.train"


def run_folder_of(path: Path) -> Path:
    """The run folder of a run folder, its results.json, or the model card of one of its export folders."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run folder, its results.json or a model card")
    if path.is_dir():
        return path
    run = path.parent if path.name == RESULTS_FILE else path.parent.parent  # <run>/<export>/README.md
    if not (run / RESULTS_FILE).is_file():
        raise UserError(f"{path}: no run folder around it; reproduce needs the run's {RESULTS_FILE}")
    return run


def original_of(run: Path) -> tuple[RunResults, list[str]]:
    """The run's record and its command-line overrides (results.json's, else Hydra's saved copy)."""
    results = read_results(run)
    if results is None:
        raise UserError(f"{run} holds no {RESULTS_FILE}; give a finished run folder")
    overrides = list(results.overrides)
    if not overrides and (run / SAVED_OVERRIDES).is_file():
        overrides = [str(o) for o in yaml.safe_load((run / SAVED_OVERRIDES).read_text()) or []]
    return results, overrides


def command_of(overrides: list[str], seed: int | None, out: Path) -> list[str]:
    """The training command: the original overrides, its seed when they did not set it, the new folder."""
    keys = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    extra = [f"seed={seed}"] if seed is not None and "seed" not in keys else []
    kept = [o for o in overrides if not o.split("=", 1)[0].startswith(("hydra.run.dir", "resume"))]
    return [sys.executable, "-m", "peft_glue.train", *kept, *extra, f"hydra.run.dir={out}"]


def metrics_of(results: RunResults) -> dict[str, float]:
    """Every number the run measured: each epoch's validation metrics, the best, the last, and test."""
    values: dict[str, float] = {}
    for epoch, metrics in enumerate(results.val_history):
        values.update({f"val_history[{epoch}].{key}": value for key, value in metrics.items()})
    for which, metrics in (results.val or {}).items():
        values.update({f"val.{which}.{key}": value for key, value in metrics.items()})
    values.update({f"test.{key}": value for key, value in (results.test or {}).items()})
    return values


def metric_differences(original: RunResults, again: RunResults) -> list[str]:
    """The metrics that are not bit-for-bit the same (floats compared exactly; NaN equals NaN)."""
    before, after = metrics_of(original), metrics_of(again)
    differences = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        both_nan = isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new)
        if old != new and not both_nan:
            shift = f" ({new - old:+.3g})" if isinstance(old, float) and isinstance(new, float) else ""
            differences.append(f"{key}: {old} -> {new}{shift}")
    return differences


def weights_differences(original_run: Path, original: RunResults, new_run: Path) -> list[str]:
    """The exported weight files (``*.safetensors`` of the method's export) whose bytes differ."""
    export = Path((original.exports or {}).get("weights", "")).name
    if not export or not (original_run / export).is_dir():
        return [f"{original_run} has no exported weights to compare"]
    differences = []
    for file in sorted((original_run / export).glob("*.safetensors")):
        again = new_run / export / file.name
        if not again.is_file() or sha256_of(file) != sha256_of(again):
            differences.append(f"{export}/{file.name}: the trained weights differ")
    return differences


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment_differences(original: Provenance | None, again: Provenance | None) -> list[str]:
    """Where the two runs' code, libraries, hardware, precision, data or base model differ."""
    if original is None:
        return ["the original run records no provenance (a run of a peft_glue version before it)"]
    if again is None:
        return ["the new run records no provenance"]
    differences = []
    if original.code() != again.code():
        differences.append(f"code: {original.code()} -> {again.code()}")
    for part in ("libraries", "hardware", "data", "base_model"):
        old, new = getattr(original, part), getattr(again, part)
        differences += [
            f"{part}.{key}: {old.get(key)} -> {new.get(key)}"
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key) and key != "path"  # where a base model was read may differ
        ]
    if original.precision != again.precision:
        differences.append(f"precision: {original.precision} -> {again.precision}")
    return differences


def reproduce(path: Path, out: Path) -> tuple[list[str], list[str]]:
    """Train again into ``out``; returns (metric and weight differences, environment differences)."""
    run = run_folder_of(path)
    original, overrides = original_of(run)
    command = command_of(overrides, original.seed, out)
    print("$ " + " ".join([TRAIN_COMMAND, *map(shlex.quote, command[3:])]), flush=True)
    done = subprocess.run(command, check=False)
    again = read_results(out)
    if done.returncode != 0 or again is None:
        raise UserError(f"the new run failed (exit {done.returncode}); see {out}")
    differences = metric_differences(original, again) + weights_differences(run, original, out)
    return differences, environment_differences(original.provenance, again.provenance)


def verdict(metrics: list[str], environment: list[str]) -> str:
    if not metrics:
        return "reproduced: every metric and the exported weights match bit for bit" + (
            f" (though the environment differs: {'; '.join(environment)})" if environment else ""
        )
    where = (
        "on the same code, libraries, hardware and data"
        if not environment
        else "in another environment: " + "; ".join(environment)
    )
    return f"not reproduced {where}. What differs:\n  " + "\n  ".join(metrics)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m peft_glue.reproduce", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run", type=Path, help="a finished run folder, its results.json or a model card")
    parser.add_argument("--out", type=Path, help="the new run's folder (default: outputs/reproduce/<run>)")
    args = parser.parse_args(argv)
    try:
        out = args.out or Path("outputs") / "reproduce" / run_folder_of(args.run).resolve().name
        metrics, environment = reproduce(args.run, out)
    except UserError as error:
        exit_with(str(error))
    print(verdict(metrics, environment))
    sys.exit(1 if metrics else 0)


if __name__ == "__main__":
    main()
