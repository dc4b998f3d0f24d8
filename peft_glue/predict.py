"""GLUE submission files from a finished run.

    python -m peft_glue.predict run=outputs/runs/<run>                 # the task's test split
    python -m peft_glue.predict run=outputs/runs/<run> input=some.tsv  # -> some.predictions.tsv (any TSV in
                                                                        # the task's GLUE layout)
    python -m peft_glue.predict run=outputs/runs/<run> input=new.csv   # a task of one's own (a yaml): CSV,
                                                  # TSV or JSON Lines -> new.predictions.csv, beside each row
    python -m peft_glue.predict run=outputs/runs/<run> out=elsewhere data.data_dir=/data/glue \\
        data.eval_batch_size=64 trainer.accelerator=cpu trainer.precision=32-true

The run's saved config (.hydra/config.yaml) is loaded and the overrides merged into it, written as for
``train``; only the keys that matter for prediction are taken (see ``PREDICT_KEYS``). The Trainer runs on one
device: accelerator auto, devices 1, Lightning's default precision (32-true) unless overridden.

Rebuilds the run's model from its saved config (the frozen base from the model source, then the trained
weights from the run folder) and writes the task's submission file(s) (MRPC.tsv, STS-B.tsv, ...; MNLI:
MNLI-m.tsv, MNLI-mm.tsv and AX.tsv when the diagnostic set is there), each `index<TAB>prediction`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

from peft_glue.errors import UserError, exit_with
from peft_glue.record import SAVED_CONFIG, read_results
from peft_glue.training.artifacts import per_split, write_submission, write_submissions
from peft_glue.training.components import assemble
from peft_glue.training.config import load_saved_config, register_resolvers
from peft_glue.training.data import GlueDataModule
from peft_glue.training.file_task import FileTask
from peft_glue.training.module import GlueClassifier
from peft_glue.training.run_settings import require_run, split_settings
from peft_glue.training.schema import (
    check_trainer_accepts,
    describe,
    matches,
    schema_field,
    trainer_fields,
    wrong_value,
)

PATH_SETTINGS = ("run", "input", "out")
# the keys of the run's config that prediction may override, each with an example value
PREDICT_KEYS = {
    "data.data_dir": "/path/to/glue",  # the GLUE folder moved, or the Hub (null)
    "data.eval_batch_size": 64,
    "data.num_workers": 2,
    "data.pin_memory": True,
    "model.name_or_path": "/path/to/base_model",  # the base model's source moved
    "trainer.accelerator": "cpu",
    "trainer.devices": 1,  # one device: 1, or which one ([1]: the second GPU)
    "trainer.precision": "32-true",
}
TRAINER_DEFAULTS = {"accelerator": "auto", "devices": 1}
USAGE = "python -m peft_glue.predict run=PATH [input=TSV] [out=DIR] [data.eval_batch_size=64 ...]"


def accepted_keys() -> str:
    return ", ".join([*(f"{key}=" for key in PATH_SETTINGS), *PREDICT_KEYS])


def key_type(key: str) -> Any:
    """The type hint of an overridable key: the schema's (data, model) or Lightning Trainer's."""
    group, name = key.split(".", 1)
    return trainer_fields()[0][name] if group == "trainer" else schema_field(key)[0]


def parse_settings(settings: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """The command line: run=, input=, out= (a bare path is run=), and the config overrides, each checked
    (a known key, one value of its type); anything else is a UserError of one line."""
    paths, dotlist = split_settings(settings, PATH_SETTINGS)
    try:
        parsed = OverridesParser.create().parse_overrides(dotlist)
    except Exception as error:  # hydra's override grammar
        message = " ".join(str(error).split())
        raise UserError(f"cannot read the overrides {' '.join(dotlist)}: {message}") from None
    overrides: dict[str, Any] = {}
    for override in parsed:
        key = override.get_key_element()
        if key not in PREDICT_KEYS:
            raise UserError(f"predict takes no setting '{key}'; it accepts {accepted_keys()}")
        if override.is_sweep_override() or override.is_delete():
            raise UserError(f"{key}: predict takes one value, e.g. {key}={PREDICT_KEYS[key]}")
        value, hint = override.value(), key_type(key)
        if not matches(value, hint):
            raise UserError(wrong_value(key, value, describe(hint), PREDICT_KEYS[key]))
        if key == "data.eval_batch_size" and value < 1:
            raise UserError(wrong_value(key, value, "a whole number >= 1", PREDICT_KEYS[key]))
        overrides[key] = value
    require_run(paths, USAGE)
    return paths, overrides


def one_device_trainer(overrides: dict[str, Any]) -> pl.Trainer:
    """The Trainer of ``predict``: one device (submission files are written by this one process)."""
    settings = {
        **TRAINER_DEFAULTS,
        **{k.removeprefix("trainer."): v for k, v in overrides.items() if k.startswith("trainer.")},
    }
    check_trainer_accepts(settings)  # a value Lightning refuses: one line naming the key
    trainer = pl.Trainer(**settings, logger=False, enable_checkpointing=False, enable_model_summary=False)
    if trainer.world_size > 1:
        raise UserError(
            f"trainer.devices={settings['devices']}: predict runs on one device; "
            "e.g. trainer.devices=1, or trainer.devices=[1] for the second GPU"
        )
    return trainer


def predict(
    run_dir: Path,
    input_tsv: Path | None = None,
    out_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[Path]:
    """Predict the task's test sets (or ``input_tsv``) with a finished run; ``overrides`` (checked by
    ``parse_settings``) are merged into the run's saved config."""
    config_file = run_dir / SAVED_CONFIG
    if not config_file.is_file():
        raise UserError(f"run={run_dir} has no {SAVED_CONFIG}; give the folder of a peft_glue run")
    overrides = overrides or {}
    trainer = one_device_trainer(overrides)
    cfg = load_saved_config(config_file)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    keep_trained_labels(cfg, run_dir)
    export_dir = get_class(cfg.method._target_).export_dir  # a class attribute: nothing built twice
    weights = run_dir / export_dir
    if not weights.is_dir():
        raise UserError(f"run={run_dir} has no {export_dir}/ (trained weights): did the run finish?")
    parts = assemble(cfg, trained_weights=weights)
    # GLUE's own splits, nothing carved: the test sets are what is predicted
    data_cfg = {
        **OmegaConf.to_container(cfg.data, resolve=True),
        "train_subset": None,
        "validation_size": None,
        "test_size": None,
    }
    datamodule = GlueDataModule(
        parts.task,
        parts.tokenizer,
        predict_file=input_tsv,
        virtual_tokens=parts.method.virtual_tokens,
        **data_cfg,
    )
    module = GlueClassifier(parts.model.eval(), parts.task, **cfg.optimizer)  # the run's: nothing trains
    splits = datamodule.submission_splits()
    predictions = per_split(trainer.predict(module, datamodule=datamodule), splits)
    folder = out_dir or run_dir
    if input_tsv is not None:  # named after the input: a GLUE name would claim a test set (MNLI-m/-mm)
        path = folder / predictions_file(input_tsv, isinstance(parts.task, FileTask))
        return [write_submission(path, parts.task, predictions[splits[0]], datamodule.raw["test"])]
    return write_submissions(folder, parts.task, predictions, datamodule.raw)


def predictions_file(input_tsv: Path, own_task: bool = False) -> str:
    """``my.tsv`` -> ``my.predictions.tsv``: the file ``input=`` writes, in GLUE's submission format; a task
    of one's own keeps the input's file type (``new.csv`` -> ``new.predictions.csv``, beside each row)."""
    return f"{input_tsv.stem}.predictions{input_tsv.suffix if own_task else '.tsv'}"


def keep_trained_labels(cfg: Any, run_dir: Path) -> None:
    """A task of one's own whose labels were inferred from its training file: the run's labels (results.json),
    so the head's outputs keep their names even where that file has changed or gone."""
    task = cfg.get("task") or {}
    results = read_results(run_dir)
    if "labels" in task and task.labels is None and results is not None and results.task_info is not None:
        OmegaConf.update(cfg, "task.labels", list(results.task_info.labels), merge=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m peft_glue.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "settings",
        nargs="+",
        help=f"run=PATH, optionally input=TSV and out=DIR, and overrides of: {', '.join(PREDICT_KEYS)}",
    )
    register_resolvers()
    try:
        settings, overrides = parse_settings(parser.parse_args(argv).settings)
        paths = predict(
            Path(settings["run"]),
            Path(settings["input"]) if "input" in settings else None,
            Path(settings["out"]) if "out" in settings else None,
            overrides,
        )
    except UserError as error:
        exit_with(str(error))
    print(*paths, sep="\n")


if __name__ == "__main__":
    main(sys.argv[1:])
