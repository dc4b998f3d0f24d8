"""Reading runs: every results.json below some folders, one row per run with its configuration identity.

The results wing's only door to run folders; it reads the typed run record (``peft_glue.record``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from peft_glue.errors import UserError
from peft_glue.record import (
    DEFAULT_MONITOR,
    METRICS_FILE,
    NOT_METRICS,
    RESULTS_FILE,
    RunResults,
    read_results,
)
from peft_glue.results.formatting import METRIC_TITLES, distinct, fmt_value, natural_order

RESULTS_TABLE = "results.csv"  # what a report writes: one flattened record a row, which it can read back
# Columns a row adds to the record, made again when a results.csv is read back.
DERIVED_COLUMNS = ("config", "lr", "monitor", "method_order", "val_epochs")
UNKNOWN_ORDER = 100  # methods without method_info come after the ones that say where they go
# Identity fields besides task and method that are shown as columns only where runs differ in them.
IDENTITY_SETTINGS = ["model", "batch_size", "max_epochs", "train_subset", "validation_size", "test_size"]


def existing_paths(paths: Iterable[Path]) -> list[Path]:
    """The given run or multirun folders (or results.json files), each of which must exist."""
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path} does not exist; give run or multirun folders (e.g. outputs/multirun)")
    return list(map(Path, paths))


def find_results(paths: Iterable[Path]) -> list[Path]:
    """Every results.json at or below the given run or multirun folders, each once; a file given by name
    (a results.json, or a report's results.csv) as it is."""
    found: dict[Path, None] = {}
    for path in existing_paths(paths):
        files = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE), key=natural_order)
        found.update(dict.fromkeys(file.resolve() for file in files))
    return list(found)


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
        rows += table_rows(file) if file.name == RESULTS_TABLE else [run_row(file)]
    if not rows:
        raise UserError(f"no {RESULTS_FILE} found below {', '.join(map(str, paths))}")
    runs = pd.DataFrame(rows)
    for column in ["status", "task", "model", "seed", "method.name", "error", *IDENTITY_SETTINGS]:
        if column not in runs:
            runs[column] = None
    runs["method_order"] = runs["method_order"].fillna(UNKNOWN_ORDER)
    runs["method_label"] = method_labels(runs)
    return runs


def run_row(file: Path) -> dict[str, Any]:
    """A run's row: its record flattened into dotted columns (the learning rate once, as ``lr``)."""
    try:
        results = read_results(file)
    except (OSError, json.JSONDecodeError, TypeError) as error:  # listed as a failed run, not dropped
        results = RunResults(status="unreadable", error=f"cannot read {file.name}: {error}")
    return record_row(results, file.parent)


def table_rows(file: Path) -> list[dict[str, Any]]:
    """The rows of a report's results.csv, each made into its run record again, so that a report can be
    remade from the table alone (the run folders, with their per-epoch metrics, may be gone)."""
    try:
        table = pd.read_csv(file).convert_dtypes()
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserError(f"cannot read {file}: {error}; give the results.csv a report wrote") from None
    if "run_dir" not in table:
        raise UserError(f"{file} has no run_dir column; give the results.csv a report wrote")
    rows = []
    for _, row in table.iterrows():
        cells = {key: value for key, value in row.items() if not pd.isna(value)}
        run_dir = Path(cells.pop("run_dir"))
        derived = {column: cells.pop(column, None) for column in DERIVED_COLUMNS}
        record = unflatten(cells)
        if "lr" not in record.get("optimizer", {}) and derived["lr"] is not None:  # a failed run's default
            record.setdefault("method", {})["lr"] = derived["lr"]
        row = record_row(RunResults.from_dict(record), run_dir)
        # the per-epoch history is not in the table; the configuration id was made from the record as written
        rows.append(row | {"val_epochs": derived["val_epochs"], "config": derived["config"] or row["config"]})
    return rows


def unflatten(cells: dict[str, Any]) -> dict[str, Any]:
    """``flatten`` undone: dotted columns become nested dicts, JSON text in a cell becomes its list again."""
    record: dict[str, Any] = {}
    for dotted, value in cells.items():
        if isinstance(value, str) and value.startswith("["):
            value = json.loads(value)
        elif hasattr(value, "item"):  # a numpy scalar from pandas
            value = value.item()
        *parents, leaf = dotted.split(".")
        node = record
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return record


def record_row(results: RunResults, run_dir: Path) -> dict[str, Any]:
    """The row of one run record found in ``run_dir``."""
    ident = results.identity()
    key = identity_key(ident)
    values = results.to_dict()
    values.pop("val_history")
    values["method"] = ident["method"]  # an older record's method.lr is the lr column
    values["model"] = ident["model"]  # the checkpoint's name where model.name_or_path= replaced the option's
    return {
        "run_dir": str(run_dir),
        "config": hashlib.sha1(key.encode()).hexdigest()[:8],
        **flatten(values),
        "lr": ident["lr"],
        "monitor": results.monitor,
        "method_order": results.method_info.order if results.method_info else None,
        "val_epochs": len(results.val_history) if results.status != "unreadable" else None,
        "_identity": ident,
        "_key": key,
    }


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


def declared_sweeps(runs: pd.DataFrame) -> dict[str, str]:
    """``method.<hyperparameter>`` -> what it is, for every sweep a method of these runs declares."""
    sweeps: dict[str, str] = {}
    for column in (c for c in runs if c.startswith("method_info.sweeps.")):
        for description in runs[column].dropna().unique():
            sweeps[f"method.{column.removeprefix('method_info.sweeps.')}"] = str(description)
    return sweeps


def method_labels(runs: pd.DataFrame) -> list[str]:
    """``lora r=4``: the method's name plus the hyperparameters (other than lr) in which its runs differ, and
    ``from mnli`` for a run that started from an MNLI run's weights (init_from)."""
    varying: dict[str, list[str]] = {}
    for name, group in runs.groupby("method.name", dropna=False):
        columns = [c for c in group if c.startswith("method.") and c != "method.name"]
        varying[name] = [c for c in columns if distinct(group[c]) > 1]
    labels = []
    for _, run in runs.iterrows():
        name = run["method.name"]
        parts = [
            f"{column.removeprefix('method.')}={fmt_value(run[column])}" for column in varying.get(name, [])
        ]
        source = run.get("init_from.task")  # started from another run's weights (init_from)
        parts += [f"from {source}"] if isinstance(source, str) else []
        labels.append(" ".join([str(name), *parts]))
    return labels


def shared_method_settings(runs: pd.DataFrame) -> dict[str, str]:
    """Per method, the hyperparameters (besides lr) that all its runs share, for the report's header."""
    shared = {}
    for name, group in runs.groupby("method.name"):
        columns = [c for c in group if c.startswith("method.") and c != "method.name"]
        same = [c for c in columns if group[c].notna().any() and distinct(group[c]) == 1]
        if same:
            shared[name] = ", ".join(
                f"{c.removeprefix('method.')}={fmt_value(group[c].iloc[0])}" for c in same
            )
    return shared


def monitored(configs: pd.DataFrame) -> str:
    """The metric that picks the best epoch of these configurations (those of one task)."""
    return str(configs["monitor"].iloc[0])


def monitors(runs: pd.DataFrame) -> str:
    """Which metric picks the best epoch, per task: ``mrpc: accuracy, stsb: pearson``."""
    pairs = runs.dropna(subset=["task"]).groupby("task")["monitor"].first()
    return ", ".join(f"{task}: {monitor}" for task, monitor in pairs.items()) or DEFAULT_MONITOR


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
