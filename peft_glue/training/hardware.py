"""Defaults that depend on the hardware: precision, dataloader workers, usable cores, peak memory."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

import torch


def cpuinfo() -> str:
    """/proc/cpuinfo's text: model name, flags (empty where there is none, as on macOS)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls beat fp32 on CPUs with AVX512-BF16 or AMX; without them oneDNN emulates bf16, and it is
    slower (measured in benchmarks/README.md)."""
    flags = cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_amx() -> bool:
    """AMX tiles for bf16 matmuls (Sapphire Rapids and later): where a compiled step was measured to pay."""
    return "amx_bf16" in cpuinfo()


def best_precision() -> str:
    """The fastest precision that keeps accuracy: bf16 mixed where the hardware runs it fast, else fp32."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as under SLURM or taskset), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def dataloader_workers() -> int:
    """Processes that collate batches while a GPU computes: up to 2 per GPU, leaving a core per GPU for its
    training process (batches are pre-tokenized, so collating is light). None on a CPU, where a worker would
    take a core from the model."""
    if not torch.cuda.is_available():
        return 0
    return max(0, min(2, usable_cores() // max(1, torch.cuda.device_count()) - 1))


def reset_peak_memory() -> None:
    """Start a job's peak-memory count afresh: a launcher's worker process runs several jobs (joblib), and
    the process's lifetime peak would give every job the peak of the biggest one before it. Linux resets the
    resident-set high-water mark on writing 5 to /proc/self/clear_refs; elsewhere the lifetime peak stays."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by tensors, or on CPU the process's peak resident set size since the last
    ``reset_peak_memory`` (VmHWM; the lifetime peak where /proc is missing)."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    high_water_kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return round(int(high_water_kb) / 1024, 1)
