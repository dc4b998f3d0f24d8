"""GLUE submission files from a finished run.

    python -m peft_glue.predict run=outputs/runs/<run>                 # the task's test split
    python -m peft_glue.predict run=outputs/runs/<run> input=some.tsv  # any TSV in the task's GLUE layout

Rebuilds the run's model from its saved config (the frozen base from the model source, then the trained
weights from the run folder) and writes the task's submission file(s) (MRPC.tsv, STS-B.tsv, ...; MNLI:
MNLI-m.tsv, MNLI-mm.tsv and AX.tsv when the diagnostic set is there), each `index<TAB>prediction`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import OmegaConf

from peft_glue.components import assemble
from peft_glue.config import register_resolvers
from peft_glue.data import GlueDataModule
from peft_glue.errors import UserError, exit_with
from peft_glue.export import per_split, write_submissions
from peft_glue.module import GlueClassifier
from peft_glue.rundir import SAVED_CONFIG


def predict(run_dir: Path, input_tsv: Path | None = None, out_dir: Path | None = None) -> list[Path]:
    config_file = run_dir / SAVED_CONFIG
    if not config_file.is_file():
        raise UserError(f"run={run_dir} has no {SAVED_CONFIG}; give the folder of a peft_glue run")
    cfg = OmegaConf.load(config_file)
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
    }
    datamodule = GlueDataModule(
        parts.task,
        parts.tokenizer,
        predict_file=input_tsv,
        virtual_tokens=parts.method.virtual_tokens,
        **data_cfg,
    )
    trainer = pl.Trainer(
        accelerator="auto", devices=1, logger=False, enable_checkpointing=False, enable_model_summary=False
    )
    module = GlueClassifier(parts.model.eval(), parts.task, lr=1.0)
    splits = datamodule.submission_splits()
    predictions = per_split(trainer.predict(module, datamodule=datamodule), splits)
    return write_submissions(out_dir or run_dir, parts.task, predictions)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m peft_glue.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("settings", nargs="+", help="run=PATH, and optionally input=TSV and out=DIR")
    settings = dict(s.split("=", 1) if "=" in s else ("run", s) for s in parser.parse_args(argv).settings)
    unknown = settings.keys() - {"run", "input", "out"}
    if unknown or "run" not in settings:
        usage = "python -m peft_glue.predict run=PATH [input=TSV] [out=DIR]"
        exit_with(f"unknown setting(s) {sorted(unknown)}; usage: {usage}")
    register_resolvers()
    try:
        paths = predict(
            Path(settings["run"]),
            Path(settings["input"]) if "input" in settings else None,
            Path(settings["out"]) if "out" in settings else None,
        )
    except UserError as error:
        exit_with(str(error))
    print(*paths, sep="\n")


if __name__ == "__main__":
    main(sys.argv[1:])
