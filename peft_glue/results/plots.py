"""The report's sweep figures (matplotlib, headless): hyperparameter and learning-rate sweeps, selection."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from peft_glue.results.aggregate import best_values
from peft_glue.results.figures import plt, save_outside
from peft_glue.results.formatting import fmt_value
from peft_glue.results.palette import method_color
from peft_glue.results.runs import monitored
from peft_glue.results.stats import summarize


def family_label(family: pd.DataFrame, settings: list[str], swept: str | None = None) -> str:
    """A legend entry: the method label without the swept hyperparameter, plus the varying settings."""
    first = family.iloc[0]
    words = [w for w in str(first["method_label"]).split() if not (swept and w.startswith(f"{swept}="))]
    return " ".join(words + [f"{column}={fmt_value(first[column])}" for column in settings])


def plot_hyperparameter_sweep(
    task: str, task_families: list[pd.DataFrame], settings: list[str], column: str, what: str, path: Path
) -> Path:
    """The monitored metric vs a method hyperparameter, with the trainable parameter count on a second
    y-axis (the cost of each value)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    params_ax = ax.twinx()
    name = column.removeprefix("method.")
    for i, family in enumerate(task_families):
        color = f"C{i}"
        means, stds = best_values(family)
        label = f"{family_label(family, settings, name)} lr={fmt_value(family['lr'].iloc[0])}"
        ax.errorbar(family[column], means, yerr=stds, marker="o", capsize=3, color=color, label=label)
        params_ax.plot(
            family[column], family["trainable_params"], ls="--", marker="s", color=color, alpha=0.5
        )
    values = sorted({v for family in task_families for v in family[column]})
    if all(isinstance(v, int | float) and v > 0 for v in values):
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [fmt_value(v) for v in values])
    ax.set_xlabel(f"{what} {name}")
    ax.set_ylabel(f"validation {monitored(task_families[0])}, best epoch (%)")
    params_ax.set_ylabel("trainable parameters (dashed)")
    ax.set_title(f"{task}: {what} sweep (mean ± std over seeds)")
    return legend_outside(fig, ax, path, below=True)  # the parameter axis holds the right side


def plot_lr_sweep(task: str, task_families: list[pd.DataFrame], settings: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for family in task_families:
        means, stds = best_values(family)
        label = family_label(family, settings)
        color = method_color(str(family["method_label"].iloc[0]))
        ax.errorbar(family["lr"], means, yerr=stds, marker="o", capsize=3, label=label, color=color)
    title = f"{task}: learning-rate sweep (mean ± std over seeds)"
    return finish_lr_axes(fig, ax, monitored(task_families[0]), title, path)


def finish_lr_axes(fig: plt.Figure, ax: plt.Axes, monitor: str, title: str, path: Path) -> Path:
    """The axes of a figure of the monitored metric against the learning rate (log scale), saved."""
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"validation {monitor}, best epoch (%)")
    ax.set_title(title)
    return legend_outside(fig, ax, path)


def legend_outside(fig: plt.Figure, ax: plt.Axes, path: Path, below: bool = False) -> Path:
    """The legend right of (or below) the axes, where it covers no data, however many entries it has."""
    if below:
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    else:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    return save_outside(fig, path)


def plot_selection(task: str, picked: list[dict], monitor: str, path: Path) -> Path | None:
    swept = [config for config in picked if len(config["grid"]) > 1]
    if not swept:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for config in swept:
        color = method_color(config["label"])
        lrs = [lr for lr, _ in config["curve"]]
        summaries = [summarize(values) for _, values in config["curve"]]
        means = [100 * s.mean for s in summaries]
        errors = [0.0 if math.isnan(s.std) else 100 * s.std for s in summaries]
        ax.errorbar(lrs, means, yerr=errors, marker="o", capsize=3, color=color, label=config["label"])
        best = lrs.index(config["lr"])
        ax.plot([config["lr"]], [means[best]], marker="*", markersize=16, color=color, ls="none")
    title = f"{task}: learning rate per method (mean ± std over seeds; ★ picked)"
    return finish_lr_axes(fig, ax, monitor, title, path)
