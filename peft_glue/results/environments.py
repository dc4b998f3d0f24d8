"""The report's Environments section: which code, libraries, hardware and precision produced the runs, and a
warning for each task whose runs (the rows of one table) differ in code, library versions or data."""

from __future__ import annotations

import pandas as pd

from peft_glue.record import COMPLETED
from peft_glue.results.formatting import fmt_value, is_missing, markdown_table

PREFIX = "provenance."
CODE = [f"{PREFIX}peft_glue", f"{PREFIX}git_commit", f"{PREFIX}git_dirty"]


def columns_under(runs: pd.DataFrame, part: str) -> list[str]:
    return [column for column in runs if column.startswith(f"{PREFIX}{part}.")]


def code_text(run: pd.Series) -> str:
    commit = run.get(f"{PREFIX}git_commit")
    text = str(run.get(f"{PREFIX}peft_glue") or "?")
    if isinstance(commit, str):
        text += f" @ {commit[:8]}"
    dirty = run.get(f"{PREFIX}git_dirty")
    return text + (" (dirty)" if not is_missing(dirty) and bool(dirty) else "")


def joined(run: pd.Series, columns: list[str], part: str) -> str:
    """``torch 2.13.0, peft 0.21.2``: the run's values under one part of its provenance."""
    return ", ".join(
        f"{column.removeprefix(f'{PREFIX}{part}.')} {fmt_value(run[column])}"
        for column in columns
        if not pd.isna(run[column])
    )


def environments(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct environment (code, libraries, hardware, precision), with its runs and tasks."""
    libraries, hardware = columns_under(runs, "libraries"), columns_under(runs, "hardware")
    table = pd.DataFrame(
        {
            "code": runs.apply(code_text, axis=1),
            "libraries": runs.apply(joined, axis=1, args=(libraries, "libraries")),
            "hardware": runs.apply(joined, axis=1, args=(hardware, "hardware")),
            "precision": runs[f"{PREFIX}precision"].map(fmt_value),
            "task": runs["task"].map(fmt_value),
        }
    )
    described = ["code", "libraries", "hardware", "precision"]
    grouped = table.groupby(described, sort=False)
    rows = grouped["task"].agg(lambda tasks: ", ".join(sorted(set(tasks))))
    counts = grouped.size()
    return pd.DataFrame({"runs": counts, "tasks": rows}).reset_index()


def differences(runs: pd.DataFrame) -> list[str]:
    """What the runs of one task differ in: code, each library, each data file's fingerprint."""
    found = []
    codes = sorted(set(runs.apply(code_text, axis=1)))
    if len(codes) > 1:
        found.append(f"code ({' vs '.join(codes)})")
    for column in [*columns_under(runs, "libraries"), *columns_under(runs, "data")]:
        values = sorted({fmt_value(v) for v in runs[column]})
        if len(values) > 1:
            name = column.removeprefix(PREFIX)
            shown = [value[:12] for value in values] if name.startswith("data.") else values
            found.append(f"{name} ({' vs '.join(shown)})")
    return found


def environment_section(runs: pd.DataFrame) -> list[str]:
    lines = ["", "## Environments", ""]
    completed = runs[runs["status"] == COMPLETED]
    if f"{PREFIX}peft_glue" not in runs:
        return lines + ["No run records its provenance (runs of a peft_glue version before it)."]
    recorded = completed[completed[f"{PREFIX}peft_glue"].notna()]
    lines += [
        "The code, libraries, hardware and precision of the completed runs (each run's data and base-model "
        "fingerprints are in `results.csv`, columns `provenance.*`).",
        "",
        markdown_table(environments(recorded)) if not recorded.empty else "No completed run records it.",
    ]
    unrecorded = len(completed) - len(recorded)
    if unrecorded:
        lines += ["", f"{unrecorded} completed runs record no provenance."]
    for task, task_runs in recorded.groupby("task", sort=True):
        differ = differences(task_runs)
        if differ:
            lines += ["", f"**Warning** ({task}): its runs differ in {'; '.join(differ)}."]
    return lines
