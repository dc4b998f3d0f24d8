"""Which cores and GPU one job of a sweep uses: its torch threads follow the CPUs it asked for, and jobs
that a launcher runs side by side on one node each take their own GPU instead of all taking the first.

- ``hydra/launcher=ray``: Ray reserves ``resources.num_cpus`` and ``resources.num_gpus`` (a fraction shares a
  GPU) for each job and sets the job's ``CUDA_VISIBLE_DEVICES``; the job's first visible GPU is its own.
- ``hydra/launcher=joblib`` (or any launcher whose jobs all see every GPU): job N of a one-device trainer
  takes visible GPU ``N mod <visible GPUs>``, round robin, so ``n_jobs`` = the number of GPUs fills each GPU
  with one job. Round robin by job number needs no coordination between joblib's worker processes; a job
  that finishes early leaves its GPU to job N + <GPUs>, which is its successor in joblib's queue.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, open_dict

GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def visible_gpus() -> int:
    """The GPUs this process may use (its ``CUDA_VISIBLE_DEVICES``, as Ray or SLURM set it)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def round_robin_device(trainer: DictConfig, job_num: int | None, gpus: int) -> list[int] | None:
    """The GPU (as Lightning's ``devices=[index]``) that job ``job_num`` of a sweep takes, or None to keep
    the trainer's own choice: one job per GPU only where the trainer asks for one device (``devices: 1``) of
    a GPU accelerator and several GPUs are visible."""
    devices = trainer.get("devices")
    wants_one = devices == 1 or devices == "1"
    accelerator = str(trainer.get("accelerator", "auto"))
    if job_num is None or gpus < 2 or not wants_one or accelerator not in GPU_ACCELERATORS:
        return None
    return [job_num % gpus]


def place_job(cfg: DictConfig, job_num: int | None) -> None:
    """Point this job's trainer at its own GPU (``round_robin_device``)."""
    device = round_robin_device(cfg.trainer, job_num, visible_gpus())
    if device is not None:
        with open_dict(cfg):
            cfg.trainer.devices = device


def asked_devices(trainer: DictConfig) -> Any:
    """The trainer's ``devices`` as plain data for results.json: ``[3]`` where a sweep gave the job GPU 3."""
    devices = trainer.get("devices")
    return list(devices) if isinstance(devices, ListConfig) else devices


def reserved_cpus(resources: DictConfig | None, launcher: DictConfig | None) -> int | None:
    """The cores one job asked for, as torch threads: ``resources.num_cpus``, else what the Ray launcher
    reserved for it (Ray's default of one); None where nothing was asked (the cores are shared instead)."""
    asked: Any = (resources or {}).get("num_cpus")
    if asked is None and launcher is not None and "ray" in launcher:
        asked = (launcher.ray.get("remote") or {}).get("num_cpus")
    return None if asked is None else max(1, math.floor(float(asked)))


def device_of(module_device: torch.device) -> dict[str, Any]:
    """What a job ran on, for results.json: the torch device of its model and the GPUs it could see."""
    return {"device": str(module_device), "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
