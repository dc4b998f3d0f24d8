"""The machine a benchmark ran on: CPU model, cores and bf16 instruction sets; Python and library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from peft_glue.training.hardware import cpuinfo

PACKAGES = ("torch", "transformers", "peft", "pytorch-lightning", "datasets", "accelerate")


def machine_info() -> dict:
    text = cpuinfo()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line), None)
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    versions = {}
    for package in PACKAGES:
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
