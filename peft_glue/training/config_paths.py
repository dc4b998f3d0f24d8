"""Where the Hydra configs are: peft_glue's own (``conf/``, installed as the package ``peft_glue.conf``) and
the folders a user adds with ``--config-dir DIR`` or ``hydra.searchpath=[...]``.

``conf/`` stays at the top of the repository; setuptools maps it to ``peft_glue.conf`` (pyproject.toml), so an
editable install and a wheel both hold it, and Hydra reads it as ``pkg://peft_glue.conf``. ``CONFIG_DIR`` is
the real folder in either install (importlib.resources), for the pre-flight check and the tests.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

CONFIG_PACKAGE = "peft_glue.conf"


def _source_checkout_conf() -> Path | None:
    """``conf/`` beside this package when it runs from a source checkout (PYTHONPATH=. or another checkout
    than the installed one): that checkout's configs, never those of the installed copy."""
    root = Path(__file__).resolve().parent.parent
    conf = root / "conf"
    return conf if (root / "pyproject.toml").is_file() and (conf / "config.yaml").is_file() else None


def _package_conf() -> Path | None:
    try:
        folder = Path(str(importlib.resources.files(CONFIG_PACKAGE))).resolve()
    except ModuleNotFoundError:
        return None
    return folder if (folder / "config.yaml").is_file() else None


_installed_conf = _package_conf()
CONFIG_DIR: Path = _source_checkout_conf() or _installed_conf or Path(__file__).resolve().parents[1] / "conf"
# for @hydra.main: the installed package (a wheel, an editable install), else the checkout's folder itself
CONFIG_PATH: str = f"pkg://{CONFIG_PACKAGE}" if _installed_conf == CONFIG_DIR else str(CONFIG_DIR)


def searchpath_folder(entry: str) -> Path | None:
    """The folder of one Hydra search-path entry: ``file://DIR``, ``DIR`` or ``pkg://package.path``."""
    if entry.startswith("pkg://"):
        try:
            return Path(str(importlib.resources.files(entry.removeprefix("pkg://").replace("/", "."))))
        except (ModuleNotFoundError, TypeError):
            return None
    if entry.startswith("structured://"):
        return None
    return Path(entry.removeprefix("file://")).expanduser().resolve()


def user_searchpath(config_dir: str | None, overrides: list[str]) -> list[str]:
    """The search-path entries a command line adds to peft_glue's configs: ``--config-dir`` (which Hydra
    puts first, so its files win over ours of the same name) and the entries of ``hydra.searchpath=[...]``."""
    entries = [f"file://{Path(config_dir).expanduser().resolve()}"] if config_dir else []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.get_key_element() == "hydra.searchpath" and isinstance(override.value(), list):
            entries += [str(entry) for entry in override.value()]
    return entries


def config_folders(searchpath: list[str]) -> list[Path]:
    """peft_glue's config folder, then every existing folder of ``searchpath``."""
    folders = [CONFIG_DIR]
    for entry in searchpath:
        folder = searchpath_folder(entry)
        if folder is not None and folder.is_dir() and folder not in folders:
            folders.append(folder)
    return folders


def searchpath_arguments(hydra_cfg: Any) -> list[str]:
    """The arguments that give a running job's user config folders to another process running the same
    job (a DDP rank): its ``--config-dir`` and its command line's ``hydra.searchpath=...``."""
    arguments = [
        f"--config-dir={source.path.removeprefix('file://')}"
        for source in hydra_cfg.runtime.config_sources
        if source.provider == "command-line"
    ]
    return arguments + [o for o in hydra_cfg.overrides.hydra if o.startswith("hydra.searchpath=")]
