"""Runs that differ only by seed, gathered into configurations, and the tables shown of them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from peft_glue.record import COMPLETED
from peft_glue.results.formatting import cost_text, distinct, fmt_params, fmt_value, is_missing, mean_std
from peft_glue.results.runs import IDENTITY_SETTINGS, declared_sweeps, identity_key, metric_columns, monitored

COST_COLUMNS = {"train_samples_per_second": ("train samples/s", 1), "peak_memory_mb": ("peak memory (MB)", 0)}


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """The IDENTITY_SETTINGS columns in which these runs differ; the rest are stated once in the header."""
    return [column for column in IDENTITY_SETTINGS if distinct(runs[column]) > 1]


def sort_order(configs: pd.DataFrame) -> pd.DataFrame:
    """By task and model, then methods in their declared order, then swept hyperparameters by value."""
    swept = [column for column in declared_sweeps(configs) if column in configs]
    by = ["task", "model", "method_order", "method.name", *swept, "method_label", "lr"]
    return configs.sort_values(by, key=_sortable)


def _sortable(column: pd.Series) -> pd.Series:
    return column if column.dtype.kind in "if" else column.astype(str)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of completed runs: identity columns, param counts and the runs' metrics.

    Metric columns hold the list of per-seed values; ``mean_std`` formats them.
    """
    completed = runs[runs["status"] == COMPLETED]
    if completed.empty:
        return pd.DataFrame()
    identity_columns = ["_key", "_identity", "task", "method.name", "method_label", "lr", *IDENTITY_SETTINGS]
    identity_columns += ["monitor", "method_order", *(c for c in runs if c.startswith("method_info."))]
    optional = [*declared_sweeps(runs), "trainable_params", "trainable_percent"]
    identity_columns += [c for c in optional if c in runs and c not in identity_columns]
    rows = []
    for _, group in completed.groupby("_key", sort=False):
        row = {column: group[column].iloc[0] for column in identity_columns}
        row.update({metric: group[metric].tolist() for metric in metric_columns(runs)})
        row.update({cost: group[cost].tolist() for cost in COST_COLUMNS if cost in group})
        row.update(seeds=group["seed"].tolist(), n=len(group))
        rows.append(row)
    return sort_order(pd.DataFrame(rows))


def config_table(configs: pd.DataFrame, columns: dict[str, str], settings: list[str]) -> pd.DataFrame:
    """Display columns: the identity ``columns`` and varying ``settings`` first, then params and metrics."""
    table = pd.DataFrame({title: configs[column].map(fmt_value) for column, title in columns.items()})
    for column in settings:
        table[column] = configs[column].map(fmt_value)
    table["trainable params"] = configs.get("trainable_params", pd.Series(dtype=float)).map(fmt_params)
    table["% of model"] = configs.get("trainable_percent", pd.Series(dtype=float)).map(fmt_value)
    for metric, title in metric_columns(configs).items():
        if any(not is_missing(v) for values in configs[metric] for v in values):
            table[title] = configs[metric].map(mean_std)
    for cost, (title, digits) in COST_COLUMNS.items():
        if cost in configs:
            table[title] = configs[cost].map(lambda values, d=digits: cost_text(values, d))
    return table


def families(configs: pd.DataFrame, swept: Sequence[str], by: str) -> list[pd.DataFrame]:
    """Configurations that differ only in the ``swept`` fields, with at least two values of ``by``."""
    keys = configs["_identity"].map(lambda ident: identity_key(ident, swept))
    found = []
    for _, family in configs.groupby(keys, sort=False):
        if family[by].nunique() >= 2:
            found.append(family.sort_values(by))
    return found


def best_values(family: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Per configuration: mean and std (0 for a single run) of the best epoch's monitored metric, in %."""
    means, stds = [], []
    for values in family[f"val.best.{monitored(family)}"]:
        series = pd.Series(values, dtype="float64").dropna() * 100
        means.append(series.mean() if len(series) else math.nan)
        stds.append(series.std() if len(series) > 1 else 0.0)
    return means, stds


def at_picked_rate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task, the runs at the learning rate the comparison section picks (best mean validation value of
    the task's monitor over seeds; one rule for both tables): a rate sweep's 1e-2 collapse is not averaged
    in. ``runs`` hold one configuration but for task and rate."""
    from peft_glue.results.comparison import configurations, pick_learning_rates  # it builds on this module

    kept = []
    for _, task_runs in runs.groupby("task", sort=False):
        if task_runs["lr"].nunique() > 1:
            val_col = f"val.best.{monitored(task_runs)}"
            (picked,) = pick_learning_rates(configurations(task_runs, val_col, val_col))
            task_runs = task_runs[task_runs["lr"] == picked["lr"]]
        kept.append(task_runs)
    return pd.concat(kept)
