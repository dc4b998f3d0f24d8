"""mkdocs hooks (mkdocs.yml): the pages made from the code at build time, so that they cannot drift, and the
page whose file lives outside docs/ (the benchmarks).

- reference/configuration.md: every config key (peft_glue/training/reference.py, also `--help`);
- reference/commands.md: each command's own ``--help`` (argparse; train: Hydra's help template);
- benchmarks/index.md: benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import os
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
NOT_COMMANDS = {"record", "errors"}  # shared modules of peft_glue/, not commands
ORDER = ["train", "predict", "export", "report", "analyze", "submit"]  # the flow of work; new ones after


def on_files(files: Files, config) -> Files:
    from peft_glue.training.reference import SITE_PAGE, markdown

    pages = {
        SITE_PAGE: markdown(),
        "reference/commands.md": commands_page(),
        "benchmarks/index.md": (REPO / "benchmarks" / "README.md").read_text(),
    }
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    return files


def commands() -> list[str]:
    """The commands: the modules of peft_glue/ with a ``main`` (so a new command is listed by itself)."""
    names = [p.stem for p in (REPO / "peft_glue").glob("*.py") if not p.stem.startswith("_")]
    found = [
        n
        for n in names
        if n not in NOT_COMMANDS and "def main(" in (REPO / "peft_glue" / f"{n}.py").read_text()
    ]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def console_scripts() -> dict[str, str]:
    """module -> its console script, as installed (pyproject.toml's [project.scripts])."""
    scripts = importlib.metadata.entry_points(group="console_scripts")
    return {s.value.split(":")[0]: s.name for s in scripts if s.value.startswith("peft_glue.")}


def command_help(name: str) -> str:
    """What ``python -m peft_glue.<name> --help`` prints, run here (argparse exits after printing)."""
    module = importlib.import_module(f"peft_glue.{name}")
    out = io.StringIO()
    argv, columns = sys.argv, os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal: the same page wherever it is built
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            if name == "train":  # Hydra's command line reads sys.argv
                from hydra.core.global_hydra import GlobalHydra

                sys.argv = [f"python -m peft_glue.{name}", "--help"]
                GlobalHydra.instance().clear()
                module.main()
                GlobalHydra.instance().clear()
            else:
                module.main(["--help"])
    finally:
        sys.argv = argv
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return out.getvalue().rstrip()


def commands_page() -> str:
    scripts = console_scripts()
    lines = [
        "# Command-line reference",
        "",
        "Each command's own `--help`, captured when the site is built (`docs/hooks.py`).",
    ]
    for name in commands():
        script = scripts.get(f"peft_glue.{name}")
        also = f" (installed as `{script}`)" if script else ""
        lines += ["", f"## `{name}`", "", f"`python -m peft_glue.{name}`{also}", "", "```text"]
        lines += [command_help(name), "```"]
    return "\n".join(lines) + "\n"
