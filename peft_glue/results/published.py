"""Published GLUE dev results as data (``published_glue_dev.csv``, each row cited: paper, table) and the
report's section that sets them beside the measured ones where model, method and task match: the difference
in points and whether the published value lies inside the runs' 95% interval. Users add rows with a file of
the same columns (``python -m peft_glue.report ... --published my_rows.csv``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from peft_glue.errors import UserError
from peft_glue.record import COMPLETED, looks_local
from peft_glue.results.formatting import markdown_table
from peft_glue.results.stats import summarize

PUBLISHED_FILE = Path(__file__).with_name("published_glue_dev.csv")
COLUMNS = [
    "paper",  # who published it
    "table",  # where in the paper
    "model",  # the base model's Hub id (or, for a local model, the run's model option)
    "method",  # peft_glue's method name (full, bitfit, lora, adalora, vera, ...)
    "trainable_params",  # as published (125.0M, 0.3M)
    "task",  # peft_glue's task name
    "metric",  # peft_glue's metric name (accuracy, accuracy_mm, f1, mcc, pearson, ...)
    "value",  # in %
    "seeds",  # how many runs the value aggregates ('' when the paper does not say)
    "aggregate",  # median, mean or single ('' when the paper does not say)
    "note",
]
OPTIONAL = {"epoch": "best"}  # which epoch's value the paper reports: best (on dev) or last; default best
HUB_ID = "provenance.base_model.hub_id"


def read_published(files: Sequence[Path] = ()) -> pd.DataFrame:
    """The package's table and the user's files, one row per published value."""
    tables = []
    for file in [PUBLISHED_FILE, *map(Path, files)]:
        if not file.is_file():
            raise UserError(f"--published {file}: no such file; give a CSV with columns {', '.join(COLUMNS)}")
        table = pd.read_csv(file, dtype={"seeds": "string", "aggregate": "string"}, keep_default_na=False)
        missing = [column for column in COLUMNS if column not in table]
        if missing:
            raise UserError(f"{file} lacks the columns {', '.join(missing)} (see {PUBLISHED_FILE.name})")
        table["value"] = pd.to_numeric(table["value"], errors="raise")
        for column, default in OPTIONAL.items():
            table[column] = table[column].replace("", default) if column in table else default
        tables.append(table[[*COLUMNS, *OPTIONAL]])
    return pd.concat(tables, ignore_index=True)


def model_key(run: pd.Series) -> str:
    """The run's base model as the published table names it: its Hub id, else its model option."""
    hub_id = run.get(HUB_ID)
    if isinstance(hub_id, str) and hub_id:
        return hub_id
    source = run.get("model_name_or_path")
    if isinstance(source, str) and source and not looks_local(source) and not Path(source).exists():
        return source
    return str(run.get("model"))


def measured(runs: pd.DataFrame, metric: str, epoch: str = "best") -> list[float]:
    """Each run's value of ``metric`` on GLUE dev, in %: the test split where validation was carved from
    train, else the validation value of the best epoch (LoRA's, AdaLoRA's 'best epoch' on dev) or of the last
    (run_glue.py evaluates the final model)."""
    values = []
    for _, run in runs.iterrows():
        carved = run.get("splits.validation_from") == "train"
        value = run.get(f"test.{metric}") if carved else run.get(f"val.{epoch}.{metric}")
        values.append(math.nan if value is None or pd.isna(value) else 100 * float(value))
    return values


def comparison_rows(runs: pd.DataFrame, published: pd.DataFrame) -> list[dict]:
    done = runs[runs["status"] == COMPLETED].copy()
    if done.empty:
        return []
    done["_model_key"] = done.apply(model_key, axis=1)
    rows = []
    for _, config in done.groupby("_key", sort=False):
        first = config.iloc[0]
        matches = published[
            (published["model"] == first["_model_key"])
            & (published["method"] == first["method.name"])
            & (published["task"] == first["task"])
        ]
        for _, paper in matches.iterrows():
            values = [v for v in measured(config, paper["metric"], paper["epoch"]) if not math.isnan(v)]
            if not values:
                continue
            summary = summarize(values)
            centre = float(np.median(values)) if paper["aggregate"] == "median" else summary.mean
            inside = (
                "n < 2" if summary.n < 2 else "yes" if summary.low <= paper["value"] <= summary.high else "no"
            )
            interval = "–" if summary.n < 2 else f"[{summary.low:.2f}, {summary.high:.2f}]"
            rows.append(
                {
                    "task": first["task"],
                    "model": first["_model_key"],
                    "method": first["method_label"],
                    "metric": paper["metric"],
                    "measured": f"{centre:.2f} ({'median' if paper['aggregate'] == 'median' else 'mean'})",
                    "n": summary.n,
                    "95% interval": interval,
                    "published": f"{paper['value']:.2f}",
                    "source": f"{paper['paper']}, {paper['table']}",
                    "published over": f"{paper['seeds'] or '?'} seeds, {paper['aggregate'] or '?'}",
                    "difference (points)": f"{centre - paper['value']:+.2f}",
                    "published inside the interval": inside,
                }
            )
    return rows


def published_section(runs: pd.DataFrame, files: Sequence[Path] = ()) -> list[str]:
    published = read_published(files)
    rows = comparison_rows(runs, published)
    lines = ["", "## Published results", ""]
    sources = ", ".join(f"`{f}`" for f in [PUBLISHED_FILE.name, *map(str, files)])
    if not rows:
        return lines + [f"No run matches a published value (model, method and task) in {sources}."]
    return lines + [
        f"GLUE dev, in %: the runs' value aggregated as the paper aggregates (median or mean over seeds), "
        f"its 95% t-interval over seeds, and the published value from {sources}. Difference: measured minus "
        "published.",
        "",
        markdown_table(pd.DataFrame(rows)),
    ]
