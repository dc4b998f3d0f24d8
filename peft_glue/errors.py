"""Bad input is reported as one line that names the fix, never as a traceback."""

from __future__ import annotations

import sys


class UserError(Exception):
    """A problem with what the user asked for (config, files, network), not a bug in peft_glue."""


def exit_with(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and leave with a non-zero status."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
