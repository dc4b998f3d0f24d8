"""The configuration reference, made from the config itself so that it cannot drift: every key of every config
group with its type, default, allowed range or choices and a one-line meaning.

One source for each fact: the type and the range come from the schema (``schema.py``: the dataclasses,
``ranged`` fields, ``TRAINER_RANGES``, ``CALLBACK_RANGES``; a task's or method's own class; the arguments
of the class a logger or callback names), the default from the yaml in ``conf/``, the meaning from the
yaml's comment on the key (else the docstring of the class it configures: Lightning's Trainer, a logger,
a peft config's ``help``). ``markdown()`` is the docs site's page (made at build time by
``docs/hooks.py``); ``help_text()`` is ``python -m peft_glue.train --help`` (conf/hydra/help/peft_glue.yaml).

    python -m peft_glue.training.reference            # the Markdown page on stdout
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import get_class

from peft_glue.errors import UserError
from peft_glue.training.config_paths import CONFIG_DIR
from peft_glue.training.schema import (
    CALLBACK_RANGES,
    TRAINER_RANGES,
    Config,
    Range,
    as_override,
    choices_of,
    dataclass_fields,
    describe,
    nested_schemas,
    signature_fields,
    trainer_fields,
)

SITE_PAGE = "reference/configuration.md"  # where the docs site has this page (mkdocs.yml's nav)
GROUP_KEYS = ("task", "method", "model", "trainer", "logger", "callbacks")  # documented under their group
VALUES_ONLY = ("experiment", "hparams_search", "model")  # options that set keys documented elsewhere
PLUGIN_LAUNCHERS = {"joblib": "sweep", "submitit_slurm": "slurm", "submitit_local": "slurm"}


@dataclass(frozen=True)
class Key:
    """One key of the config as the reference lists it."""

    name: str  # dotted, as on the command line: data.batch_size
    type: str  # in words: a whole number
    default: str  # as the yaml writes it (an interpolation stays ${...})
    allowed: str  # a range (>= 1) or choices; "" when any value of the type goes
    meaning: str  # one line


@dataclass(frozen=True)
class Option:
    """One option of a config group (``conf/<group>/<name>.yaml``)."""

    name: str
    summary: str  # the yaml's opening comment
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Group:
    name: str
    meaning: str  # the comment on the group in conf/config.yaml's defaults list
    default: str  # the option conf/config.yaml picks ("" when none)
    options: tuple[Option, ...]


# ------------------------------------------------------------------------------------------- yaml comments
@dataclass(frozen=True)
class YamlFile:
    """A yaml file's values, its opening comment and the comment on each key (PyYAML drops comments: read
    here from the lines; a comment that goes on in comment-only lines at the same column is joined)."""

    values: dict
    summary: str
    comments: dict[str, str]  # by dotted key as the file writes it
    global_package: bool  # `# @package _global_`: the file's keys are absolute (method.r), else in its group

    def comment(self, group: str, key: str) -> str:
        """The comment on ``key`` of ``group`` (``data.batch_size``), wherever the file puts the group."""
        return self.comments.get(f"{group}.{key}" if self.global_package else key, "")


KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[\w./-]+):(?P<rest>.*)$")


@cache
def read_yaml(path: Path) -> YamlFile:
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            header.append(line[1:].strip())
    summary = " ".join(header).split("  ")[0].strip()  # up to the first example or blank comment line
    summary = summary[:-1] + "." if summary.endswith(":") else summary  # "...can follow:" (an example)
    global_package = any(line.startswith("# @package _global_") for line in lines)
    return YamlFile(yaml.safe_load(path.read_text()) or {}, summary, key_comments(lines), global_package)


def key_comments(lines: list[str]) -> dict[str, str]:
    """The comment on each dotted key: ``key: value  # comment`` and its continuation lines."""
    comments: dict[str, str] = {}
    parents: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    last_key, column = None, -1
    for line in lines:
        match = KEY_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            indent = len(match["indent"])
            parents = [(i, k) for i, k in parents if i < indent]
            last_key = ".".join([k for _, k in parents] + [match["key"]])
            parents.append((indent, match["key"]))
            value, _, comment = match["rest"].partition(" #")
            column = line.index(" #", len(match["indent"]) + len(match["key"])) + 1 if comment else -1
            if comment.strip():
                comments[last_key] = comment.strip()
        elif last_key and line.strip().startswith("#") and line.index("#") == column:
            comments[last_key] += " " + line.strip()[1:].strip()
        else:
            last_key, column = (None, -1) if line.strip() else (last_key, -1)
    return comments


def one_line(text: str) -> str:
    """The first sentence of a docstring's text, Sphinx roles and double backticks made plain."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", " ".join(text.split()))
    text = text.replace("``", "`")
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")


@cache
def docstring_arguments(cls: type) -> dict[str, str]:
    """The ``Args:`` section of a class's (or its ``__init__``'s) docstring, as name -> first sentence,
    for the classes of Lightning and its loggers (Google style), the nearest class up the MRO first."""
    found: dict[str, str] = {}
    for owner in reversed(cls.__mro__):
        for doc in (owner.__doc__, getattr(owner.__dict__.get("__init__"), "__doc__", None)):
            found.update(google_arguments(inspect.cleandoc(doc or "")))
    return found


def google_arguments(doc: str) -> dict[str, str]:
    section = re.search(r"^(Args|Arguments|Parameters):\n(.*?)(?:\n\S|\Z)", doc, re.S | re.M)
    if not section:
        return {}
    arguments: dict[str, list[str]] = {}
    name = None
    for line in section[2].splitlines():
        entry = re.match(r"^ {4}(\*{0,2}\w+)(?: \([^)]*\))?: ?(.*)$", line)
        if entry:
            name = entry[1]
            arguments[name] = [entry[2]]
        elif name and line.startswith("        "):
            arguments[name].append(line.strip())
    return {name: one_line(" ".join(text)) for name, text in arguments.items()}


# -------------------------------------------------------------------------------------------------- keys
def allowed_text(hint: Any, allowed: Range | None) -> str:
    if allowed is not None:
        return allowed.text()
    choices = choices_of(hint)
    return "" if choices is None else ", ".join(repr(choice) for choice in choices)


def default_text(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {default_text(each)}" for key, each in value.items()) + "}"
    return "(required)" if value is dataclasses.MISSING or value == "???" else as_override(value)


def field_ranges(cls: type) -> dict[str, Range]:
    return {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}


def field_help(cls: type) -> dict[str, str]:
    """The ``help`` metadata of a dataclass's fields (peft's config classes document each field so)."""
    return {f.name: one_line(f.metadata["help"]) for f in dataclasses.fields(cls) if f.metadata.get("help")}


def top_level_keys() -> list[Key]:
    """The keys of conf/config.yaml that no group documents: the top level, data, optimizer, scheduler,
    resources (dataclasses of the schema) and the two checkpoints (ModelCheckpoint's arguments)."""
    config = read_yaml(CONFIG_DIR / "config.yaml")
    return list(dataclass_keys("", Config, config.values, config.comments))


def dataclass_keys(prefix: str, cls: type, values: dict, comments: dict[str, str]) -> Iterator[Key]:
    """A schema dataclass's keys in its order; the meaning from the yaml comment, else the field's help."""
    hints, defaults = dataclass_fields(cls)
    ranges, helps = field_ranges(cls), field_help(cls)
    for name, hint in hints.items():
        dotted = f"{prefix}{name}"
        if dotted in GROUP_KEYS:
            continue
        if dotted in ("checkpoint", "best_checkpoint"):
            yield from class_keys(dotted, values[name], comments, CALLBACK_RANGES)
        elif dataclasses.is_dataclass(hint):
            yield from dataclass_keys(f"{dotted}.", hint, values.get(name) or {}, comments)
        else:
            default = values[name] if name in values else defaults.get(name, dataclasses.MISSING)
            meaning = comments.get(dotted) or helps.get(name, "")
            yield Key(
                dotted, describe(hint), default_text(default), allowed_text(hint, ranges.get(name)), meaning
            )


def class_keys(
    prefix: str, node: dict, comments: dict[str, str], ranges: dict[str, Range], comment_prefix: str = ""
) -> list[Key]:
    """The keys of a node that instantiates a class (``_target_``): typed by the class's arguments, the
    meaning from the yaml comment, else from the class's docstring."""
    cls = get_class(node["_target_"])
    hints, _, _ = signature_fields(cls)
    documented = docstring_arguments(cls)
    keys = []
    for name, value in node.items():
        if name == "_target_":
            continue
        comment = comments.get(f"{comment_prefix or prefix}.{name}") or documented.get(name, "")
        hint = hints.get(name, Any)
        keys.append(
            Key(
                f"{prefix}.{name}",
                describe(hint),
                default_text(value),
                allowed_text(hint, ranges.get(name)),
                comment,
            )
        )
    return keys


# ------------------------------------------------------------------------------------------------ groups
def defaults_list() -> dict[str, tuple[str, str]]:
    """conf/config.yaml's defaults: group -> (the option it picks, the comment on it)."""
    chosen: dict[str, tuple[str, str]] = {}
    for line in (CONFIG_DIR / "config.yaml").read_text().splitlines():
        entry = re.match(r"^\s+- (?:optional |override )?([\w/]+): *([\w]+)\s*(?:#\s*(.*))?$", line)
        if entry:
            chosen[entry[1]] = ("" if entry[2] == "null" else entry[2], (entry[3] or "").strip())
    return chosen


def option_files(group: str) -> list[Path]:
    return sorted((CONFIG_DIR / group).glob("*.yaml"))


def groups() -> list[Group]:
    """Every config group of conf/ with its options and their keys."""
    chosen = defaults_list()
    builders = {
        "task": task_keys,
        "method": method_keys,
        "model": model_keys,
        "trainer": trainer_keys,
        "logger": instance_keys,
        "callbacks": instance_keys,
        "hydra/launcher": launcher_keys,
    }
    found = []
    for folder in sorted(p for p in CONFIG_DIR.glob("**/") if any(p.glob("*.yaml")) and p != CONFIG_DIR):
        name = folder.relative_to(CONFIG_DIR).as_posix()
        if name == "hydra/help":
            continue
        build = builders.get(name, set_keys)
        options = tuple(
            Option(path.stem, read_yaml(path).summary, tuple(build(name, path)))
            for path in option_files(name)
        )
        default, meaning = chosen.get(name, ("", ""))
        found.append(Group(name, meaning, default, options))
    return found


def task_keys(group: str, path: Path) -> list[Key]:
    source = read_yaml(path)
    keys = target_keys(group, source, source.values)
    cls = get_class(source.values["_target_"])
    try:
        choices = ", ".join(cls().validation_metric_names)  # what `monitor` may name
    except UserError:  # a dataset of one's own (task=file) has no metrics until its yaml names them
        choices = "one of task.metrics or task.derived"
    return [dataclasses.replace(k, allowed=choices) if k.name == "task.monitor" else k for k in keys]


def target_keys(group: str, source: YamlFile, node: dict) -> list[Key]:
    """The keys of a task or method: its class's dataclass fields (its schema), the defaults from its yaml;
    a peft method's ``config`` typed by the peft config class it names (its fields' ``help``)."""
    cls = get_class(node["_target_"])
    hints, defaults = dataclass_fields(cls)
    ranges, helps = field_ranges(cls), field_help(cls)
    keys = []
    for name, hint in hints.items():
        default = node.get(name, defaults.get(name, dataclasses.MISSING))
        meaning = source.comment(group, name) or helps.get(name, "")
        keys.append(
            Key(
                f"{group}.{name}",
                describe(hint),
                default_text(default),
                allowed_text(hint, ranges.get(name)),
                meaning,
            )
        )
    for name, schema in nested_schemas(cls, {k: v for k, v in node.items() if k != "_target_"}).items():
        hints, _ = dataclass_fields(schema)
        for key, value in (node.get(name) or {}).items():
            meaning = source.comment(group, f"{name}.{key}") or field_help(schema).get(key, "")
            keys.append(
                Key(f"{group}.{name}.{key}", describe(hints.get(key, Any)), default_text(value), "", meaning)
            )
    return keys


def method_keys(group: str, path: Path) -> list[Key]:
    source = read_yaml(path)
    keys = target_keys(group, source, source.values["method"])
    lr = source.values.get("optimizer", {}).get("lr")
    meaning = "this method's default learning rate (AdamW)"
    return [*keys, Key("optimizer.lr", "a number", default_text(lr), "> 0", meaning)]


def model_keys(group: str, path: Path) -> list[Key]:
    """An option of the model group: its ``name_or_path`` (the group's keys: ``common_model_keys``)."""
    source = read_yaml(path)
    return [Key("model.name_or_path", "", default_text(source.values.get("name_or_path")), "", "")]


def common_model_keys() -> list[Key]:
    """The keys every model option has (the schema's ModelConf), with the default option's values."""
    from peft_glue.training.schema import ModelConf

    default = read_yaml(CONFIG_DIR / "model" / f"{defaults_list()['model'][0]}.yaml").values
    values = {k: v for k, v in default.items() if not isinstance(v, dict)}
    return list(dataclass_keys("model.", ModelConf, values, {}))


def trainer_keys(group: str, path: Path) -> list[Key]:
    hints, _ = trainer_fields()
    source = read_yaml(path)
    documented = docstring_arguments(_trainer_class())
    keys = []
    for name, value in source.values.items():
        if name == "defaults":
            continue
        keys.append(
            Key(
                f"trainer.{name}",
                describe(hints.get(name, Any)),
                default_text(value),
                allowed_text(hints.get(name), TRAINER_RANGES.get(name)),
                source.comments.get(name) or documented.get(name, ""),
            )
        )
    return keys


def _trainer_class() -> type:
    import pytorch_lightning as pl

    return pl.Trainer


def instance_keys(group: str, path: Path) -> list[Key]:
    """A logger's or callback's keys: the yaml's one node, ``<option>: {_target_: ..., ...}``."""
    source = read_yaml(path)
    keys = []
    for name, node in source.values.items():
        keys += class_keys(f"{group}.{name}", node, source.comments, CALLBACK_RANGES, comment_prefix=name)
    return keys


def launcher_keys(group: str, path: Path) -> list[Key]:
    source = read_yaml(path)
    return [
        Key(f"hydra.launcher.{name}", "", default_text(value), "", source.comments.get(name, ""))
        for name, value in flatten(source.values).items()
        if name != "_target_"
    ]


def set_keys(group: str, path: Path) -> list[Key]:
    """An experiment or a search sets keys of the other groups: which, and to what."""
    values = {k: v for k, v in read_yaml(path).values.items() if k != "defaults"}
    return [Key(name, "", default_text(value), "", "") for name, value in flatten(values).items()]


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ------------------------------------------------------------------------------------------------ output
def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def key_table(keys: tuple[Key, ...] | list[Key], values_only: bool = False) -> list[str]:
    if values_only:
        lines = ["| key | value |", "| --- | --- |"]
        return lines + [f"| `{k.name}` | `{cell(k.default)}` |" for k in keys]
    lines = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for k in keys:
        lines.append(
            f"| `{k.name}` | {cell(k.type)} | `{cell(k.default)}` | {cell(k.allowed)} | {cell(k.meaning)} |"
        )
    return lines


def markdown() -> str:
    """The configuration reference page."""
    lines = [
        "# Configuration reference",
        "",
        "Made from the config itself each time the site is built (`peft_glue/training/reference.py`):",
        "the types and ranges from the schema, the defaults and meanings from `conf/`. Any key is set on the",
        "command line",
        "(`data.batch_size=32`), a group's option by its name (`method=lora`); "
        "`python -m peft_glue.train --cfg job` prints the composed config.",
        "",
        "## Top-level keys",
        "",
        *key_table(top_level_keys()),
    ]
    for group in groups():
        lines += ["", f"## `{group.name}`", ""]
        if group.meaning or group.default:
            default = f" Default: `{group.name}={group.default}`." if group.default else ""
            lines += [f"{group.meaning[:1].upper()}{group.meaning[1:]}{default}".strip(), ""]
        lines += [f"Options: {', '.join(f'`{o.name}`' for o in group.options)}."]
        if group.name == "model":
            lines += ["", "Every model option has these keys:", "", *key_table(common_model_keys())]
        if group.name == "hydra/launcher":
            plugins = ", ".join(
                f"`{name}` (`peft_glue[{extra}]`)" for name, extra in PLUGIN_LAUNCHERS.items()
            )
            lines += ["", f"Hydra's launcher plugins add: {plugins}."]
        for option in group.options:
            lines += ["", f"### `{group.name}={option.name}`", "", option.summary or "", ""]
            if option.keys:
                lines += key_table(option.keys, values_only=group.name in VALUES_ONLY)
    return "\n".join(lines).rstrip() + "\n"


def help_text() -> str:
    """``python -m peft_glue.train --help``: the groups and their options, the top-level keys, and where the
    full reference is."""
    lines = [
        "python -m peft_glue.train [-m] [group=option ...] [key=value ...]",
        "Fine-tune an encoder on a GLUE task with a (parameter-efficient) method; -m sweeps comma lists.",
        "",
        "== Config groups (group=option; the default in [brackets]) ==",
    ]
    for group in groups():
        options = ", ".join(f"[{o.name}]" if o.name == group.default else o.name for o in group.options)
        lines.append(f"{group.name}: {options}")
    lines += ["", "== Top-level keys (key=value) =="]
    for key in top_level_keys():
        choices = f"({key.allowed}) " if key.type.startswith("one of ") else ""  # a name to pick: its choices
        lines.append(f"{key.name}={key.default}  {choices}{key.meaning}".rstrip())
    lines += [
        "",
        "Every key of every group, with its type, default, range and meaning: docs/" + SITE_PAGE,
        "(`make docs-serve`, or `python -m peft_glue.training.reference`).",
        "The composed config: --cfg job.  Hydra's own flags (--multirun, --config-dir, ...): --hydra-help.",
    ]
    return "\n".join(lines) + "\n"


def hydra_help_template() -> str:
    """``help_text`` for Hydra's help template (``${peft_glue_help:}``), whose ``$`` Hydra substitutes."""
    return help_text().replace("$", "$$")


if __name__ == "__main__":
    print(markdown(), end="")
