"""How the results wing writes numbers and tables: one cell format, mean ± std over seeds, and the
Markdown table every results command uses."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

METRIC_TITLES = {"accuracy": "acc", "f1": "F1"}


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def distinct(values: pd.Series) -> int:
    """How many different values, a missing one counting as a value of its own."""
    return values.map(fmt_value).nunique()


def fmt_value(value: Any) -> str:
    if is_missing(value):
        return "–"
    if isinstance(value, str) and value.startswith("["):  # a list stored as JSON text
        return "+".join(map(str, json.loads(value)))
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fmt_params(value: Any) -> str:
    return "–" if is_missing(value) else f"{int(value):,}"


def mean_std(values: Iterable[Any], scale: float = 100.0) -> str:
    """``84.2 ± 1.3 (n=3)``: mean and sample standard deviation over the runs that have the value."""
    series = pd.Series(list(values), dtype="float64").dropna() * scale
    if series.empty:
        return "–"
    if len(series) == 1:
        return f"{series.iloc[0]:.1f} (n=1)"
    return f"{series.mean():.1f} ± {series.std():.1f} (n={len(series)})"


def cost_text(values: Iterable[Any], digits: int) -> str:
    """The mean over seeds of a cost (throughput, memory), ``–`` when no run recorded it."""
    series = pd.Series(list(values), dtype="float64").dropna()
    return "–" if series.empty else f"{series.mean():,.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else fmt_value(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(map(str, frame.columns)) + " |",
        "| " + " | ".join("---" for _ in frame.columns) + " |",
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in frame.itertuples(index=False)),
    ]
    return "\n".join(lines)


def natural_order(path: str | Path) -> list[str | int]:
    """Sort key that puts a sweep's job 2 before job 10, and a label "r=4" before "r=16"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]
