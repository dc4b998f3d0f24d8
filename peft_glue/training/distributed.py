"""Running one Hydra job on several processes (Lightning DDP) or several jobs side by side (launchers), and
gathering the predictions of all ranks.

Lightning's ``ddp`` strategy starts the other ranks by running the script again. Its Hydra support repeats the
whole command line, ``-m`` and sweeps included, with ``hydra.run.dir`` set to the run-mode pattern: inside a
multirun every rank would start a sweep of its own, in new timestamped folders. Here the other ranks run
exactly this job instead, as a single run in the job's own folder (``hydra.run.dir=<job folder>``, no
``.hydra/`` of their own, their log in ``train_rank<N>.log``), so a job has one folder whatever the number
of ranks or launcher, and only rank 0 writes results, exports and submission files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd
from pytorch_lightning.strategies.launchers import subprocess_script

from peft_glue.errors import UserError
from peft_glue.training.config_paths import searchpath_arguments
from peft_glue.training.hardware import usable_cores


def rank_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command (and working directory) that starts ``local_rank`` of the current Hydra job."""
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir.replace("\\", "\\\\").replace('"', '\\"')
    command = [
        sys.executable,
        "-m",
        "peft_glue.train",
        f"--config-name={hydra_cfg.job.config_name}",
        *hydra_cfg.overrides.task,  # this job's overrides: its values of a sweep, no -m
        f'hydra.run.dir="{run_dir}"',  # quoted: sweep folder names hold `=` and `,`
        "hydra.mode=RUN",  # one job, even where the config asks for a sweep (hparams_search)
        "hydra.output_subdir=null",  # rank 0 wrote .hydra/ already
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",  # its own log file
        *searchpath_arguments(hydra_cfg),  # the user's config folders: --config-dir, hydra.searchpath
    ]
    return command, get_original_cwd()


def check_strategy(strategy: str, use_distributed_sampler: bool, world_size: int) -> None:
    if any(word in strategy for word in ("spawn", "fork", "notebook")):
        raise UserError(
            f"trainer.strategy={strategy} trains in child processes that hand back only the "
            "weights, and peft_glue reads its results from the training process: use trainer=ddp"
        )
    if world_size > 1 and use_distributed_sampler:
        raise UserError("set trainer.use_distributed_sampler=false: peft_glue's samplers shard by rank")


def launch_ranks_as_this_job() -> None:
    """Make Lightning's ``ddp`` start the other ranks with ``rank_command``."""
    if not hasattr(subprocess_script, "_hydra_subprocess_cmd"):
        raise RuntimeError(
            "this pytorch_lightning has no subprocess_script._hydra_subprocess_cmd: peft_glue cannot start "
            "the DDP ranks of a job in its folder (pytorch-lightning 2.6 has it)"
        )
    subprocess_script._hydra_subprocess_cmd = rank_command


DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


@contextmanager
def job_scope() -> Iterator[None]:
    """Leave the process as the job found it, so that the next job of a multirun in the same process can
    start DDP afresh: Lightning leaves the process group open and the rank variables set (with
    ``LOCAL_RANK`` set, it would not start new ranks, and the next job would wait for the old ones)."""
    saved = {name: os.environ.get(name) for name in DDP_VARIABLES}
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def threads_per_job(threads: int | None, n_jobs: int | None, cpus: int | None = None) -> int | None:
    """torch's CPU threads for a job: ``threads`` when set; else the cores the job asked for or was given
    (``cpus``: ``resources.num_cpus``, or what Ray reserved); else the cores shared among the jobs that a
    launcher runs side by side (joblib's ``n_jobs``; -1 = one job per core, as joblib counts), so that
    parallel jobs do not oversubscribe the cores; None (torch's default) for one job at a time."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads must be >= 1 or null (got {threads})")
        return threads
    if cpus is not None:
        return cpus
    if n_jobs is None or n_jobs == 1:
        return None
    cores = usable_cores()
    parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, cores // parallel)


def share_cores(threads: int | None, n_jobs: int | None, cpus: int | None = None) -> None:
    """Apply ``threads_per_job`` to torch, and to the DDP ranks this job starts (OMP_NUM_THREADS)."""
    count = threads_per_job(threads, n_jobs, cpus)
    if count is not None:
        torch.set_num_threads(count)
        os.environ["OMP_NUM_THREADS"] = str(count)


def gather_predictions(
    predictions: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Under DDP each rank predicted its own share of the test batches: collect all shares on every rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return predictions
    local = [(idx.cpu(), pred.cpu()) for idx, pred in predictions]
    shares: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(shares, local)
    return [batch for share in shares for batch in share]
