"""The docs cannot rot: every ``python -m peft_glue.train ...`` line of README.md and docs/ is composed by the
pre-flight check (an unknown key or option in the docs fails here), and the configuration reference and
``--help`` say something of every key."""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser

from peft_glue.training import config
from peft_glue.training.config import chosen_options, group_options, register_resolvers
from peft_glue.training.config_paths import CONFIG_DIR
from peft_glue.training.reference import groups, help_text, top_level_keys
from peft_glue.training.schema import trainer_fields

REPO = Path(__file__).resolve().parent.parent
TRAIN = re.compile(r"(?:python -m peft_glue\.train|peft-glue-train)(?=\s|$)")
FENCE = re.compile(r"^\s*```")
SHELL_LOOP = re.compile(r"^\s*for (\w+) in (\S+)")
# what a line of the docs may hold that only its reader can fill in: such a line is listed, not composed
PLACEHOLDERS = {
    "<": "a placeholder (<run>, <folder>)",
    "$": "a shell variable",
    "...": "left open (...)",
    "ray.init.address=auto": "joins a running Ray cluster",
    "/path/to/": "a path of the reader's",
    "--config-dir": "a config folder of the reader's",
    "hydra.searchpath": "a config folder of the reader's",
}


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    text: str  # the command line, continuations joined

    def arguments(self) -> list[str]:
        """The overrides after the command (shell quoting and trailing comments removed)."""
        words = shlex.split(self.text[TRAIN.search(self.text).end() :], comments=True)
        return [w for w in words if w]

    def why_skipped(self) -> str | None:
        return next((why for mark, why in PLACEHOLDERS.items() if mark in self.text.split(" #")[0]), None)


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def train_commands(path: Path, root: Path = REPO) -> list[DocCommand]:
    """The train commands of a Markdown file: in code blocks, each line from the command on (with its
    backslash continuations); in prose, each code span that starts with the command."""
    lines = path.read_text().splitlines()
    name = path.relative_to(root).as_posix()
    found, prose, fenced, loop_values = [], [], False, {}
    number = 0
    while number < len(lines):
        line = lines[number]
        if FENCE.match(line):
            fenced, loop_values = not fenced, {}
        elif fenced and (loop := SHELL_LOOP.match(line)):
            loop_values[loop[1]] = loop[2]  # `for seed in 1 2 3`: $seed is composed as 1
        elif fenced and (match := TRAIN.search(line)) and "#" not in line[: match.start()]:
            start = number
            while line.rstrip().endswith("\\") and number + 1 < len(lines):
                number += 1
                line = line.rstrip()[:-1] + " " + lines[number].strip()
            for variable, value in loop_values.items():
                line = re.sub(rf"\$\{{?{variable}\b\}}?", value, line)
            found.append(DocCommand(f"{name}:{start + 1}", line[match.start() :]))
        elif not fenced:
            prose.append((number, line))
        number += 1
    text = "\n".join(line for _, line in prose)
    for span in re.finditer(r"`([^`]+)`", text):
        if TRAIN.match(span[1]):
            line_number = prose[text[: span.start()].count("\n")][0] + 1
            found.append(DocCommand(f"{name}:{line_number}", " ".join(span[1].split())))
    return found


def all_commands() -> list[DocCommand]:
    return [command for path in doc_files() for command in train_commands(path)]


def test_the_extraction_joins_continued_lines_and_reads_code_spans(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `python -m peft_glue.train\n  method=bitfit` first.\n\n```bash\n"
        "python -m peft_glue.train -m method=lora \\\n    method.r=1,4   # a sweep\n"
        "# python -m peft_glue.train in a comment\n"
        "for seed in 1 2; do\n"
        "  python -m peft_glue.train seed=$seed hydra.sweep.dir=out/seed${seed}\ndone\n```\n"
    )
    found = train_commands(page, tmp_path)
    assert [c.arguments() for c in found] == [
        ["-m", "method=lora", "method.r=1,4"],
        ["seed=1", "hydra.sweep.dir=out/seed1"],
        ["method=bitfit"],
    ]
    assert [c.where for c in found] == ["page.md:5", "page.md:9", "page.md:1"]


@cache
def known_keys() -> frozenset[str]:
    """Every key the reference lists (each option's own too) and every argument of Lightning's Trainer."""
    keys = {key.name for key in top_level_keys()}
    keys |= {key.name for group in groups() for option in group.options for key in option.keys}
    keys |= {f"model.{name}" for name in ("pretrained", "trust_remote_code", "architecture")}
    return frozenset(keys | {f"trainer.{name}" for name in trainer_fields()[0]})


def unknown_names(arguments: list[str]) -> list[str]:
    """The keys and group options of a command line that the config does not have (``+key`` adds a key;
    Hydra's own ``hydra...`` keys are Hydra's to check)."""
    overrides = get_args_parser().parse_known_args(arguments)[0].overrides  # without -m, --cfg job, ...
    unknown = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_hydra_override() or key.startswith(("+", "~")):
            continue
        if (CONFIG_DIR / key).is_dir():
            unknown += [f"{key}={o}" for o in chosen_options(override) if o not in group_options(key)]
        elif key not in known_keys():
            unknown.append(key)
    return unknown


def test_every_key_and_option_of_the_docs_commands_exists():
    """Fast (no composing): each key and group option of every train command in the README and docs/ is one
    the config has. The slow test below composes each command as the pre-flight check does."""
    commands = [c for c in all_commands() if not c.why_skipped()]
    assert len(commands) >= 40  # the extraction finds the docs' commands
    unknown = [
        f"{c.where}: {', '.join(unknown_names(c.arguments()))}"
        for c in commands
        if unknown_names(c.arguments())
    ]
    assert unknown == []


@pytest.mark.slow  # about 1 s a command on 2 busy cores (Hydra composes each job of each sweep)
def test_every_train_command_of_the_docs_composes(capsys, monkeypatch):
    """Each command of the README and docs/ passes the pre-flight check, as ``python -m peft_glue.train``
    runs it before Hydra starts, on a node with 64 cores and 8 GPUs (the docs' ``resources`` ask for them);
    a command with a reader's placeholder is listed as skipped, with why."""
    monkeypatch.setattr(config, "node_capacity", lambda overrides: (64, 8))
    register_resolvers()
    commands = all_commands()
    failures, skipped = [], []
    for command in commands:
        why = command.why_skipped()
        if why:
            skipped.append(f"{command.where}: {why}")
            continue
        try:
            config.check_command_line(command.arguments())
        except SystemExit:
            failures.append(f"{command.where}: {command.text}\n    {capsys.readouterr().err.strip()}")
    print(f"{len(commands) - len(skipped)} composed; skipped:\n" + "\n".join(skipped))
    assert len(commands) - len(skipped) >= 40
    assert not failures, "\n".join(failures)


def test_every_key_of_the_reference_has_a_meaning():
    """A key added to the schema or to conf/ without a comment (or ``help``) fails here: the reference and
    ``--help`` explain every key."""
    keys = top_level_keys() + [
        key
        for group in groups()
        if group.name not in ("experiment", "hparams_search", "model")  # they set keys of the others
        for option in group.options
        for key in option.keys
    ]
    assert len(keys) > 200
    assert [key.name for key in keys if not key.meaning] == []
    text = help_text()
    assert "data.validation_size=null  N or a fraction" in text
    assert "method: adalora, bitfit," in text and "[lora]" in text


def test_the_schedule_lists_its_choices_in_the_reference_and_help():
    """scheduler.name's choices come from the schema's Enum: the reference's allowed column and ``--help``."""
    key = next(key for key in top_level_keys() if key.name == "scheduler.name")
    assert (key.default, key.allowed) == ("linear", "'linear', 'constant'")
    assert "\nscheduler.name=linear  ('linear', 'constant') after the warmup: linear = " in help_text()


def test_train_help_is_the_reference_text():
    """``python -m peft_glue.train --help`` prints the reference's groups and keys (conf/config.yaml picks
    hydra/help=peft_glue, whose template Hydra fills with string.Template)."""
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert string.Template(cfg.hydra.help.template).substitute() == help_text()
    assert "data.eval_batch_size=${data.batch_size}" in help_text()  # a $ survives Hydra's substitution
