"""The config's schema: the type and allowed values of every key, so a wrong value is refused when the config
is composed (before any data or weights load) and reported in one line that names the key.

- The top level and the nodes whose keys are fixed (the ``model`` group, ``data``, ``optimizer``,
  ``scheduler``) are dataclasses registered in Hydra's ConfigStore; ``conf/config.yaml`` lists
  ``config_schema`` first in its defaults, so OmegaConf checks every override against them. The yaml files
  keep the defaults and their comments.
- ``task`` and ``method`` are checked against the dataclass of the class the yaml's ``_target_`` names (a task
  or method class is its own schema: a new one needs no entry here); the checkpoints, each logger and each
  callback against their class's arguments; ``trainer`` against the signature of ``pytorch_lightning.Trainer``
  (names and types), by ``check_typed_groups``.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import logging
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Literal, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from peft_glue.errors import UserError

# ruff: noqa: UP045  (OmegaConf 2.3 reads Optional[...], not X | None, in dataclass fields)


@dataclass(frozen=True)
class Range:
    """The allowed values of a number: from ``low`` (excluded with ``low_open``) to ``high`` (``high_open``).

    Declared on a schema field with ``ranged`` (config dataclasses, and task and method classes, which are
    their own schema) and checked with the types, before the first job starts."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def text(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part)


POSITIVE = Range(low=0, low_open=True)
AT_LEAST_ONE = Range(low=1)
NOT_NEGATIVE = Range(low=0)
FRACTION = Range(low=0, high=1, high_open=True)  # [0, 1)


def ranged(default: Any, allowed: Range, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field whose numbers must lie in ``allowed`` (each element, for a list); ``help``: its
    meaning, for keys that no yaml comment explains (the configuration reference, training/reference.py)."""
    return field(default=default, metadata={"range": allowed, "help": help}, **kwargs)


def documented(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its one-line meaning (``help``, as peft's config classes write it), for keys
    that no yaml comment explains: the same for every option of a group, or set only by an experiment."""
    return field(default=default, metadata={"help": help}, **kwargs)


def range_error(key: str, value: Any, allowed: Range, example: Any = None) -> str | None:
    """The one-line message when a number (or a list's element) lies outside ``allowed``; None when fine."""
    values = value if isinstance(value, list | tuple | ListConfig) else [value]
    for each in values:
        if isinstance(each, int | float) and not isinstance(each, bool) and not allowed.contains(each):
            return wrong_value(key, value, f"a number {allowed.text()}", example)
    return None


def check_field_ranges(prefix: str, values: Mapping[str, Any], schema: type) -> None:
    """Raise a UserError for the first value of ``values`` outside its field's declared range."""
    for entry in dataclasses.fields(schema):
        allowed = entry.metadata.get("range")
        if allowed is None or entry.name not in values:
            continue
        default = entry.default if entry.default not in (dataclasses.MISSING, MISSING) else None
        key = f"{prefix}.{entry.name}" if prefix else entry.name
        error = range_error(key, values[entry.name], allowed, default)
        if error:
            raise UserError(error)


@dataclass
class ModelConf:
    name_or_path: str = documented(
        MISSING, "a Hugging Face Hub name or a local folder of a transformers model"
    )
    hub_id: Optional[str] = documented(
        None, "the Hub model that name_or_path is a copy of: cards and provenance name it"
    )
    pretrained: bool = documented(
        True, "load the pretrained weights; false = random weights of `architecture`"
    )
    trust_remote_code: bool = documented(False, "run the model repository's own code (transformers' option)")
    architecture: Optional[dict[str, Any]] = documented(
        None,
        "config.json-style keys (model_type, hidden_size, ...), so model.pretrained=false builds offline",
    )


@dataclass
class DataConf:
    data_dir: Optional[str] = None
    batch_size: int = ranged(16, AT_LEAST_ONE)
    eval_batch_size: int = ranged(16, AT_LEAST_ONE)
    max_length: int = ranged(128, Range(low=2))
    group_by_length: bool = True
    num_workers: int = ranged(0, NOT_NEGATIVE)
    pin_memory: Optional[bool] = None
    pad_to_multiple_of: Optional[int] = ranged(None, AT_LEAST_ONE)
    train_subset: Optional[int] = ranged(None, AT_LEAST_ONE)
    # a count (a whole number) or a fraction in (0, 1); whether it leaves both sides non-empty is known
    # only once the training set is read (training/splits.py)
    validation_size: Optional[float] = ranged(None, POSITIVE)
    test_size: Optional[float] = ranged(None, POSITIVE)  # the same, for a test split (no test file)
    split_seed: int = 0


@dataclass
class OptimizerConf:
    lr: float = ranged(MISSING, POSITIVE, help="the peak learning rate; each method's yaml sets its default")
    weight_decay: float = ranged(0.01, NOT_NEGATIVE)
    betas: list[float] = ranged(dataclasses.MISSING, FRACTION, default_factory=lambda: [0.9, 0.999])
    eps: float = ranged(1e-8, POSITIVE)
    head_lr: Optional[float] = ranged(
        None, POSITIVE, help="the task head's peak learning rate; null: optimizer.lr (VeRA's recipe sets one)"
    )


class ScheduleName(StrEnum):
    """The learning-rate schedules of ``scheduler.name``. An Enum, not a Literal: OmegaConf 2.3 checks an Enum
    field's value when the config is composed and has no Literal type. A StrEnum compares equal to its text
    (``"linear"``), but ``yaml.safe_dump`` refuses it: containers of the config are made with
    ``enum_to_str=True`` (training/tracking.py)."""

    linear = "linear"  # decays linearly to 0 at the last step
    constant = "constant"  # stays at the peak


@dataclass
class SchedulerConf:
    name: ScheduleName = ScheduleName.linear
    warmup_ratio: float = ranged(0.0, FRACTION)


@dataclass
class ResourcesConf:
    num_cpus: Optional[float] = ranged(
        None, POSITIVE
    )  # cores one job uses (its torch threads; what Ray reserves)
    num_gpus: Optional[float] = ranged(
        None, NOT_NEGATIVE
    )  # GPUs one job reserves from Ray; a fraction shares one GPU


@dataclass
class Config:
    task: Any = MISSING  # checked against its class (check_typed_groups)
    method: Any = MISSING  # checked against its class
    model: ModelConf = MISSING
    trainer: dict[str, Any] = MISSING  # checked against pytorch_lightning.Trainer's signature
    logger: Optional[dict[str, Any]] = None  # each checked against its class's arguments
    callbacks: Optional[dict[str, Any]] = None  # each checked against its class's arguments
    seed: int = 42
    dry_run: bool = False
    resume: Optional[str] = None
    init_from: Optional[str] = None  # a run or export folder, or sweep:<task>: start from its trained weights
    merge: bool = False
    submission: bool = True
    cpu_dropout: bool = True
    frozen_bf16: bool = True
    compile: Optional[bool] = None  # None: only where it pays back (training/compiled_step.py)
    threads: Optional[int] = ranged(None, AT_LEAST_ONE)
    resources: ResourcesConf = field(default_factory=ResourcesConf)
    checkpoint: dict[str, Any] = MISSING  # checked against its class (ModelCheckpoint)
    best_checkpoint: dict[str, Any] = MISSING  # checked against its class (ModelCheckpoint)
    optimizer: OptimizerConf = field(default_factory=OptimizerConf)
    scheduler: SchedulerConf = field(default_factory=SchedulerConf)
    data: DataConf = field(default_factory=DataConf)
    lr_step: Optional[int] = documented(None, "experiment=lr_comparison: the position in each method's grid")
    lr_grid: Optional[dict[str, list[float]]] = documented(
        None, "experiment=lr_comparison: each method's learning-rate grid"
    )
    recipe: Optional[dict[str, Any]] = documented(
        None, "conf/experiment/*_paper.yaml: a paper's per-task values"
    )


# Lightning's arguments (the trainer group, the callbacks) have no dataclass to declare a range on: here.
TRAINER_RANGES = {
    "max_epochs": AT_LEAST_ONE,
    "max_steps": Range(low=-1),  # -1: no limit
    "log_every_n_steps": AT_LEAST_ONE,
    "accumulate_grad_batches": AT_LEAST_ONE,
    "check_val_every_n_epoch": AT_LEAST_ONE,
    "gradient_clip_val": NOT_NEGATIVE,
}
CALLBACK_RANGES = {"patience": NOT_NEGATIVE, "min_delta": NOT_NEGATIVE, "save_top_k": Range(low=-1)}


def check_ranges(cfg: DictConfig) -> None:
    """Every number of the composed config within its declared range (``ranged`` fields of the schema,
    TRAINER_RANGES, CALLBACK_RANGES), else a UserError naming the key, the range and an example."""

    ranged_keys = [entry.name for entry in dataclasses.fields(Config) if "range" in entry.metadata]
    check_field_ranges("", {key: cfg.get(key) for key in ranged_keys if key in cfg}, Config)
    for name, schema in typing.get_type_hints(Config).items():  # the nodes with a dataclass schema
        node = cfg.get(name)
        if dataclasses.is_dataclass(schema) and isinstance(node, DictConfig):
            check_field_ranges(name, resolved_items(node), schema)
    checks = [("trainer", cfg.get("trainer"), TRAINER_RANGES)]
    checks += [(prefix, node, CALLBACK_RANGES) for prefix, node in instantiated_nodes(cfg).items()]
    for prefix, node, ranges in checks:
        for name, value in (resolved_items(node) if node is not None else {}).items():
            error = name in ranges and range_error(f"{prefix}.{name}", value, ranges[name])
            if error:
                raise UserError(error)


def register_schema() -> None:
    """Put the schema in Hydra's ConfigStore as ``config_schema`` (first in conf/config.yaml's defaults)."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def schema_field(dotted_key: str) -> tuple[Any, Any]:
    """The type hint and default of a key of the dataclass schema (``data.batch_size``), or (None, None)."""
    node: Any = Config
    hint: Any = None
    default: Any = None
    element = re.search(r"\[\d+\]$", dotted_key)  # one element of a list: its element type
    for name in re.sub(r"\[\d+\]$", "", dotted_key).split("."):
        if not dataclasses.is_dataclass(node):
            return None, None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if name not in fields:
            return None, None
        hint = typing.get_type_hints(node)[name]
        entry = fields[name]
        default = entry.default if entry.default is not dataclasses.MISSING else None
        node = hint
    if element is not None:
        return (typing.get_args(hint) or (Any,))[0], None
    return hint, None if default is MISSING else default


def check_resources(num_cpus: float | None, num_gpus: float | None, cores: int, gpus: int | None) -> None:
    """What one job asks of a node fits the node (``gpus``: its GPU count; None on a Ray cluster, whose
    nodes are not known before it runs): a job that can never be placed is one line now, not a sweep that
    waits for ever (Ray queues an infeasible task) or trains on the CPU unnoticed."""
    if num_cpus is not None and num_cpus <= 0:
        raise UserError(f"resources.num_cpus={num_cpus:g} is not valid: expected a number > 0, e.g. 1")
    if num_cpus is not None and gpus is not None and num_cpus > cores:
        raise UserError(
            f"resources.num_cpus={num_cpus:g} asks for more cores than this machine has ({cores}): "
            f"e.g. resources.num_cpus={max(1, cores // 2)}"
        )
    if num_gpus is None or num_gpus == 0:
        return
    if num_gpus < 0 or (num_gpus > 1 and not float(num_gpus).is_integer()):
        raise UserError(
            f"resources.num_gpus={num_gpus:g} is not valid: expected 0, a share of one GPU (0.25) or a "
            "whole number of GPUs"
        )
    if gpus == 0:
        share = "a share of a GPU" if num_gpus < 1 else f"{num_gpus:g} GPU(s)"
        raise UserError(
            f"resources.num_gpus={num_gpus:g} asks for {share}, and this machine has no GPU: "
            "resources.num_gpus=0, or join a Ray cluster with GPUs (hydra.launcher.ray.init.address=...)"
        )
    if gpus is not None and num_gpus > gpus:
        raise UserError(
            f"resources.num_gpus={num_gpus:g} asks for more GPUs than this machine has ({gpus}): "
            f"e.g. resources.num_gpus={gpus}"
        )


# ---------------------------------------------------------------------------------------------- values
def choices_of(hint: Any) -> tuple | None:
    """The values of a key with a fixed set of them: a Literal's (Lightning's arguments, task and method
    classes) or an Enum's (the dataclass schema: OmegaConf reads Enum, not Literal); None for other types."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return tuple(member.value for member in hint)
    return None


def describe(hint: Any) -> str:
    """A type hint in words: ``a whole number``, ``true or false``, ``one of 'a', 'b'``, ``null``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "anything"
    if hint is type(None):
        return "null"
    if (choices := choices_of(hint)) is not None:
        return "one of " + ", ".join(repr(choice) for choice in choices)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args if describe(a)))
    if origin in (list, tuple, Iterable) or hint in (list, tuple):
        return f"a list ({describe(args[0])} each)" if args else "a list"
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping"
    return {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        datetime.timedelta: "a duration",
    }.get(hint, "")  # other classes cannot come from a yaml file: not offered


def matches(value: Any, hint: Any) -> bool:
    """Whether a value from the config fits a type hint (as far as a yaml value can)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args and type(value) in {type(a) for a in args}
    if isinstance(hint, type) and issubclass(hint, Enum):
        return isinstance(value, hint) or value in choices_of(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin in (list, tuple, Iterable) or hint in (list, tuple):
        return isinstance(value, list | tuple | ListConfig) and all(
            matches(v, args[0]) for v in value if args
        )
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, dict | DictConfig)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is datetime.timedelta:
        return isinstance(value, str | dict | DictConfig)
    return False  # an instance of a class cannot come from a yaml file


def as_override(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | ListConfig):
        return "[" + ",".join(as_override(v) for v in value) + "]"
    return str(value)


def wrong_value(key: str, value: Any, expected: str, example: Any = None) -> str:
    """The one-line message for a value of the wrong type: the key, the value, what it expects, an example."""
    line = f"{key}={as_override(value)} is not valid: expected {expected}"
    if example is not None and not (isinstance(example, str) and example.startswith("${")):
        line += f", e.g. {key}={as_override(example)}"
    return line


MOVED_KEYS = {"method.lr": "optimizer.lr"}  # keys of older versions -> where the value lives now


def moved_key(key: str, value: str = "...") -> str:
    """The one line for a key of an older version: where its value goes now."""
    return f"{key} has moved: use {MOVED_KEYS[key]}={value}"


def check_fields(
    prefix: str, values: Mapping[str, Any], hints: dict[str, Any], defaults: Mapping, open_ended: bool = False
) -> None:
    """Every key of ``values`` is a field in ``hints`` (unless ``open_ended``) and its value fits the field's
    type (``defaults`` gives the example)."""
    for name, value in values.items():
        key = f"{prefix}.{name}"
        if name not in hints and open_ended:
            continue
        if key in MOVED_KEYS:
            raise UserError(moved_key(key, as_override(value)))
        if name not in hints:
            known = ", ".join(sorted(hints))
            raise UserError(f"unknown key '{key}'; the keys of {prefix} are: {known}")
        if value is not None and isinstance(value, str) and value.startswith("${"):
            continue  # an interpolation that could not be resolved here (e.g. ${hydra:...})
        if not matches(value, hints[name]):
            raise UserError(wrong_value(key, value, describe(hints[name]), defaults.get(name)))


def dataclass_fields(cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """The type hints (Any where they cannot be read) and defaults of a dataclass's init fields."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    fields = [f for f in dataclasses.fields(cls) if f.init]
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    return {f.name: hints.get(f.name, Any) for f in fields}, defaults


def nested_schemas(cls: type, values: Mapping[str, Any]) -> dict[str, type]:
    """Dataclasses that type the keys of a mapping field of a task or method (the generic peft method's
    ``config``: the peft config class it names)."""
    hook = getattr(cls, "nested_schemas", None)
    return hook(dict(values)) if hook is not None else {}


class LazyExamples(Mapping):
    """The example values of a group, read only when a message asks for one."""

    def __init__(self, node: Callable[[], DictConfig | None], fallback: Mapping) -> None:
        self._node, self._fallback, self._values = node, fallback, None

    def values_(self) -> Mapping:
        if self._values is None:
            node = self._node()
            self._values = resolved_items(node) if node is not None else self._fallback
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self.values_()[key]

    def __iter__(self):
        return iter(self.values_())

    def __len__(self) -> int:
        return len(self.values_())


def signature_fields(
    cls: type, leave_out: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The keyword arguments of ``cls`` (its type hints, Any where they cannot be read, and defaults), and
    whether it also takes arbitrary ``**kwargs``."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    parameters = inspect.signature(cls.__init__).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    names = [
        n
        for n, p in parameters.items()
        if n not in ("self", *leave_out) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    defaults = {
        n: parameters[n].default for n in names if parameters[n].default is not inspect.Parameter.empty
    }
    return {n: hints.get(n, Any) for n in names}, defaults, open_ended


def trainer_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """The arguments of ``pytorch_lightning.Trainer`` that a config may set (not logger and callbacks,
    which peft_glue builds), with their type hints and defaults."""
    import pytorch_lightning as pl

    hints, defaults, _ = signature_fields(pl.Trainer, leave_out=("logger", "callbacks"))
    return hints, defaults


def resolved_items(node: DictConfig) -> dict[str, Any]:
    """The node's values, interpolations resolved where they can be (``${hydra:...}`` cannot before Hydra
    runs: such values are kept as their ``${...}`` text and not checked)."""
    items = {}
    for key in node:
        try:
            value = node[key]
        except Exception:
            value = OmegaConf.to_container(node, resolve=False)[key]
        items[str(key)] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return items


def instantiated_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The nodes peft_glue instantiates with their ``_target_`` (besides task and method), by key."""
    nodes = {key: cfg.get(key) for key in ("checkpoint", "best_checkpoint")}
    for group in ("logger", "callbacks"):
        nodes.update({f"{group}.{name}": node for name, node in (cfg.get(group) or {}).items()})
    return {key: node for key, node in nodes.items() if isinstance(node, DictConfig) and "_target_" in node}


def check_typed_groups(cfg: DictConfig, examples: Callable[[], DictConfig] | None = None) -> None:
    """Check ``task`` and ``method`` against their classes, each logger against its class and ``trainer``
    against Lightning's Trainer; ``examples`` (composed only when a message needs it: the config without the
    user's values) gives the example in a message."""

    def example_values(group: str, fallback: Mapping) -> Mapping:
        return LazyExamples(lambda: OmegaConf.select(examples(), group) if examples else None, fallback)

    for group in ("task", "method"):
        node = cfg.get(group)
        if node is None or "_target_" not in node:
            continue
        try:
            cls = get_class(node._target_)
        except Exception as error:
            raise UserError(f"{group}._target_={node._target_} cannot be imported ({error})") from None
        if not dataclasses.is_dataclass(cls):
            continue
        values = {k: v for k, v in resolved_items(node).items() if k != "_target_"}
        hints, defaults = dataclass_fields(cls)
        check_fields(group, values, hints, example_values(group, defaults))
        check_field_ranges(group, values, cls)
        for key, schema in nested_schemas(cls, values).items():
            hints, defaults = dataclass_fields(schema)
            check_fields(f"{group}.{key}", values.get(key) or {}, hints, defaults)
    for prefix, node in instantiated_nodes(cfg).items():  # each against its class's arguments
        hints, defaults, open_ended = signature_fields(get_class(node._target_))
        values = {k: v for k, v in resolved_items(node).items() if k != "_target_"}
        check_fields(prefix, values, hints, example_values(prefix, defaults), open_ended)
    if cfg.get("trainer") is not None:
        hints, defaults = trainer_fields()
        values = resolved_items(cfg.trainer)
        check_fields("trainer", values, hints, example_values("trainer", defaults))
        check_trainer_accepts(values)
    check_ranges(cfg)


def check_trainer_accepts(values: dict[str, Any]) -> None:
    """Build a Trainer with these values (nothing runs: no data, no model), so that a value Lightning refuses
    is one line naming the key now, not a traceback later."""
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    given = {k: v for k, v in values.items() if not (isinstance(v, str) and v.startswith("${"))}
    quiet = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:  # Lightning's notices belong to the real run, not to this check
            logger.setLevel(logging.ERROR)
        pl.Trainer(**given, logger=False, callbacks=[])
    except (MisconfigurationException, ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        named = [k for k in given if k in message] or [k for k in given if str(given[k]) in message]
        where = ", ".join(f"trainer.{k}={as_override(given[k])}" for k in named[:2]) or "trainer"
        raise UserError(f"{where}: Lightning refuses it: {message}") from None
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
