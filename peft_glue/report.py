"""Gather the results.json of runs and sweeps into results.csv, a Markdown report and plots.

    python -m peft_glue.report outputs/method_comparison outputs/lora_rank [--out DIR] [--aso-iterations N]

Runs that differ only by seed form one configuration, reported as mean ± std (n=K). Failed, unfinished
and dry runs are listed too, so that a missing number is never a silent gap in a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from peft_glue.errors import UserError, exit_with  # noqa: E402
from peft_glue.rundir import COMPLETED, DRY_RUN, FAILED, METRICS_FILE, RESULTS_FILE, RUNNING, STATUSES  # noqa: E402
from peft_glue.stats import ASO_ITERATIONS  # noqa: E402

# Short column titles of known metrics (any other metric is titled by its name); all are shown in %.
METRIC_TITLES = {"accuracy": "acc", "f1": "F1"}
NOT_METRICS = ("epoch", "step")  # also in a val_history entry
DEFAULT_MONITOR = "accuracy"  # for results.json files written before task_info existed
UNKNOWN_ORDER = 100  # methods without method_info come after the ones that say where they go
# Identity fields besides task and method that are shown as columns only where runs differ in them.
SETTINGS = ["model", "batch_size", "max_epochs", "train_subset", "validation_size"]
# What a configuration costs, shown as the mean over its seeds: results.json field -> (title, decimals).
COST_COLUMNS = {"train_samples_per_second": ("train samples/s", 1), "peak_memory_mb": ("peak memory (MB)", 0)}
LOSS_WINDOW = 10  # the training-loss curve averages this many logged steps (each the loss of one batch)


# ---------------------------------------------------------------------------------------------- loading


def find_results(paths: Iterable[Path]) -> list[Path]:
    """Every results.json at or below the given run or multirun folders, each once."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path} does not exist; give run or multirun folders (e.g. outputs/multirun)")
        files = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE), key=natural_order)
        found.update(dict.fromkeys(file.resolve() for file in files))
    return list(found)


def natural_order(path: str | Path) -> list[str | int]:
    """Sort key that puts a sweep's job 2 before job 10, and a label "r=4" before "r=16"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns; lists become JSON text so that a CSV cell holds them."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity(record: dict) -> dict[str, Any]:
    """What makes two runs the same configuration: every identity field of results.json except the seed.

    A failed run may lack ``optimizer``; its learning rate is then the method's default, as in the config.
    """
    method = dict(record.get("method") or {})
    return {
        "task": record.get("task"),
        "model": record.get("model"),
        "method": method,
        "lr": (record.get("optimizer") or {}).get("lr", method.get("lr")),
        "batch_size": record.get("batch_size"),
        "max_epochs": record.get("max_epochs"),
        "train_subset": record.get("train_subset"),
        "validation_size": record.get("validation_size"),  # carved from train (None: GLUE dev validated)
    }


def identity_key(ident: dict[str, Any], without: Sequence[str] = ()) -> str:
    """``ident`` as canonical JSON, leaving out the dotted fields in ``without`` (the swept ones)."""
    ident = json.loads(json.dumps(ident, default=str))  # a deep copy
    for dotted in without:
        *parents, leaf = dotted.split(".")
        node = ident
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(leaf, None)
    return json.dumps(ident, sort_keys=True)


def load_runs(paths: Iterable[Path]) -> pd.DataFrame:
    """One row per run found below ``paths``: the flattened results.json plus its folder and config id."""
    rows = []
    for file in find_results(paths):
        try:
            record = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as error:  # listed as a failed run, not dropped
            record = {"status": "unreadable", "error": f"cannot read {file.name}: {error}"}
        history = record.pop("val_history", None)
        ident = identity(record)
        key = identity_key(ident)
        rows.append(
            {
                "run_dir": str(file.parent),
                "config": hashlib.sha1(key.encode()).hexdigest()[:8],
                **flatten(record),
                "lr": ident["lr"],
                "val_epochs": len(history) if isinstance(history, list) else None,
                "_identity": ident,
                "_key": key,
            }
        )
    if not rows:
        raise UserError(f"no {RESULTS_FILE} found below {', '.join(map(str, paths))}")
    runs = pd.DataFrame(rows)
    for column in ["status", "task", "model", "seed", "method.name", "error", *SETTINGS]:
        if column not in runs:
            runs[column] = None
    runs["monitor"] = runs.get("task_info.monitor", pd.Series(None, index=runs.index)).fillna(DEFAULT_MONITOR)
    runs["method_order"] = runs.get("method_info.order", pd.Series(None, index=runs.index))
    runs["method_order"] = runs["method_order"].fillna(UNKNOWN_ORDER)
    runs["method_label"] = method_labels(runs)
    return runs


def metric_columns(runs: pd.DataFrame) -> dict[str, str]:
    """results.json field -> table column, for every validation metric the runs have: best, last, and the
    test split's value (the best epoch's checkpoint scored once) where validation was carved from train."""
    names = [c.removeprefix("val.best.") for c in runs if c.startswith("val.best.")]
    columns = {}
    for name in (n for n in names if n not in NOT_METRICS):
        title = METRIC_TITLES.get(name, name)
        columns[f"val.best.{name}"] = f"{title} (best)"
        columns[f"val.last.{name}"] = f"{title} (last)"
        columns[f"test.{name}"] = f"{title} (test)"
    return {column: title for column, title in columns.items() if column in runs}


def cost_text(values: Iterable[Any], digits: int) -> str:
    """The mean over seeds of a cost (throughput, memory), ``–`` when no run recorded it."""
    series = pd.Series(list(values), dtype="float64").dropna()
    return "–" if series.empty else f"{series.mean():,.{digits}f}"


def declared_sweeps(runs: pd.DataFrame) -> dict[str, str]:
    """``method.<hyperparameter>`` -> what it is, for every sweep a method of these runs declares."""
    sweeps: dict[str, str] = {}
    for column in (c for c in runs if c.startswith("method_info.sweeps.")):
        for description in runs[column].dropna().unique():
            sweeps[f"method.{column.removeprefix('method_info.sweeps.')}"] = str(description)
    return sweeps


def method_labels(runs: pd.DataFrame) -> list[str]:
    """``lora r=4``: the method's name plus the hyperparameters (other than lr) in which its runs differ."""
    varying: dict[str, list[str]] = {}
    for name, group in runs.groupby("method.name", dropna=False):
        columns = [c for c in group if c.startswith("method.") and c not in ("method.name", "method.lr")]
        varying[name] = [c for c in columns if distinct(group[c]) > 1]
    labels = []
    for _, run in runs.iterrows():
        name = run["method.name"]
        parts = [
            f"{column.removeprefix('method.')}={fmt_value(run[column])}" for column in varying.get(name, [])
        ]
        labels.append(" ".join([str(name), *parts]))
    return labels


def shared_method_settings(runs: pd.DataFrame) -> dict[str, str]:
    """Per method, the hyperparameters (besides lr) that all its runs share, for the report's header."""
    shared = {}
    for name, group in runs.groupby("method.name"):
        columns = [c for c in group if c.startswith("method.") and c not in ("method.name", "method.lr")]
        same = [c for c in columns if group[c].notna().any() and distinct(group[c]) == 1]
        if same:
            shared[name] = ", ".join(
                f"{c.removeprefix('method.')}={fmt_value(group[c].iloc[0])}" for c in same
            )
    return shared


# ---------------------------------------------------------------------------------------------- tables


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


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """The SETTINGS columns in which these runs differ; the rest are stated once in the header."""
    return [column for column in SETTINGS if distinct(runs[column]) > 1]


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
    identity_columns = ["_key", "_identity", "task", "method.name", "method_label", "lr", *SETTINGS]
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


# ---------------------------------------------------------------------------------------------- plots


def monitored(configs: pd.DataFrame) -> str:
    """The metric that picks the best epoch of these configurations (those of one task)."""
    return str(configs["monitor"].iloc[0])


def best_values(family: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Per configuration: mean and std (0 for a single run) of the best epoch's monitored metric, in %."""
    means, stds = [], []
    for values in family[f"val.best.{monitored(family)}"]:
        series = pd.Series(values, dtype="float64").dropna() * 100
        means.append(series.mean() if len(series) else math.nan)
        stds.append(series.std() if len(series) > 1 else 0.0)
    return means, stds


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


def read_metrics(run_dir: Path) -> pd.DataFrame | None:
    file = run_dir / METRICS_FILE
    if not file.is_file():
        return None
    try:
        metrics = pd.read_csv(file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
        return None
    if "step" not in metrics:
        return metrics
    # A resumed run appends to metrics.csv and logs again the steps its killed attempt had logged after the
    # last checkpoint: of rows with the same step and the same metrics, the last one stands.
    logged = metrics.notna().apply(lambda row: "|".join(row.index[row]), axis=1)
    return metrics[~pd.DataFrame({"step": metrics["step"], "logged": logged}).duplicated(keep="last")]


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


# ---------------------------------------------------------------------------------------------- report


def write_report(paths: Sequence[Path], out: Path, aso_iterations: int = ASO_ITERATIONS) -> Path:
    """Write results.csv, report.md and the plots into ``out``; return the report's path.
    ``aso_iterations`` 0 leaves out the almost-stochastic-order column (1.5 s a pair of methods)."""
    from peft_glue.comparison import comparison_section  # it builds on this module's helpers

    runs = load_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    public = [c for c in runs if not c.startswith("_") and c != "method_label"]
    front = ["run_dir", "config", "status", "task", "model", "seed", "lr"]
    # convert_dtypes keeps whole numbers whole (16, not 16.0) in columns that have gaps
    runs[front + [c for c in public if c not in front]].convert_dtypes().to_csv(
        out / "results.csv", index=False
    )

    # failed runs may lack these fields; only the runs in the tables decide which settings need a column
    tabled = runs[runs["status"].isin([COMPLETED, DRY_RUN])]
    settings = varying_settings(tabled)
    configs = aggregate(runs)
    lines = header(runs, tabled, paths, settings)
    lines += method_task_section(configs, settings)
    lines += glue_section(runs)
    lines += hyperparameter_sweep_sections(runs, configs, settings, out)
    lines += lr_sweep_section(configs, settings, out)
    lines += comparison_section(runs, out, aso_iterations)
    lines += curves_section(runs, out)
    lines += dry_run_section(runs, settings)
    lines += problems_section(runs, paths)
    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report


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
        f"({monitors(runs)}); *last*: the final epoch; *test*: the test split (GLUE dev when validation was "
        "carved from train), scored once with the best epoch's checkpoint. Train samples/s and peak memory "
        "(the process's peak resident memory, or the GPU's peak allocation): mean over the seeds.",
    ]
    shared = [
        f"{c}={fmt_value(tabled[c].iloc[0])}" for c in SETTINGS if c not in settings and not tabled.empty
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
    keys = done["_identity"].map(lambda ident: identity_key(ident, ["task", "lr", "method.lr"]))
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


def at_picked_rate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task, the runs at the learning rate the comparison section picks (best mean validation value of
    the task's monitor over seeds; one rule for both tables): a rate sweep's 1e-2 collapse is not averaged
    in. ``runs`` hold one configuration but for task and rate."""
    from peft_glue.comparison import configurations, pick_learning_rates  # it builds on this module

    kept = []
    for _, task_runs in runs.groupby("task", sort=False):
        if task_runs["lr"].nunique() > 1:
            val_col = f"val.best.{monitored(task_runs)}"
            (picked,) = pick_learning_rates(configurations(task_runs, val_col, val_col))
            task_runs = task_runs[task_runs["lr"] == picked["lr"]]
        kept.append(task_runs)
    return pd.concat(kept)


def monitors(runs: pd.DataFrame) -> str:
    """Which metric picks the best epoch, per task: ``mrpc: accuracy, stsb: pearson``."""
    pairs = runs.dropna(subset=["task"]).groupby("task")["monitor"].first()
    return ", ".join(f"{task}: {monitor}" for task, monitor in pairs.items()) or DEFAULT_MONITOR


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
    found = [] if configs.empty else families(configs, ["lr", "method.lr"], "lr")
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
        path = plot_curves(task, trained[trained["task"] == task], out / f"curves_{task}.png")
        if path is None:
            lines += ["", f"{task}: no `{METRICS_FILE}` with logged metrics; plot skipped."]
        else:
            lines += ["", f"![{task}: training loss and validation metric]({path.name})"]
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


def run_folders_cli(
    argv: Sequence[str] | None,
    prog: str,
    doc: str,
    out_name: str,
    write: Callable[..., Path],
    options: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The command line shared by report and analyze: PATH... [--out DIR] and the command's own ``options``
    (flag -> argparse settings, passed to ``write`` by name), one-line errors."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--out", type=Path, help=f"output folder (default: <first PATH>/{out_name})")
    for flag, settings in (options or {}).items():
        parser.add_argument(flag, **settings)
    args = vars(parser.parse_args(argv))
    paths, out = args.pop("paths"), args.pop("out")
    try:
        return write(paths, out or paths[0] / out_name, **args)
    except UserError as error:
        exit_with(str(error))


def main(argv: Sequence[str] | None = None) -> None:
    aso = {
        "type": int,
        "default": ASO_ITERATIONS,
        "help": "bootstrap iterations of the almost-stochastic-order test per pair of methods "
        f"(default {ASO_ITERATIONS}, about 1.5 s a pair; 0 leaves the test out)",
    }
    report = run_folders_cli(
        argv, "python -m peft_glue.report", __doc__, "report", write_report, {"--aso-iterations": aso}
    )
    print(f"wrote {report}, results.csv and plots in {report.parent}")


if __name__ == "__main__":
    main()
