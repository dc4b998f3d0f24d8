"""Training throughput of peft_glue against a plain transformers.Trainer + peft baseline.

Every variant trains the same model (all-MiniLM-L6-v2, or --model: another conf/model option, a model folder,
or a family name such as roberta, built randomly initialised at MiniLM's size), with the same method, batch
size, seed and the same N training examples, for --epochs epochs (2), without evaluation or checkpoints;
the last epoch, with the same examples as the first and none of a run's one-off costs (compiling, first
allocations), gives each variant's steady speed:

  (a) framework        python -m peft_glue.train (Lightning + Hydra), per-batch padding, length grouping
  (b) hf_padded        transformers.Trainer, every example padded to 128 tokens (run_glue.py's default), fp32
  (c) hf_dynamic       transformers.Trainer, DataCollatorWithPadding + group_by_length sampling, fp32
  (c') hf_dynamic_bf16 as (c) with bf16 autocast

Learning rate, weight decay, AdamW betas and eps, warmup, max_length and LoRA's r, alpha, dropout and target
modules come from the project's config (conf/, composed for `model=minilm task=... method=...`), for the
baselines too. Each (variant, repeat) runs in a fresh subprocess, so peak memory is per variant and no run
warms caches for the next; variants are interleaved within each repeat so machine noise hits them alike.
See benchmarks/README.md.

.venv/bin/python -m benchmarks.bench_train --task sst2 --method lora
.venv/bin/python -m benchmarks.bench_train --task sst2 --method lora --model roberta --variants a c c2
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.flops import FlopModel, matmul_peak
from benchmarks.glue_slice import framework_epoch, load_slice, token_fingerprint, token_ids
from benchmarks.hf_baseline import train_baseline
from benchmarks.hydra_config import Hyperparameters, compose_config, config_options, override_value
from benchmarks.machine import machine_info
from benchmarks.options import REPO_ROOT, add_training_options
from benchmarks.report import compile_break_even, ratios, summarise, write_report
from benchmarks.tiny_families import FAMILIES, MINILM_SIZE, write_tiny_family
from benchmarks.variants import VARIANTS, parse_variants

MODULE = "benchmarks.bench_train"  # run as `python -m benchmarks.bench_train`, workers too
RESULT_MARKER = "BENCH_RESULT "  # a worker's JSON line starts with this; the rest of its output is noise


class BenchError(RuntimeError):
    """A run that failed; its message says which and why."""


# --------------------------------------------------------------------------------------------- config
def benchmark_overrides(args: argparse.Namespace, variant: tuple[str, ...] = ()) -> list[str]:
    """The config of every variant: conf/ with these overrides; the framework variants run
    `python -m peft_glue.train` with them and their own (``variant``), the baselines read their
    hyperparameters from the config they compose. A variant's own precision wins over ``--precision``."""
    own_precision = any(override.startswith("trainer.precision=") for override in variant)
    precision = [f"trainer.precision={args.precision}"] if args.precision and not own_precision else []
    return [
        *model_overrides(args.model),
        f"task={args.task}",
        f"method={args.method}",
        f"data.batch_size={args.batch_size}",
        f"data.train_subset={args.examples}",
        "data.group_by_length=true",
        "data.num_workers=0",
        f"data.data_dir={override_value(str(args.glue_dir))}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        # the run ends by predicting the test split; one batch keeps that short (it is not timed)
        "trainer.limit_test_batches=1",
        "trainer.limit_predict_batches=1",
        *precision,
        f"seed={args.seed}",
        *variant,
    ]


def model_overrides(model: str) -> list[str]:
    """A conf/model option (``minilm``), or a model folder: loaded as a pretrained one (minilm's yaml holds
    no architecture of its own, so nothing else of it applies)."""
    if model in config_options("model"):
        return [f"model={model}"]
    return ["model=minilm", f"model.name_or_path={override_value(model)}"]


def benchmark_config(args: argparse.Namespace) -> DictConfig:
    return compose_config(benchmark_overrides(args))


# --------------------------------------------------------------------------------------------- workers
def run_worker(args: argparse.Namespace) -> None:
    """In a worker process: the matmul peak or one baseline run, printed as one JSON line."""
    if args.worker == "peak":
        result = matmul_peak(args.peak_size)
    else:
        cfg = benchmark_config(args)
        task = instantiate(cfg.task)
        variant = VARIANTS[args.worker]
        data = load_slice(args.glue_dir, task, args.examples)
        if variant.padded:
            data = data.prefix(args.padded_examples)
        result = train_baseline(
            variant,
            data,
            model_path=cfg.model.name_or_path,
            method=args.method,
            num_labels=task.num_labels,
            hparams=Hyperparameters.from_config(cfg),
            batch_size=args.batch_size,
            seed=args.seed,
            epochs=args.epochs,
        )
    print(RESULT_MARKER + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------- orchestration
def child_env() -> dict[str, str]:
    """Offline and quiet: nothing here needs the network, and a Hub lookup would add noise to the timings."""
    env = dict(os.environ)
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }.items():
        env.setdefault(key, value)
    return env


def run_subprocess(command: list[str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        lines = [line for line in lines if "HYDRA_FULL_ERROR" not in line] or ["(no output)"]
        tail = "\n".join(lines[-15:])
        raise BenchError(f"{what} exited with {proc.returncode}: {lines[-1].strip()}\n{tail}")
    return proc


def run_framework(args: argparse.Namespace, name: str) -> dict:
    """A framework variant: the framework's own command; its results.json gives samples/s, train seconds,
    compile seconds and peak memory."""
    with tempfile.TemporaryDirectory(prefix="bench_framework_") as run_dir:
        own = VARIANTS[name].framework or ()
        overrides = [*benchmark_overrides(args, own), f"hydra.run.dir={override_value(run_dir)}"]
        command = [sys.executable, "-m", "peft_glue.train", *overrides]
        run_subprocess(command, "python -m peft_glue.train")
        record = json.loads((Path(run_dir) / "results.json").read_text())
    if record.get("status") != "completed":
        raise BenchError(f"peft_glue.train ended with status {record.get('status')}: {record.get('error')}")
    # steady: a later epoch's speed; one epoch has none without the one-off costs (as for the baselines)
    epochs = record.get("train_epoch_samples_per_second") or []
    return {
        "samples": record.get("train_samples"),
        "seconds": record["train_seconds"],
        "samples_per_second": record["train_samples_per_second"],
        "steady_samples_per_second": epochs[-1] if len(epochs) > 1 else None,
        "precision": record.get("precision"),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "frozen_bf16": record.get("frozen_bf16"),
        "compile_seconds": record.get("compile_seconds"),
        "train_loss": last_train_loss(Path(run_dir)),
        "command": shlex.join(["python", *command[1:]]),
    }


def last_train_loss(run_dir: Path) -> float | None:
    """The last logged training loss of a framework run (its CSV logger's metrics.csv), for a glance at
    whether the variants trained alike."""
    files = sorted(run_dir.glob("**/metrics.csv"))
    if not files:
        return None
    rows = [row for row in csv.DictReader(files[-1].open()) if row.get("train/loss")]
    return float(rows[-1]["train/loss"]) if rows else None


def worker_command(args: argparse.Namespace, worker: str) -> list[str]:
    command = [sys.executable, "-m", MODULE, "--worker", worker]
    command += ["--task", args.task, "--method", args.method, "--examples", str(args.examples)]
    command += ["--model", args.model]
    command += ["--padded-examples", str(args.padded_examples), "--batch-size", str(args.batch_size)]
    command += ["--seed", str(args.seed), "--glue-dir", str(args.glue_dir), "--epochs", str(args.epochs)]
    if args.precision:
        command += ["--precision", args.precision]
    return command + (["--peak-size", str(args.peak_size)] if args.peak_size else [])


def run_self(args: argparse.Namespace, worker: str) -> dict:
    proc = run_subprocess(worker_command(args, worker), f"worker {worker}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    raise BenchError(f"worker {worker} printed no result line")


def run_one(args: argparse.Namespace, name: str) -> dict:
    return run_framework(args, name) if VARIANTS[name].framework is not None else run_self(args, name)


def orchestrate(args: argparse.Namespace) -> int:
    from transformers import AutoConfig, AutoTokenizer

    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    cfg = benchmark_config(args)
    task = instantiate(cfg.task)
    hparams = Hyperparameters.from_config(cfg)
    path = cfg.model.name_or_path
    data = load_slice(args.glue_dir, task, args.examples)
    if len(data) < args.examples:
        print(f"note: {args.task} train has only {len(data)} examples; using them all", file=sys.stderr)
        args.examples = len(data)
        cfg = benchmark_config(args)
    args.padded_examples = min(args.padded_examples or args.examples, args.examples)
    ids = token_ids(data, AutoTokenizer.from_pretrained(path), hparams.max_length)
    lengths = [len(example) for example in ids]
    config = AutoConfig.from_pretrained(path)
    lora = hparams.lora or {}
    flop_model = FlopModel(
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        args.method,
        num_labels=task.num_labels,
        lora_r=lora.get("r", 0),
        lora_targets=len(lora.get("target_modules", [])),
    )
    framework = framework_epoch(cfg)
    machine = machine_info()
    log(
        f"CPU: {machine['cpu_model']}, {machine['cpu_cores']} cores; amx_bf16 {machine['amx_bf16']}, "
        f"amx_tile {machine['amx_tile']}, avx512_bf16 {machine['avx512_bf16']}"
    )
    log(f"measuring the matmul peak ({args.peak_size or 'default'} size)")
    peak = run_self(args, "peak")
    log(
        f"peak: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s "
        f"({peak['device']})"
    )

    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    errors: dict[str, list[str]] = {name: [] for name in args.variants}
    for repeat in range(1, args.repeats + 1):
        for name in args.variants:
            try:
                result = run_one(args, name)
            except BenchError as error:
                errors[name].append(str(error).splitlines()[0])
                log(f"[{repeat}/{args.repeats}] {name}: FAILED\n{error}")
                continue
            runs[name].append(result)
            log(
                f"[{repeat}/{args.repeats}] {name}: {result['samples_per_second']:.1f} samples/s "
                f"({result['seconds']:.1f} s, peak {result['peak_memory_mb']:.0f} MB)"
            )

    examples = {
        name: args.padded_examples if variant.padded else args.examples for name, variant in VARIANTS.items()
    }
    framework_shapes = framework.batch_shapes if framework else None
    summary = summarise(runs, errors, examples, lengths, framework_shapes, flop_model, peak)
    fingerprint = data.fingerprint()
    slice_tokens = token_fingerprint(data.rows, ids, data.labels)
    framework_tokens = framework.fingerprint if framework else None
    mismatched = [  # each baseline must have trained on the slice, or (b) on its first M examples
        name
        for name, entry in summary.items()
        if "slice_fingerprint" in entry
        and entry["slice_fingerprint"] != data.prefix(entry["examples"]).fingerprint()
    ]
    report = {
        "command": shlex.join([Path(sys.executable).name, "-m", MODULE, *sys.argv[1:]]),
        "cwd": os.getcwd(),
        "started": started,
        "config": {
            "task": args.task,
            "method": args.method,
            "model": args.model_name,
            "model_path": path,
            "examples": args.examples,
            "padded_examples": args.padded_examples,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "repeats": args.repeats,
            "epochs": args.epochs,
            "framework_precision": args.precision or "framework default",
            "learning_rate": hparams.learning_rate,
            "weight_decay": hparams.weight_decay,
            "betas": list(hparams.betas),
            "eps": hparams.eps,
            "warmup_ratio": hparams.warmup_ratio,
            "lora": hparams.lora,
            "max_length": hparams.max_length,
            "glue_dir": str(args.glue_dir),
            "overrides": benchmark_overrides(args),
        },
        "machine": machine,
        "matmul_peak": peak,
        "slice": {
            "examples": len(lengths),
            "real_tokens": sum(lengths),
            "mean_length": sum(lengths) / len(lengths),
            "max_length": max(lengths),
            "fingerprint": fingerprint,
            "token_fingerprint": slice_tokens,
            "framework_fingerprint": framework_tokens,
            "framework_matches": None if framework_tokens is None else framework_tokens == slice_tokens,
            "baselines_match": not mismatched,
        },
        "flop_model": {
            "layers": flop_model.layers,
            "hidden": flop_model.hidden,
            "intermediate": flop_model.intermediate,
            "description": " ".join((FlopModel.__doc__ or "").split()),
        },
        "variants": summary,
        "ratios": ratios(summary),
        "steady_ratios": ratios(summary, steady=True),
        "compile_break_even": compile_break_even(summary, args.batch_size),
    }
    text = write_report(report, args.out)
    print(text)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    if mismatched:
        print(f"error: {', '.join(mismatched)} trained on other examples than the slice", file=sys.stderr)
    return 1 if mismatched or any(errors.values()) else 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_options(parser)
    parser.add_argument("--examples", type=int, default=2048, help="training examples (default 2048)")
    parser.add_argument(
        "--padded-examples",
        type=int,
        default=None,
        help="time (b) on the first M examples of the slice only (default: all); its per-batch cost does "
        "not depend on the sentences",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per run; the last one's speed is the steady one (2)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        help=f"subset of {', '.join(VARIANTS)} (or a, b, c, c2), space- or comma-separated",
    )
    parser.add_argument("--seed", type=int, default=42, help="the framework's default seed")
    parser.add_argument(
        "--precision",
        default=None,
        help="trainer.precision for (a), e.g. 32-true (default: framework default)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path; the Markdown table goes next to it"
    )
    parser.add_argument(
        "--peak-size", type=int, default=None, help="matmul size for the peak (2048; GPU 8192)"
    )
    parser.add_argument(
        "--model",
        default="minilm",
        help="a conf/model option (default minilm, the pretrained model here), a model folder, or a family "
        f"({', '.join(FAMILIES)}): randomly initialised at MiniLM's size (6 layers, hidden 384, 12 heads, "
        "intermediate 1536) with its family's tokenizer trained on the task's training sentences",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.variants = parse_variants(args.variants)
    except ValueError as error:
        parser.error(str(error))
    for option in ("examples", "batch_size", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.padded_examples is not None and args.padded_examples < 1:
        parser.error("--padded-examples must be >= 1")
    args.glue_dir = args.glue_dir.expanduser().resolve()
    train_file = args.glue_dir / instantiate(compose_config([f"task={args.task}"]).task).folder / "train.tsv"
    if not train_file.is_file():
        parser.error(f"{train_file} not found; pass --glue-dir or set GLUE_DIR")
    if args.model not in (*config_options("model"), *FAMILIES) and not Path(args.model).is_dir():
        families = ", ".join(FAMILIES)
        parser.error(f"--model {args.model}: not a conf/model option, a family ({families}) or a folder")
    args.model_name = args.model
    if args.out is None:
        suffix = "" if args.model == "minilm" else f"_{Path(args.model).name}"
        args.out = REPO_ROOT / "benchmarks" / "results" / f"{args.task}_{args.method}{suffix}.json"
    return args


def build_family(args: argparse.Namespace, folder: Path) -> Path:
    """``--model <family>``: that family at MiniLM's size, randomly initialised (the Hub is out of reach), its
    tokenizer trained on the task's whole training split (BERT's vocabulary size), so sentences split into
    about as many tokens as with a pretrained vocabulary; seeded, so every worker loads the same model."""
    import torch

    task = instantiate(compose_config([f"task={args.task}"]).task)
    texts = load_slice(args.glue_dir, task, examples=sys.maxsize).texts
    torch.manual_seed(args.seed)
    log(f"building {args.model} at MiniLM's size in {folder}")
    return write_tiny_family(
        args.model,
        folder,
        size=MINILM_SIZE,
        positions=512,
        corpus=(text for column in texts for text in column),
        vocab_size=30522,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    if args.model not in FAMILIES:
        return orchestrate(args)
    with tempfile.TemporaryDirectory(prefix=f"bench_{args.model}_") as folder:
        args.model_name = f"{args.model}, random init at MiniLM's size"
        args.model = str(build_family(args, Path(folder)))
        return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
