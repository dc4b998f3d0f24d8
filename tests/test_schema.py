"""The config schema: every key refuses a value of the wrong type, in one line that names it, before anything
loads; a key added later without a type cannot escape (the walk below covers every key of every option)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from peft_glue.training.config import CONFIG_DIR, check_command_line, group_options, register_resolvers
from peft_glue.training.schema import (
    dataclass_fields,
    instantiated_nodes,
    matches,
    nested_schemas,
    schema_field,
    signature_fields,
    trainer_fields,
)

from .conftest import run_cli
from .test_errors import assert_one_line_error

WRONG = "not_a_number"
EXTRAS = ["logger=[csv,tensorboard]", "callbacks=early_stopping"]  # optional groups: their keys too


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """Every key of the config that holds a value, with its value (a list counts as one value)."""
    found = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted != "model.architecture":
            found.update(leaves(value, f"{dotted}."))
        else:
            found[dotted] = value
    return found


def type_of(cfg: DictConfig, key: str):
    """The type the schema gives ``key``: the dataclass schema, the task's or method's class, Lightning's
    Trainer, or the logger's class. None means the key escaped the schema."""
    group, _, name = key.partition(".")
    if group in ("task", "method"):
        cls = get_class(cfg[group]._target_)
        field, _, inner = name.partition(".")
        nested = nested_schemas(cls, OmegaConf.to_container(cfg[group]))
        if inner and field in nested:
            return dataclass_fields(nested[field])[0].get(inner)
        return {"_target_": str, **dataclass_fields(cls)[0]}.get(name)
    if group == "trainer":
        return trainer_fields()[0].get(name)
    nodes = instantiated_nodes(cfg)
    owner = next((prefix for prefix in nodes if key.startswith(f"{prefix}.")), None)
    if owner is not None:
        hints, _, open_ended = signature_fields(get_class(nodes[owner]._target_))
        return {"_target_": str, **hints}.get(key.removeprefix(f"{owner}."), object if open_ended else None)
    return schema_field(key)[0]


def configs() -> list[tuple[str, list[str]]]:
    """The default config and one config per method and task option (each has its own keys)."""
    choices = [("default", [])]
    choices += [(f"method={m}", [f"method={m}"]) for m in group_options("method")]
    choices += [(f"task={t}", [f"task={t}"]) for t in group_options("task")]
    return choices


@pytest.mark.parametrize(("name", "choice"), configs(), ids=[name for name, _ in configs()])
def test_every_key_refuses_a_value_of_the_wrong_type(name, choice, capsys):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*choice, *EXTRAS])
    values = leaves(OmegaConf.to_container(cfg, resolve=False))
    keys = [k for k in values if name == "default" or k.startswith(choice[0].split("=")[0] + ".")]
    assert keys
    checked = 0
    for key in keys:
        hint = type_of(cfg, key)
        assert hint is not None, f"{key} has no type in the schema"
        if matches(WRONG, hint) or isinstance(values[key], list) and matches([WRONG], hint):
            continue  # takes text (a path, a name, a choice Lightning spells): no wrong type to give
        with pytest.raises(SystemExit) as exit_info:
            check_command_line([*choice, *EXTRAS, f"{key}={WRONG}"])
        error = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and error.startswith("error: ") and "\n" not in error, error
        assert f"{key}={WRONG}" in error and "expected" in error, error
        checked += 1
    # a task's keys are names (its monitor); these methods' only keys are names (_target_, target roles)
    text_only = {"method=full", "method=bitfit", "method=ia3", "method=ln_tuning"}
    assert checked > 0 or name.startswith("task=") or name in text_only


def test_wrong_values_through_the_command_line(tmp_path):
    """As a user meets them: one line naming the key, the value, the type and an example; no traceback."""
    assert_one_line_error(run_cli("seed=abc", cwd=tmp_path), "seed=abc", "a whole number", "e.g. seed=42")
    assert_one_line_error(
        run_cli("trainer.limit_train_batches=-1", "model=minilm", cwd=tmp_path),
        "trainer.limit_train_batches=-1",
        "Lightning refuses it",
    )
    assert_one_line_error(
        run_cli("+trainer.max_epoch=3", cwd=tmp_path), "unknown key 'trainer.max_epoch'", "max_epochs"
    )
    # a sweep with one bad value is refused before its first job runs: nothing trains, nothing is lost
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "seed=1,abc", "dry_run=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert_one_line_error(result, "seed=abc")
    assert not sweep.exists()


@pytest.mark.parametrize(
    "argv",
    [["scheduler.name=cosine_typo"], ["-m", "scheduler.name=constant,cosine_typo"]],
    ids=["run", "sweep"],
)
def test_a_schedule_outside_its_choices_is_one_line_naming_them(argv, tmp_path, capsys):
    """scheduler.name is an Enum of the schema: OmegaConf refuses another name when composing, for a run and
    for any value of a sweep, before the first job."""
    with pytest.raises(SystemExit) as exit_info:
        check_command_line([*argv, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: scheduler.name=cosine_typo is not valid: expected one of 'linear', 'constant', "
        "e.g. scheduler.name=linear"
    )
