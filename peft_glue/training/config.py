"""Composing the config: its resolvers, ``build`` (instantiate with one-line errors), and a pre-flight check
of the command line that turns a wrong override into one line naming the fix."""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ValidationError

from peft_glue.errors import UserError, exit_with
from peft_glue.training.config_paths import CONFIG_DIR, config_folders, user_searchpath
from peft_glue.training.devices import visible_gpus
from peft_glue.training.hardware import best_precision, dataloader_workers, usable_cores
from peft_glue.training.models import package_model_path
from peft_glue.training.schema import (
    MOVED_KEYS,
    check_resources,
    check_typed_groups,
    describe,
    moved_key,
    register_schema,
    schema_field,
    wrong_value,
)


def grid_item(grid: Any, step: Any) -> Any:
    """``${grid_item:${lr_grid.full},${lr_step}}``: the step-th value of a grid (experiment=lr_comparison)."""
    if not 0 <= int(step) < len(grid):
        raise UserError(f"lr_step={step} is outside the grid {list(grid)} (0..{len(grid) - 1})")
    return grid[int(step)]


def if_null(value: Any, default: Any) -> Any:
    """``${if_null:${resources.num_cpus},1}``: a value, or the default where it is null."""
    return default if value is None else value


def help_template() -> str:
    """``${peft_glue_help:}``: the text of ``--help`` (conf/hydra/help/peft_glue.yaml), made when asked."""
    from peft_glue.training.reference import hydra_help_template  # the reference reads Lightning's docs

    return hydra_help_template()


def register_resolvers() -> None:
    """What composing the config needs besides conf/: our resolvers and the schema."""
    for name, resolver in {
        "if_null": if_null,
        "grid_item": grid_item,
        "best_precision": best_precision,
        "dataloader_workers": dataloader_workers,
        "package_model_path": package_model_path,
        "peft_glue_help": help_template,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    register_schema()


# where classes named by the ``_target_`` of configs saved before the two wings lived then -> now
MOVED_TARGETS = {
    "peft_glue.methods.": "peft_glue.training.methods.",
    "peft_glue.tasks.": "peft_glue.training.tasks.",
    "peft_glue.callbacks.ResumableCSVLogger": "peft_glue.training.tracking.ResumableCSVLogger",
    "peft_glue.callbacks.": "peft_glue.training.callbacks.",
    "peft_glue.tracking.": "peft_glue.training.tracking.",
}


def load_saved_config(path: Path) -> DictConfig:
    """A run folder's saved config (``.hydra/config.yaml``) as this version builds it: the ``_target_`` of
    a class that has moved since the run was trained names its new module, and a learning rate that the
    method carried (``method.lr``, before ``optimizer.lr`` was its one home) moves to the optimizer."""
    text = path.read_text()
    for old, new in MOVED_TARGETS.items():
        text = text.replace(f"_target_: {old}", f"_target_: {new}")
    cfg = OmegaConf.create(text)
    if "lr" in (cfg.get("method") or {}):
        lr = cfg.method.lr
        optimizer = cfg.get("optimizer")
        if optimizer is None or "lr" not in optimizer or OmegaConf.is_interpolation(optimizer, "lr"):
            OmegaConf.update(cfg, "optimizer.lr", lr, merge=False)
        del cfg.method["lr"]
    return cfg


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
        return sweep_values(override)
    value = override.value()
    values = value if isinstance(value, list) else [] if value is None else [value]
    return [str(v) for v in values]


def sweep_values(override: Any) -> list[str]:
    """Every value of a sweep override (`a=1,2`, `a=range(1,3)`); [] for a search interval (Optuna)."""
    try:
        return list(override.sweep_string_iterator())
    except Exception:
        return []


def jobs_to_check(overrides: list[str], folders: Sequence[Path] = (CONFIG_DIR,)) -> list[list[str]]:
    """The first job's overrides, then one variant of it per other value of each sweep, so that a wrong
    value anywhere in a sweep is found before the first job starts."""
    first = first_of_each_sweep(overrides, folders)
    parsed = [o for o in OverridesParser.create().parse_overrides(overrides) if not o.is_hydra_override()]
    jobs = [first]
    for position, override in enumerate(parsed):
        if override.is_sweep_override():
            key = override.get_key_element()
            for value in sweep_values(override)[1:]:
                jobs.append([*first[:position], f"{key}={value}", *first[position + 1 :]])
    return jobs


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
        values = sweep_values(override) if override.is_sweep_override() else []
        value = values[0] if values else override.get_value_element_as_str()
        key = override.get_key_element()
        first.append(key if override.is_delete() and override.value() is None else f"{key}={value}")
    return first


def job_config(name: str, overrides: list[str]) -> DictConfig:
    """A job's config as the job sees it: Hydra's runtime set (``${hydra:runtime.choices.task}`` resolves, as
    the papers' recipes use it), Hydra's own node left out."""
    cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):  # no job folder exists yet; the keys that name it are checked as strings
        cfg.hydra.runtime.output_dir = str(Path(tempfile.gettempdir()) / "peft_glue_check")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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
    register_resolvers()  # the schema and resolvers that composing needs
    if args.config_dir and not Path(args.config_dir).is_dir():
        exit_with(f"--config-dir {args.config_dir}: no such folder")
    searchpath = user_searchpath(args.config_dir, args.overrides)  # the user's own config folders
    folders = config_folders(searchpath)
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            check_hydra_plugins(args.overrides)
            check_ray_cluster(args.overrides)
            cores, gpus = node_capacity(args.overrides)
            extra = [f"hydra.searchpath=[{','.join(map(repr, searchpath))}]"] if searchpath else []
            for job in jobs_to_check(args.overrides, folders):
                groups = [o for o in job if any((f / o.split("=")[0].lstrip("+~")).is_dir() for f in folders)]
                cfg = job_config(args.config_name or "config", [*job, *extra])
                check_typed_groups(
                    cfg,
                    lambda groups=groups: compose(args.config_name or "config", overrides=[*groups, *extra]),
                )
                resources = cfg.get("resources") or {}
                check_resources(resources.get("num_cpus"), resources.get("num_gpus"), cores, gpus)
    except MissingConfigException as error:
        exit_with(explain_missing_option(error, folders))
    except UserError as error:
        exit_with(str(error))
    except Exception as error:  # hydra/omegaconf composition and override-grammar errors
        exit_with(explain_override_error(error))


PLUGIN_EXTRAS = {
    "ray": "ray",
    "joblib": "sweep",
    "optuna": "sweep",
    "submitit_slurm": "slurm",
    "submitit_local": "slurm",
}
RAY_PLUGIN = "hydra_plugins.hydra_ray_launcher"
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
            # conf/hydra/launcher/ray.yaml stands in for the plugin's option: the plugin may be missing
            plugin_missing = wanted == "ray" and importlib.util.find_spec(RAY_PLUGIN) is None
            if wanted not in options[group] or plugin_missing:
                exit_with(missing_plugin(group, wanted))


def launcher_values(overrides: list[str]) -> dict[str, object]:
    """The plain (not swept) ``hydra...`` overrides, e.g. ``{"hydra/launcher": "ray"}``."""
    return {
        o.get_key_element(): o.value()
        for o in OverridesParser.create().parse_overrides(overrides)
        if o.is_hydra_override() and not o.is_sweep_override()
    }


def node_capacity(overrides: list[str]) -> tuple[int, int | None]:
    """The cores and GPUs of the node a sweep's jobs run on: this machine, or the node that
    ``hydra.launcher.ray.init.num_cpus``/``num_gpus`` describe to a local Ray; GPUs None on a Ray cluster
    (``hydra.launcher.ray.init.address`` or RAY_ADDRESS), whose nodes are only known once it runs."""
    hydra_values = launcher_values(overrides)
    cores, gpus = usable_cores(), visible_gpus()
    if hydra_values.get("hydra/launcher") != "ray":
        return cores, gpus
    if ray_address(hydra_values):
        return cores, None
    cores = int(hydra_values.get("hydra.launcher.ray.init.num_cpus") or cores)
    return cores, int(hydra_values.get("hydra.launcher.ray.init.num_gpus") or gpus)


def ray_address(hydra_values: dict[str, object]) -> str | None:
    """The Ray cluster a sweep joins: ``hydra.launcher.ray.init.address``, else RAY_ADDRESS; None starts
    Ray on this machine for the sweep alone."""
    address = hydra_values.get("hydra.launcher.ray.init.address") or os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else str(address)


RAY_DEFAULT_PORT = 6379


def ray_cluster_found() -> bool:
    """Whether Ray's ``address=auto`` finds a running cluster on this machine (its own lookup: the address
    ``ray start`` leaves, or a running Ray process). True when that lookup cannot be reached: Ray decides."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return True
    try:
        return get_ray_address_from_environment("auto", None) is not None
    except ConnectionError:
        return False


def check_ray_cluster(overrides: list[str]) -> None:
    """The Ray cluster a sweep is to join answers before any job is sent; Ray's own connection error comes
    as a long traceback once Hydra has started."""
    hydra_values = launcher_values(overrides)
    address = ray_address(hydra_values)
    if hydra_values.get("hydra/launcher") != "ray" or address is None:
        return
    key = "hydra.launcher.ray.init.address"
    if address == "auto":
        if not ray_cluster_found():
            raise UserError(
                f"{key}=auto: no Ray cluster was started on this machine; run `ray start --head` first, "
                f"give the cluster's address ({key}=HOST:{RAY_DEFAULT_PORT}), or leave it out to start Ray "
                "for this sweep alone"
            )
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    host, port = (host, port) if port.isdigit() else (target, str(RAY_DEFAULT_PORT))
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError:
        raise UserError(
            f"{key}={address}: nothing answers at {host}:{port}; start the cluster there "
            f"(`ray start --head --port={port}`), fix the address, or leave it out to start Ray here"
        ) from None


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
    if isinstance(cause, ConfigAttributeError) and cause.full_key in MOVED_KEYS:
        return moved_key(cause.full_key)
    if isinstance(cause, ConfigAttributeError) and cause.full_key:  # not in the yaml, not in the schema
        return (
            f"unknown key '{cause.full_key}': check its spelling (`python -m peft_glue.train --cfg job` "
            f"prints every key), or add a new key with a leading +"
        )
    if isinstance(cause, ValidationError) and cause.full_key:
        hint, default = schema_field(cause.full_key)
        expected = describe(hint) if hint is not None else cause.msg.splitlines()[0]
        return wrong_value(cause.full_key, cause.value, expected, default)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return " ".join(lines[:3]) or "invalid command line"
