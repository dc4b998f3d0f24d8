"""What the report's figures share: headless matplotlib, and saving with legends placed outside the axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_outside"]

DPI = 120


def save_outside(fig: plt.Figure, path: Path) -> Path:
    """Save with the bounding box grown to hold what lies outside the axes (a legend at the right)."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
