"""The command line that the results commands share: PATH... [--out DIR], their options, one-line errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from peft_glue.errors import UserError, exit_with


def run_folders_cli(
    argv: Sequence[str] | None,
    prog: str,
    doc: str,
    out_name: str,
    write: Callable[..., Path],
    options: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The command line shared by report and analyze: PATH... [--out DIR] and the command's own ``options``
    (flag -> argparse settings, passed to ``write`` by name), one-line errors."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--out", type=Path, help=f"output folder (default: <first PATH>/{out_name})")
    for flag, settings in (options or {}).items():
        parser.add_argument(flag, **settings)
    args = vars(parser.parse_args(argv))
    paths, out = args.pop("paths"), args.pop("out")
    try:
        return write(paths, out or paths[0] / out_name, **args)
    except UserError as error:
        exit_with(str(error))
