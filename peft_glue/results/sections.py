"""The sections of ``report.md``, each a function of the runs that returns its Markdown lines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from peft_glue.record import COMPLETED, DRY_RUN, FAILED, METRICS_FILE, RUNNING, STATUSES
from peft_glue.results.aggregate import at_picked_rate, config_table, families, sort_order
from peft_glue.results.curves import plot_curve_grid
from peft_glue.results.formatting import fmt_params, fmt_value, is_missing, markdown_table, mean_std
from peft_glue.results.plots import plot_hyperparameter_sweep, plot_lr_sweep
from peft_glue.results.runs import (
    IDENTITY_SETTINGS,
    declared_sweeps,
    identity_key,
    monitored,
    monitors,
    shared_method_settings,
)


def header(runs: pd.DataFrame, tabled: pd.DataFrame, paths: Sequence[Path], settings: list[str]) -> list[str]:
    counts = runs["status"].fillna("unknown").value_counts()
    statuses = [s for s in STATUSES if s in counts] + sorted(set(counts.index) - set(STATUSES))
    lines = [
        "# Results",
        "",
        f"{len(runs)} runs from {', '.join(f'`{p}`' for p in paths)}: "
        + ", ".join(f"{counts[status]} {status}" for status in statuses)
        + ". Every run is a row of `results.csv`.",
        "",
        "Validation metrics in %, as mean ± sample std over runs that differ only by seed, with n "
        "the number of runs. *best*: the epoch with the best value of the task's monitored metric "
        f"({monitors(runs)}); *last*: the final epoch; *test*: the test split (for a GLUE task, GLUE dev "
        "when validation was carved from train), scored once with the best epoch's checkpoint. Train "
        "samples/s and peak memory "
        "(the process's peak resident memory, or the GPU's peak allocation): mean over the seeds.",
    ]
    shared = [
        f"{c}={fmt_value(tabled[c].iloc[0])}"
        for c in IDENTITY_SETTINGS
        if c not in settings and not tabled.empty
    ]
    if shared:
        lines += ["", f"Shared by every run in the tables: {', '.join(shared)}."]
    for name, text in shared_method_settings(runs).items():
        lines += ["", f"Shared by every {name} run: {text}."]
    return lines


def method_task_section(configs: pd.DataFrame, settings: list[str]) -> list[str]:
    lines = ["", "## Methods × tasks", ""]
    if configs.empty:
        return lines + ["No completed runs."]
    columns = {"task": "task", "method_label": "method", "lr": "lr"}
    return lines + [markdown_table(config_table(configs, columns, settings))]


GLUE_COLUMNS = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-m", "MNLI-mm", "QNLI", "RTE", "WNLI"]


GLUE_TASKS = 9  # MNLI-m and MNLI-mm are one task in the GLUE average


def glue_section(runs: pd.DataFrame) -> list[str]:
    """One row per configuration (all but the task the same), one column per GLUE task in its usual metric
    (``task_info.glue_columns``: CoLA Matthews corr., STS-B mean of Pearson and Spearman, MRPC/QQP mean of F1
    and accuracy, MNLI matched and mismatched accuracy), and the GLUE average: per seed, the mean of the nine
    task scores (MNLI's the mean of m and mm), then mean ± std over the seeds that have every task."""
    prefix = "task_info.glue_columns."
    done = runs[runs["status"] == COMPLETED]
    if done.empty or not any(c.startswith(prefix) for c in done):
        return []
    rows = []
    keys = done["_identity"].map(lambda ident: identity_key(ident, ["task", "lr"]))
    for _, group in done.groupby(keys, sort=False):
        group = at_picked_rate(group)
        first = group.iloc[0]
        row = {"method": first["method_label"], "model": fmt_value(first["model"])}
        scores: dict[object, dict[str, list[float]]] = {}  # seed -> task -> its columns' values
        for column in GLUE_COLUMNS:
            field = f"{prefix}{column}"
            if field not in group:
                row[column] = "–"
                continue
            have = group[group[field].notna()]
            values = [run.get(f"val.best.{run[field]}") for _, run in have.iterrows()]
            row[column] = mean_std(values)
            for (_, run), value in zip(have.iterrows(), values, strict=True):
                if not is_missing(value):
                    task_scores = scores.setdefault(run["seed"], {}).setdefault(run["task"], [])
                    task_scores.append(float(value))
        complete = [
            sum(sum(v) / len(v) for v in tasks.values()) / GLUE_TASKS
            for tasks in scores.values()
            if len(tasks) == GLUE_TASKS
        ]
        row["GLUE avg"] = (
            mean_std(complete) if complete else f"– ({max(map(len, scores.values()), default=0)}/9 tasks)"
        )
        rows.append(row)
    return [
        "",
        "## GLUE",
        "",
        "Validation, best epoch, % (mean ± std over seeds): CoLA Matthews corr.; STS-B mean of Pearson "
        "and Spearman; MRPC and QQP mean of F1 and accuracy; others accuracy. GLUE avg: the mean of the "
        "nine tasks (MNLI-m and MNLI-mm averaged into one), per seed. A method run at several learning "
        "rates on a task counts at the one with the best mean validation value there, not all pooled.",
        "",
        markdown_table(pd.DataFrame(rows)),
    ]


def hyperparameter_sweep_sections(
    runs: pd.DataFrame, configs: pd.DataFrame, settings: list[str], out: Path
) -> list[str]:
    """One section per sweep that a method declares (``Method.sweeps``, e.g. LoRA's rank) and the runs hold;
    the declared sweeps they do not hold are named in one line."""
    lines, absent = [], []
    for column, what in declared_sweeps(runs).items():
        name = column.removeprefix("method.")
        found = []
        if not configs.empty and column in configs:
            found = families(configs.dropna(subset=[column]), [column], column)
        if not found:
            absent.append(f"{what} (`{column}`)")
            continue
        lines += ["", f"## {what} sweep", ""]
        sweep = pd.concat(found)
        columns = {"task": "task", column: name, "lr": "lr"}
        lines.append(markdown_table(config_table(sweep, columns, settings)))
        slug = what.split()[-1].lower()
        for task in sweep["task"].unique():
            task_families = [family for family in found if family["task"].iloc[0] == task]
            path = out / f"{slug}_sweep_{task}.png"
            plot_hyperparameter_sweep(task, task_families, settings, column, what, path)
            lines += [
                "",
                f"![{task}: {monitored(task_families[0])} and trainable parameters vs {name}]({path.name})",
            ]
    if absent:
        lines += [
            "",
            "## Method sweeps",
            "",
            f"None here of: {', '.join(absent)}; each needs completed runs that differ only in it.",
        ]
    return lines


def lr_sweep_section(configs: pd.DataFrame, settings: list[str], out: Path) -> list[str]:
    lines = ["", "## Learning-rate sweep", ""]
    found = [] if configs.empty else families(configs, ["lr"], "lr")
    if not found:
        return lines + [
            "No learning-rate sweep here (needs completed runs that differ only in the "
            "learning rate); plot skipped."
        ]
    sweep = pd.concat(found)
    lines.append("The monitored validation metric at the best epoch, % (mean ± std over seeds).")
    for task in sweep["task"].unique():
        task_sweep = sweep[sweep["task"] == task]
        row_label = task_sweep["method_label"].astype(str)
        for column in settings:
            row_label = row_label + f" {column}=" + task_sweep[column].map(fmt_value)
        lrs = sorted(task_sweep["lr"].unique())
        rows = []
        for label, group in task_sweep.groupby(row_label, sort=False):
            row = {"method": label}
            for lr in lrs:
                match = group[group["lr"] == lr]
                best = match[f"val.best.{monitored(match)}"].iloc[0] if len(match) else None
                row[f"lr={lr:g}"] = mean_std(best) if len(match) else "–"
            rows.append(row)
        table = pd.DataFrame(rows)
        lines += ["", f"### {task}", "", markdown_table(table)]
        task_families = [family for family in found if family["task"].iloc[0] == task]
        path = plot_lr_sweep(task, task_families, settings, out / f"lr_sweep_{task}.png")
        lines += ["", f"![{task}: {monitored(task_sweep)} vs learning rate]({path.name})"]
    return lines


def curves_section(runs: pd.DataFrame, out: Path) -> list[str]:
    lines = ["", "## Training curves"]
    trained = sort_order(runs[runs["status"] != DRY_RUN])
    for task in sorted(trained["task"].dropna().unique()):
        task_runs = trained[trained["task"] == task]
        val = plot_curve_grid(task, task_runs, "val", out / f"curves_{task}.png")
        loss = plot_curve_grid(task, task_runs, "loss", out / f"loss_{task}.png")
        if val is None and loss is None:
            lines += ["", f"{task}: no `{METRICS_FILE}` with logged metrics; plot skipped."]
        for path, what in ((val, "validation metric"), (loss, "training loss")):
            if path is not None:
                lines += ["", f"![{task}: {what}, one panel per configuration]({path.name})"]
    if len(lines) == 2:
        lines += ["", f"No trained runs with a `{METRICS_FILE}`; plots skipped."]
    return lines


def dry_run_section(runs: pd.DataFrame, settings: list[str]) -> list[str]:
    """Dry runs only built the model: their parameter counts, one row per configuration."""
    dry = runs[runs["status"] == DRY_RUN]
    if dry.empty:
        return []
    configs = sort_order(dry.groupby("_key", sort=False).first().assign(n=dry.groupby("_key").size()))
    table = pd.DataFrame({"task": configs["task"], "method": configs["method_label"], "lr": configs["lr"]})
    for column in settings:
        table[column] = configs[column]
    table["trainable params"] = configs["trainable_params"].map(fmt_params)
    table["total params"] = configs["total_params"].map(fmt_params)
    table["% of model"] = configs["trainable_percent"]
    table["runs"] = configs["n"]
    return ["", "## Dry runs (parameter counts only, no training)", "", markdown_table(table)]


def problems_section(runs: pd.DataFrame, roots: Sequence[Path]) -> list[str]:
    """Failed, unfinished and otherwise unusable runs, each by folder: none of them is in the tables."""
    lines = ["", "## Failed and unfinished runs", ""]
    known = {COMPLETED, DRY_RUN}
    problems = runs[~runs["status"].isin(known)]
    if problems.empty:
        return lines + ["None: every run completed (or was a dry run)."]
    # a report remade from a results.csv names its runs below the folder that held them all, as the first did
    roots = [*roots, Path(os.path.commonpath(list(runs["run_dir"])))]
    for status, title in [(FAILED, "Failed"), (RUNNING, "Unfinished (status running)")]:
        selected = problems[problems["status"] == status]
        if not selected.empty:
            lines += [f"### {title}", "", markdown_table(problem_table(selected, roots)), ""]
    other = problems[~problems["status"].isin([FAILED, RUNNING])]
    if not other.empty:
        lines += ["### Other status", "", markdown_table(problem_table(other, roots)), ""]
    return lines


def problem_table(runs: pd.DataFrame, roots: Sequence[Path]) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "run": runs["run_dir"].map(lambda d: relative(Path(d), roots)),
            "status": runs["status"].map(fmt_value),
            "task": runs["task"].map(fmt_value),
            "method": runs["method_label"],
            "seed": runs["seed"].map(fmt_value),
            "epochs done": runs["val_epochs"].map(fmt_value),
        }
    )
    if runs["error"].notna().any():
        table["error"] = runs["error"].map(fmt_value)
    return table


def relative(path: Path, roots: Sequence[Path]) -> str:
    """The run folder relative to the given folder that holds it (short, and unique within that folder)."""
    for root in roots:
        root = Path(root).resolve()
        if path.resolve().is_relative_to(root) and path.resolve() != root:
            return str(Path(root.name) / path.resolve().relative_to(root))
    return str(path)
