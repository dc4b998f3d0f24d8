"""The report's comparison section: learning rate picked on validation, test numbers at that rate only, 95%
intervals and paired tests between methods (statistics: ``peft_glue.results.stats``).

Per task, configurations that differ only in the learning rate form a family; its rate is the one with the
best mean (over seeds) of the monitored metric at the best epoch on the validation split. Only the picked
configuration of each family is then scored: on the test split (GLUE dev when ``data.validation_size`` carved
validation from train) when the runs have one, else (older runs) on validation, which the section then says
is optimistic. Every pair of picked configurations with the same settings is compared on the seeds both
completed; seeds a configuration lacks are named.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from peft_glue.record import COMPLETED
from peft_glue.results.forest import check_baseline, forest_lines
from peft_glue.results.formatting import fmt_value, markdown_table, mean_std
from peft_glue.results.lr_selection import configurations, pick_learning_rates
from peft_glue.results.plots import plot_selection
from peft_glue.results.runs import monitored
from peft_glue.results.stats import (
    ASO_ITERATIONS,
    CONFIDENCE,
    WILCOXON_MIN_PAIRS,
    Paired,
    almost_stochastic_order,
    false_discovery_adjusted,
    paired_test,
    summarize,
)


def pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def p_value(value: float | None) -> str:
    if value is None:
        return f"– (n<{WILCOXON_MIN_PAIRS})"
    return "–" if math.isnan(value) else f"{value:.3g}"


def seeds_text(seeds) -> str:
    return ", ".join(fmt_value(s) for s in sorted(seeds)) or "none"


def lr_text(config: dict) -> str:
    grid = config["grid"]
    if len(grid) == 1:
        return f"{fmt_value(config['lr'])} (fixed)"
    return f"**{fmt_value(config['lr'])}** of {', '.join(fmt_value(lr) for lr in grid)}"


@dataclass(frozen=True)
class TaskPick:
    """One task's configurations at their picked learning rates, and what they are scored on."""

    task: str
    monitor: str
    on_test: bool  # scored on the test split; else on validation (optimistic)
    picked: list[dict]
    expected_seeds: set  # every seed the sweep ran for this task, in any status


def pick_per_task(runs: pd.DataFrame) -> list[TaskPick]:
    """Per task with completed runs, each family's configuration at its picked rate (``pick_learning_rates``):
    the one selection that the comparison tables and the trade-off and forest figures all show."""
    done = runs[runs["status"] == COMPLETED]
    found = []
    for task in sorted(done["task"].dropna().unique()):
        task_done = done[done["task"] == task]
        monitor = monitored(task_done)
        val_col, test_col = f"val.best.{monitor}", f"test.{monitor}"
        on_test = bool(test_col in task_done and task_done[test_col].notna().all())
        picked = pick_learning_rates(configurations(task_done, val_col, test_col if on_test else val_col))
        expected = set(runs.loc[runs["task"] == task, "seed"].dropna())
        found.append(TaskPick(task, monitor, on_test, picked, expected))
    return found


def comparison_section(
    runs: pd.DataFrame, out: Path, aso_iterations: int = ASO_ITERATIONS, baseline: str | None = None
) -> list[str]:
    """``baseline``: the method (label or name) the forest plots measure every other one against; None
    takes full fine-tuning where a task has it."""
    lines = ["", "## Comparisons: learning rate picked on validation, test at that rate", ""]
    if not (runs["status"] == COMPLETED).any():
        return lines + ["No completed runs."]
    check_baseline(runs, baseline)
    level = int(CONFIDENCE * 100)
    for pick in pick_per_task(runs):
        task, monitor, picked = pick.task, pick.monitor, pick.picked
        where = (
            f"test split ({test_source(runs, task)})"
            if pick.on_test
            else "validation split (no test split with labels: the values that picked the epoch and the "
            "rate, so they are optimistic)"
        )
        lines += [
            f"### {task}",
            "",
            f"{monitor} in % on the {where}, mean ± sample std over seeds and the {level}% t-interval of the "
            "mean. The learning rate is the one with the best mean validation value (bold, of the rates "
            "tried); only that rate's runs are scored here.",
            "",
        ]
        rows = []
        for config in picked:
            scores = summarize(config["score"].values())
            missing = pick.expected_seeds - set(config["score"])
            rows.append(
                {
                    "method": config["label"],
                    "lr": lr_text(config),
                    "n": scores.n,
                    "missing seeds": seeds_text(missing) if missing else "–",
                    f"validation {monitor}": mean_std(config["val"].values()),
                    monitor: f"{pct(scores.mean)} ± {pct(scores.std)}",
                    f"{level}% CI": f"[{pct(scores.low)}, {pct(scores.high)}]",
                }
            )
        lines.append(markdown_table(pd.DataFrame(rows)))
        path = plot_selection(task, picked, monitor, out / f"lr_selection_{task}.png")
        if path is not None:
            lines += [
                "",
                f"![{task}: validation {monitor} vs learning rate, picked rate starred]({path.name})",
            ]
        pairs = compare_pairs(picked)
        lines += forest_lines(task, picked, pairs, monitor, baseline, out)
        lines += pairs_table(pairs, monitor, level, aso_iterations)
    return lines


@dataclass(frozen=True)
class Pair:
    """Two picked configurations compared on the seeds both completed."""

    a: dict
    b: dict
    seeds: list
    left_out: set  # seeds only one of the two completed
    test: Paired  # of a - b
    p_adjusted: float  # the paired t-test's p, Benjamini-Hochberg over every pair of the task


def compare_pairs(picked: list[dict]) -> list[Pair]:
    """Every pair of picked configurations with the same settings (another model, data or budget is not
    compared), paired over their common seeds; the pairs table and the forest plot both read these."""
    pairs = [(a, b) for a, b in itertools.combinations(picked, 2) if a["context"] == b["context"]]
    compared = []
    for a, b in pairs:
        common = sorted(set(a["score"]) & set(b["score"]))
        left_out = (set(a["score"]) | set(b["score"])) - set(common)
        test = paired_test([a["score"][s] for s in common], [b["score"][s] for s in common])
        compared.append((a, b, common, left_out, test))
    adjusted = false_discovery_adjusted([test.p_t for *_, test in compared])
    return [Pair(*fields, p) for fields, p in zip(compared, adjusted, strict=True)]


def pairs_table(pairs: list[Pair], monitor: str, level: int, aso_iterations: int) -> list[str]:
    rows, asos = [], []
    for pair in pairs:
        test = pair.test
        if aso_iterations:  # each direction is its own claim: a high ε_min for A>B does not say B>A
            a_scores = [pair.a["score"][s] for s in pair.seeds]
            b_scores = [pair.b["score"][s] for s in pair.seeds]
            asos.append(
                [
                    almost_stochastic_order(x, y, len(pairs), aso_iterations)
                    for x, y in ((a_scores, b_scores), (b_scores, a_scores))
                ]
            )
        left_out = pair.left_out
        rows.append(
            {
                "A vs B": f"{pair.a['label']} vs {pair.b['label']}",
                "seeds": f"{test.n}" + (f" (without {seeds_text(left_out)})" if left_out else ""),
                "A − B": pct(test.mean_diff),
                f"{level}% CI": f"[{pct(test.diff_low)}, {pct(test.diff_high)}]",
                "paired t p": p_value(test.p_t),
                "Wilcoxon p": p_value(test.p_wilcoxon),
                "Cohen's d": "–" if math.isnan(test.cohens_d) else f"{test.cohens_d:.2f}",
                "paired t p (BH)": p_value(pair.p_adjusted),
            }
        )
    if not rows:
        return []
    if aso_iterations:
        for row, directions in zip(rows, asos, strict=True):
            for name, eps in zip(("ASO ε A>B", "ASO ε B>A"), directions, strict=True):
                row[name] = "–" if math.isnan(eps) else f"{eps:.2f}"
    aso_note = (
        f" *ASO ε*: deepsig's almost stochastic order (Dror et al. 2019; {aso_iterations} bootstrap "
        "iterations, Bonferroni over the table's pairs), the ε_min of each direction: 0 means the first "
        "one's scores dominate the second's, under 0.2 is its authors' threshold for calling it better, "
        "0.5 or more claims nothing. It compares two distributions of a few seeds each: read it beside the "
        "paired test, not alone."
        if aso_iterations
        else ""
    )
    return [
        "",
        f"Paired over seeds (the same seed: same data order and initialisation of new weights): difference "
        f"of {monitor} in points, its {level}% interval, two-sided paired t-test, Wilcoxon signed-rank test "
        f"(from {WILCOXON_MIN_PAIRS} pairs) and Cohen's d of the paired differences. Seeds only one side "
        "completed are left out and named. *BH*: the t-test's p-value adjusted for testing every pair of "
        "this table (Benjamini-Hochberg false discovery rate): with many pairs, read that column." + aso_note,
        "",
        markdown_table(pd.DataFrame(rows)),
    ]


TEST_SOURCES = {
    "glue_dev": "GLUE dev; validation carved from train",
    "validation_file": "the task's validation file; validation carved from train",
    "test_file": "the task's test file",
    "train": "carved from train, data.test_size",
}


def test_source(runs: pd.DataFrame, task: str) -> str:
    """Where a task's runs took their test split from, in words (results.json's ``splits.test_from``)."""
    column = runs.loc[runs["task"] == task, "splits.test_from"] if "splits.test_from" in runs else None
    sources = [] if column is None else list(column.dropna().unique())
    return TEST_SOURCES.get(sources[0], str(sources[0])) if len(sources) == 1 else TEST_SOURCES["glue_dev"]
