"""The ``key=value`` command lines of the commands that act on a finished run (``predict``, ``export``): a
bare path is ``run=``, and ``run=`` is required."""

from __future__ import annotations

from collections.abc import Sequence

from peft_glue.errors import UserError


def split_settings(settings: Sequence[str], names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The settings called one of ``names`` (a bare path is ``run=``), and the rest as given."""
    named, rest = {}, []
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            named["run"] = setting
        elif key in names:
            named[key] = value
        else:
            rest.append(setting)
    return named, rest


def require_run(named: dict[str, str], usage: str) -> None:
    """A UserError quoting ``usage`` when no ``run=`` was given."""
    if "run" not in named:
        raise UserError(f"run=PATH is missing; usage: {usage}")
