"""Hydra glue: config resolvers, a pre-flight check of the command line, and multirun failure reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException, MissingConfigException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError

from peft_glue.config_paths import CONFIG_DIR, config_folders, user_searchpath
from peft_glue.distributed import usable_cores
from peft_glue.errors import UserError, exit_with
from peft_glue.models import package_model_path


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls beat fp32 on CPUs with AVX512-BF16 or AMX; without them oneDNN emulates bf16, and it is
    slower (2048x2048 matmul on an AVX512 Xeon without BF16: 47.6 bf16 vs 165.6 fp32 GFLOP/s, measured
    by benchmarks/bench_train.py)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def best_precision() -> str:
    """The fastest precision that keeps accuracy: bf16 mixed where the hardware runs it fast, else fp32."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def dataloader_workers() -> int:
    """Processes that collate batches while a GPU computes: up to 2 per GPU, leaving a core per GPU for its
    training process (batches are pre-tokenized, so collating is light). None on a CPU, where a worker would
    take a core from the model."""
    if not torch.cuda.is_available():
        return 0
    return max(0, min(2, usable_cores() // max(1, torch.cuda.device_count()) - 1))


def register_resolvers() -> None:
    for name, resolver in {
        "best_precision": best_precision,
        "dataloader_workers": dataloader_workers,
        "package_model_path": package_model_path,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, letting a UserError raised by the target through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def group_options(group: str, folders: Sequence[Path] = (CONFIG_DIR,)) -> list[str]:
    return sorted({path.stem for folder in folders for path in (folder / group).glob("*.yaml")})


def chosen_options(override: Any) -> list[str]:
    """The options a group override selects: every value of a sweep, each element of a list."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    values = value if isinstance(value, list) else [] if value is None else [value]
    return [str(v) for v in values]


def first_of_each_sweep(overrides: list[str], folders: Sequence[Path] = (CONFIG_DIR,)) -> list[str]:
    """The overrides of a multirun's first job (sweeps `a=1,2` become `a=1`); hydra's own keys dropped."""
    first = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_hydra_override():
            continue
        group = override.get_key_element().lstrip("+~")
        if any((folder / group).is_dir() for folder in folders) and not override.is_delete():
            # checked here: Hydra silently skips an unknown option of an `optional` group (experiment, ...)
            unknown = [v for v in chosen_options(override) if v not in group_options(group, folders)]
            if unknown:
                exit_with(unknown_option(group, unknown[0], folders))
        value = (
            next(iter(override.sweep_string_iterator()))
            if override.is_sweep_override()
            else override.get_value_element_as_str()
        )
        key = override.get_key_element()
        first.append(key if override.is_delete() and override.value() is None else f"{key}={value}")
    return first


def expand_resume(argv: list[str]) -> list[str]:
    """``resume=<run folder>`` continues that run in place: its saved overrides, its folder, ``resume=auto``.
    ``-m resume=<multirun folder>`` does the same for every job of a sweep (finished jobs are skipped)."""
    args, _ = get_args_parser().parse_known_args(argv)
    value = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("resume=")), None)
    if value in (None, "auto", "null") or not Path(value).is_dir():
        return argv
    folder = Path(value).resolve()

    def without_resume(overrides: list[str]) -> list[str]:
        return [o for o in overrides if not o.startswith("resume=")]

    extra = without_resume(args.overrides)  # e.g. trainer.max_epochs=10 to train longer
    if (folder / ".hydra" / "overrides.yaml").is_file():
        saved = without_resume(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        return [*saved, *extra, f"hydra.run.dir={folder}", "resume=auto"]
    if (folder / "multirun.yaml").is_file():
        saved = without_resume(OmegaConf.load(folder / "multirun.yaml").hydra.overrides.task)
        return ["-m", *saved, *extra, f"hydra.sweep.dir={folder}", "resume=auto"]
    exit_with(f"resume={value} is neither a run folder (with .hydra/) nor a multirun folder (multirun.yaml)")
    return argv


def check_command_line(argv: list[str]) -> None:
    """Compose the config of the first job before Hydra starts, so a wrong override or an unknown
    config option ends in one line that names the fix instead of Hydra's multi-line report."""
    args, _ = get_args_parser().parse_known_args(argv)
    if (
        args.help
        or args.hydra_help
        or args.info
        or args.shell_completion
        or args.config_path  # another primary config folder: nothing of ours to check against
    ):
        return
    if args.config_dir and not Path(args.config_dir).is_dir():
        exit_with(f"--config-dir {args.config_dir}: no such folder")
    searchpath = user_searchpath(args.config_dir, args.overrides)  # the user's own config folders
    folders = config_folders(searchpath)
    try:
        overrides = first_of_each_sweep(args.overrides, folders)
        if searchpath:
            overrides.append(f"hydra.searchpath=[{','.join(map(repr, searchpath))}]")
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            check_hydra_plugins(args.overrides)
            compose(args.config_name or "config", overrides=overrides)
    except MissingConfigException as error:
        exit_with(explain_missing_option(error, folders))
    except Exception as error:  # hydra/omegaconf composition and override-grammar errors
        exit_with(explain_override_error(error))


PLUGIN_EXTRAS = {"joblib": "sweep", "optuna": "sweep", "submitit_slurm": "slurm", "submitit_local": "slurm"}
PLUGIN_GROUPS = ("hydra/launcher", "hydra/sweeper")


def missing_plugin(group: str, wanted: str) -> str:
    extra = PLUGIN_EXTRAS.get(wanted)
    if extra:
        return (
            f"{group}={wanted} needs a Hydra plugin that is not installed: pip install 'peft_glue[{extra}]'"
        )
    options = GlobalHydra.instance().config_loader().get_group_options(group)
    return f"unknown {group} '{wanted}'; choose one of: {', '.join(options)}"


def check_hydra_plugins(overrides: list[str]) -> None:
    """``hydra/launcher=...`` and ``hydra/sweeper=...`` name installed plugins (the optional extras)."""
    options = {
        group: GlobalHydra.instance().config_loader().get_group_options(group) for group in PLUGIN_GROUPS
    }
    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.get_key_element()
        if group in options and not override.is_sweep_override():
            wanted = override.get_value_element_as_str()
            if wanted not in options[group]:
                exit_with(missing_plugin(group, wanted))


def unknown_option(group: str, wanted: str, folders: Sequence[Path] = (CONFIG_DIR,)) -> str:
    options = group_options(group, folders)
    return f"unknown {group} '{wanted}'; choose one of: {', '.join(options)} (e.g. {group}={options[0]})"


def explain_missing_option(error: MissingConfigException, folders: Sequence[Path] = (CONFIG_DIR,)) -> str:
    missing = str(error.missing_cfg_file or "")
    plugin_group, _, plugin = missing.rpartition("/")
    if plugin_group in PLUGIN_GROUPS:  # e.g. hparams_search=lora_optuna without the optuna sweeper
        return missing_plugin(plugin_group, plugin)
    group, _, wanted = missing.partition("/")
    if group and group_options(group, folders):
        return unknown_option(group, wanted, folders)
    return str(error).strip().splitlines()[0]


def explain_override_error(error: Exception) -> str:
    cause = error.__cause__
    if isinstance(cause, ConfigAttributeError) and "not in struct" in str(cause):
        return (
            f"unknown key '{cause.full_key}': check its spelling (`python -m peft_glue.train --cfg job` "
            f"prints every key), or add a new key with a leading +"
        )
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return " ".join(lines[:3]) or "invalid command line"


class FailOnFailedJobs(Callback):
    """After a multirun, list the jobs that failed and leave with a non-zero status.

    Jobs catch their own errors (so one bad job never stops the sweep) and record them in results.json;
    this reads those files, so it works with any launcher.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = []
        for path in sorted(sweep_dir.glob("*/results.json")):
            record = json.loads(path.read_text())
            if record.get("status") == "failed":
                failed.append(f"{path.parent.name} ({record.get('error', 'unknown error')})")
        if failed:
            print(f"error: {len(failed)} job(s) failed: {'; '.join(failed)}", file=sys.stderr, flush=True)
            raise SystemExit(1)
