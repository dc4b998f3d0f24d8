"""The report's figures (matplotlib, headless): sweeps, learning-rate selection, training curves."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from peft_glue.record import COMPLETED  # noqa: E402
from peft_glue.results.aggregate import best_values  # noqa: E402
from peft_glue.results.formatting import fmt_value  # noqa: E402
from peft_glue.results.runs import monitored, read_metrics  # noqa: E402
from peft_glue.results.stats import summarize  # noqa: E402

LOSS_WINDOW = 10  # the training-loss curve averages this many logged steps (each the loss of one batch)


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
    ax.legend(fontsize="small", loc="lower right")
    return save(fig, path)


def plot_lr_sweep(task: str, task_families: list[pd.DataFrame], settings: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for family in task_families:
        means, stds = best_values(family)
        ax.errorbar(
            family["lr"], means, yerr=stds, marker="o", capsize=3, label=family_label(family, settings)
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"validation {monitored(task_families[0])}, best epoch (%)")
    ax.set_title(f"{task}: learning-rate sweep (mean ± std over seeds)")
    ax.legend(fontsize="small")
    return save(fig, path)


def plot_curves(task: str, task_runs: pd.DataFrame, path: Path) -> Path | None:
    """Training loss per step and the monitored validation metric per epoch; one colour per configuration."""
    monitor = monitored(task_runs)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    colors: dict[str, str] = {}
    drawn = False
    for _, run in task_runs.iterrows():
        metrics = read_metrics(Path(run["run_dir"]))
        if metrics is None or "step" not in metrics:
            continue
        label = f"{run['method_label']} lr={fmt_value(run['lr'])}"
        if run["status"] != COMPLETED:
            label += f" ({run['status']})"
        color = colors.setdefault(label, f"C{len(colors) % 10}")
        if "train/loss" in metrics:
            loss = metrics.dropna(subset=["train/loss"])
            smooth = loss["train/loss"].rolling(LOSS_WINDOW, min_periods=1).mean()  # one batch is noisy
            loss_ax.plot(loss["step"], smooth, color=color, alpha=0.7, lw=1)
            drawn |= not loss.empty
        if f"val/{monitor}" in metrics and "epoch" in metrics:
            val = metrics.dropna(subset=[f"val/{monitor}"])
            acc_ax.plot(val["epoch"], val[f"val/{monitor}"] * 100, color=color, marker="o", alpha=0.7)
            drawn |= not val.empty
    if not drawn:
        plt.close(fig)
        return None
    handles = [plt.Line2D([], [], color=color, label=label) for label, color in colors.items()]
    loss_ax.set(
        xlabel="step",
        ylabel=f"training loss, running mean of {LOSS_WINDOW} logged steps",
        title=f"{task}: training loss (one line per run)",
    )
    acc_ax.set(xlabel="epoch", ylabel=f"validation {monitor} (%)", title=f"{task}: validation {monitor}")
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.legend(handles=handles, fontsize="small")
    return save(fig, path)


def save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_selection(task: str, picked: list[dict], monitor: str, path: Path) -> Path | None:
    swept = [config for config in picked if len(config["grid"]) > 1]
    if not swept:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, config in enumerate(swept):
        color = f"C{i % 10}"
        lrs = [lr for lr, _ in config["curve"]]
        summaries = [summarize(values) for _, values in config["curve"]]
        means = [100 * s.mean for s in summaries]
        errors = [0.0 if math.isnan(s.std) else 100 * s.std for s in summaries]
        ax.errorbar(lrs, means, yerr=errors, marker="o", capsize=3, color=color, label=config["label"])
        best = lrs.index(config["lr"])
        ax.plot([config["lr"]], [means[best]], marker="*", markersize=16, color=color, ls="none")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"validation {monitor}, best epoch (%)")
    ax.set_title(f"{task}: learning rate per method (mean ± std over seeds; ★ picked)")
    ax.legend(fontsize="small")
    return save(fig, path)
