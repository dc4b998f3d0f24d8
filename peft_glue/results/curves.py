"""Training curves that read at any number of methods: small multiples, one panel per configuration on
shared axes, its mean over seeds with the range of the seeds as a band, every other configuration's mean
in grey behind it for context, and the method's own colour (``palette``) in every figure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from peft_glue.record import COMPLETED
from peft_glue.results.figures import plt, save_outside
from peft_glue.results.formatting import fmt_value
from peft_glue.results.palette import method_color
from peft_glue.results.runs import monitored, read_metrics

LOSS_WINDOW = 10  # the training-loss curve averages this many logged steps (each the loss of one batch)
MAX_COLUMNS = 6


@dataclass(frozen=True)
class Curve:
    """One configuration's curve: mean and range over its runs, indexed by step or epoch."""

    title: str
    color: str
    mean: pd.Series
    low: pd.Series
    high: pd.Series


def run_series(metrics: pd.DataFrame, kind: str, monitor: str) -> pd.Series | None:
    """A run's validation metric (%) by epoch, or its training loss (running mean) by step."""
    if kind == "loss":
        if "train/loss" not in metrics:
            return None
        loss = metrics.dropna(subset=["train/loss"])
        smooth = loss["train/loss"].rolling(LOSS_WINDOW, min_periods=1).mean()  # one batch is noisy
        series = pd.Series(smooth.to_numpy(), index=loss["step"].to_numpy())
    else:
        column = f"val/{monitor}"
        if column not in metrics or "epoch" not in metrics:
            return None
        val = metrics.dropna(subset=[column])
        series = pd.Series(val[column].to_numpy() * 100, index=val["epoch"].to_numpy())
    series = series[~series.index.duplicated(keep="last")]
    return series if len(series) else None


def config_curves(task_runs: pd.DataFrame, kind: str) -> list[Curve]:
    """One curve per configuration (runs differing only by seed) that logged ``kind``; a configuration
    whose runs did not all complete says how many did not in its title."""
    monitor = monitored(task_runs)
    curves = []
    for _, runs in task_runs.groupby("_key", sort=False):
        found = []
        for _, run in runs.iterrows():
            metrics = read_metrics(Path(run["run_dir"]))
            series = None if metrics is None else run_series(metrics, kind, monitor)
            if series is not None:
                found.append(series)
        if not found:
            continue
        table = pd.concat(found, axis=1).sort_index()
        first = runs.iloc[0]
        title = f"{first['method_label']} lr={fmt_value(first['lr'])}\n{len(found)} runs"
        unfinished = int((runs["status"] != COMPLETED).sum())
        title += f", {unfinished} not completed" if unfinished else ""
        color = method_color(str(first["method_label"]))
        curves.append(Curve(title, color, table.mean(axis=1), table.min(axis=1), table.max(axis=1)))
    return curves


def plot_curve_grid(task: str, task_runs: pd.DataFrame, kind: str, path: Path) -> Path | None:
    """``kind`` "val": the monitored validation metric per epoch; "loss": the training loss per step."""
    curves = config_curves(task_runs, kind)
    if not curves:
        return None
    columns = min(len(curves), MAX_COLUMNS)
    rows = math.ceil(len(curves) / columns)
    size = (2.5 * columns + 0.6, 2.1 * rows + 0.8)
    fig, axes = plt.subplots(rows, columns, figsize=size, sharex=True, sharey=True, squeeze=False)
    for ax, curve in zip(axes.flat, curves, strict=False):
        for other in curves:  # context: where the others lie
            if other is not curve:
                ax.plot(other.mean.index, other.mean, color="0.82", lw=0.8, zorder=1)
        ax.fill_between(curve.mean.index, curve.low, curve.high, color=curve.color, alpha=0.3, lw=0, zorder=2)
        ax.plot(curve.mean.index, curve.mean, color=curve.color, lw=1.8, zorder=3,
                marker="o" if kind == "val" else None, ms=3)  # fmt: skip
        ax.set_title(curve.title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    monitor = monitored(task_runs)
    if kind == "val":
        axes[0][0].xaxis.set_major_locator(MaxNLocator(integer=True))
        what, x, y = f"validation {monitor}", "epoch", f"validation {monitor} (%)"
    else:
        what, x, y = "training loss", "step", f"training loss, running mean of {LOSS_WINDOW} logged steps"
    fig.supxlabel(x)
    fig.supylabel(y)
    fig.suptitle(f"{task}: {what}, one panel per configuration (line: mean over seeds; band: their range; "
                 "grey: the other panels' means)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return save_outside(fig, path)
