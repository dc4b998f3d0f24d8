"""Command-line options every benchmark shares: task and method (conf/'s options), batch size, GLUE folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.hydra_config import config_options

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_glue_dir() -> str:
    """$GLUE_DIR, else ../shared/data/glue next to the repository."""
    return os.environ.get("GLUE_DIR") or str(REPO_ROOT.parent / "shared" / "data" / "glue")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """--task, --method (options of conf/task and conf/method), --batch-size and --glue-dir."""
    parser.add_argument("--task", choices=config_options("task"), default="sst2")
    parser.add_argument("--method", choices=config_options("method"), default="lora")
    parser.add_argument("--batch-size", type=int, default=32)
    default_glue = default_glue_dir()
    parser.add_argument("--glue-dir", type=Path, default=Path(default_glue), help=f"default {default_glue}")
