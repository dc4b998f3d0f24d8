"""The same sweep of short jobs with Hydra's basic launcher (one job at a time) and with hydra/launcher=ray
(jobs side by side, each a Ray task with its own cores), in one invocation: jobs per hour of each and their
ratio, and whether every job's exported tensors are equal (torch.equal) between the two, same seeds and
thread count.

.venv/bin/python -m benchmarks.ray_sweep                       # 8 jobs, 2 side by side x 1 core
.venv/bin/python -m benchmarks.ray_sweep --parallel 4 --cpus-per-job 2 --train-subset 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmarks.machine import machine_info
from benchmarks.options import REPO_ROOT, default_glue_dir

RESULTS = REPO_ROOT / "benchmarks" / "results"


def sweep_overrides(args: argparse.Namespace) -> list[str]:
    """8 jobs by default: LoRA r in 1, 2, 4, 8 x seeds 1, 2 on a slice of SST-2, one epoch."""
    return [
        "model=minilm", f"task={args.task}", f"data.data_dir={args.glue_dir}", "method=lora",
        f"method.r={args.ranks}", f"seed={args.seeds}", f"data.train_subset={args.train_subset}",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "submission=false",
        f"threads={args.cpus_per_job}",  # the same torch threads in both launchers: equal tensors
    ]  # fmt: skip


def run_sweep(overrides: list[str], launcher: list[str], sweep_dir: Path) -> float:
    """Run one sweep as a user would; its wall-clock seconds (starting Ray included)."""
    command = [
        sys.executable,
        "-m",
        "peft_glue.train",
        "-m",
        *launcher,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: the sweep failed ({' '.join(launcher) or 'basic'}):\n{result.stderr[-3000:]}")
    return seconds


def job_results(sweep_dir: Path) -> dict[str, dict]:
    """Each job's results.json, by its folder name (the same in both sweeps: the launcher is not in it)."""
    return {path.parent.name: json.loads(path.read_text()) for path in sweep_dir.glob("*/results.json")}


def exported_tensors(record: dict) -> dict[str, torch.Tensor]:
    folder = Path(record["exports"]["weights"])
    return {
        f"{file.name}:{k}": v
        for file in sorted(folder.glob("*.safetensors"))
        for k, v in load_file(file).items()
    }


def same_tensors(basic: dict, ray: dict) -> bool:
    left, right = exported_tensors(basic), exported_tensors(ray)
    return bool(left) and left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def compare(args: argparse.Namespace, work: Path) -> dict:
    overrides = sweep_overrides(args)
    ray_launcher = [
        "hydra/launcher=ray", f"hydra.launcher.ray.init.num_cpus={args.parallel * args.cpus_per_job}",
        f"resources.num_cpus={args.cpus_per_job}", "resources.num_gpus=0",
    ]  # fmt: skip
    seconds = {
        "basic": run_sweep(overrides, [], work / "basic"),
        "ray": run_sweep(overrides, ray_launcher, work / "ray"),
    }
    basic, ray = job_results(work / "basic"), job_results(work / "ray")
    if basic.keys() != ray.keys():
        sys.exit(f"error: the sweeps ran different jobs: {sorted(basic)} vs {sorted(ray)}")
    jobs = len(basic)
    per_hour = {name: round(jobs * 3600 / s, 1) for name, s in seconds.items()}
    equal = {name: same_tensors(basic[name], ray[name]) for name in sorted(basic)}
    return {
        "command": " ".join(["python -m benchmarks.ray_sweep", *(sys.argv[1:])]),
        "overrides": overrides,
        "ray_launcher": ray_launcher,
        "jobs": jobs,
        "seconds": {name: round(s, 1) for name, s in seconds.items()},
        "jobs_per_hour": per_hour,
        "ratio_ray_over_basic": round(per_hour["ray"] / per_hour["basic"], 2),
        "threads": {
            name: sorted({r["threads"] for r in runs.values()})
            for name, runs in (("basic", basic), ("ray", ray))
        },
        "exports_equal": all(equal.values()),
        "exports_equal_by_job": equal,
        "machine": machine_info(),
    }


def markdown(report: dict) -> str:
    rows = [
        "| launcher | jobs | wall s | jobs/hour | torch threads per job |",
        "|---|---:|---:|---:|---|",
    ]
    for name, label in (("basic", "basic (one at a time)"), ("ray", " ".join(report["ray_launcher"]))):
        threads = ", ".join(map(str, report["threads"][name]))
        seconds, per_hour = report["seconds"][name], report["jobs_per_hour"][name]
        rows.append(f"| {label} | {report['jobs']} | {seconds} | {per_hour} | {threads} |")
    return "\n".join(
        [
            *rows,
            "",
            f"ratio (ray / basic jobs per hour): **{report['ratio_ray_over_basic']}**; "
            f"exported tensors equal (torch.equal, every job): **{report['exports_equal']}**",
            f"command: `{report['command']}`; CPU: {report['machine']['cpu_model']}, "
            f"{report['machine']['cpu_cores_usable']} usable cores",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=default_glue_dir())
    parser.add_argument("--ranks", default="1,2,4,8", help="method.r's sweep")
    parser.add_argument("--seeds", default="1,2", help="seed's sweep")
    parser.add_argument("--train-subset", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=2, help="jobs Ray runs side by side")
    parser.add_argument("--cpus-per-job", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_sweep.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ray-sweep-") as work:
        report = compare(args, Path(work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0 if report["exports_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
