"""The forest plot of a task: every method's paired difference to a reference method (full fine-tuning by
default), point and 95% interval, read from the very pairs that the pairs table prints."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from peft_glue.errors import UserError
from peft_glue.record import COMPLETED
from peft_glue.results.figures import plt, save_outside
from peft_glue.results.palette import method_color
from peft_glue.results.stats import CONFIDENCE

if TYPE_CHECKING:  # comparison imports this module
    from peft_glue.results.comparison import Pair

DEFAULT_BASELINE = "full"
SIGNIFICANT = 0.05  # Benjamini-Hochberg adjusted p under this is marked


@dataclass(frozen=True)
class Difference:
    """``label`` minus the baseline, in the metric's units (0-1), over ``n`` paired seeds."""

    label: str
    n: int
    mean: float
    low: float
    high: float
    p_adjusted: float


def baseline_matcher(configs: Sequence[dict], baseline: str) -> Callable[[dict], bool]:
    """Which configuration is the baseline: by its label (``lora r=4``) or by its method's name (``full``);
    only by its label when one label is exactly the name (``lora`` beside ``lora from mrpc``)."""
    if any(config["label"] == baseline for config in configs):
        return lambda config: config["label"] == baseline
    return lambda config: config["label"] == baseline or str(config["first"].get("method.name")) == baseline


def check_baseline(runs: pd.DataFrame, baseline: str | None) -> None:
    """A baseline the user named must be a method of the completed runs (the default may be absent)."""
    if baseline is None:
        return
    done = runs[runs["status"] == COMPLETED]
    names = set(done["method_label"].astype(str)) | set(done["method.name"].astype(str))
    if baseline not in names:
        raise UserError(
            f"--baseline={baseline}: no completed run of that method; give one of: "
            + ", ".join(sorted(set(done["method_label"].astype(str))))
        )


def differences_to(pairs: Sequence[Pair], baseline: str) -> list[Difference]:
    """Each pair with the baseline on one side, turned into (other − baseline): a pair printed as
    baseline − other is negated, its interval's ends swapped. Sorted from the best difference down."""
    found = []
    is_baseline = baseline_matcher([c for pair in pairs for c in (pair.a, pair.b)], baseline)
    for pair in pairs:
        a_is, b_is = is_baseline(pair.a), is_baseline(pair.b)
        if a_is == b_is:  # neither, or two configurations of the baseline method
            continue
        sign, other = (-1.0, pair.b) if a_is else (1.0, pair.a)
        test = pair.test
        low, high = sorted((sign * test.diff_low, sign * test.diff_high))
        found.append(Difference(other["label"], test.n, sign * test.mean_diff, low, high, pair.p_adjusted))
    return sorted(found, key=lambda d: -d.mean if not math.isnan(d.mean) else math.inf)


def forest_lines(
    task: str, picked: list[dict], pairs: Sequence[Pair], monitor: str, baseline: str | None, out: Path
) -> list[str]:
    """The forest plot's Markdown: the figure, or one line saying why there is none."""
    name = baseline or DEFAULT_BASELINE
    is_baseline = baseline_matcher(picked, name)
    bases = [c["label"] for c in picked if is_baseline(c)]
    if not bases:
        hint = "" if baseline else " (`--baseline=<method>` names another reference)"
        return ["", f"{task}: no {name} configuration to measure the others against; no forest plot{hint}."]
    if len(set(bases)) > 1:
        raise UserError(f"--baseline={name} is several configurations here ({', '.join(bases)}); give one")
    differences = differences_to(pairs, name)
    if not differences:
        return []
    path = plot_forest(task, differences, bases[0], monitor, out / f"forest_{task}.png")
    return [
        "",
        f"![{task}: paired difference of {monitor} to {bases[0]}, {int(CONFIDENCE * 100)}% intervals]"
        f"({path.name})",
    ]


def plot_forest(task: str, differences: list[Difference], baseline: str, monitor: str, path: Path) -> Path:
    """One row per method, best on top: the mean paired difference and its interval (the pairs table's),
    filled where the BH-adjusted p is under SIGNIFICANT, hollow otherwise; the zero line is the baseline."""
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(differences)))
    for row, diff in enumerate(reversed(differences)):
        color = method_color(diff.label)
        significant = diff.p_adjusted < SIGNIFICANT  # NaN compares False: not marked
        if not math.isnan(diff.low):
            ax.plot([100 * diff.low, 100 * diff.high], [row, row], color=color, lw=2, solid_capstyle="butt")
        ax.plot(
            [100 * diff.mean], [row], marker="D", ms=7, color=color, ls="none",
            markerfacecolor=color if significant else "white", markeredgewidth=1.5,
        )  # fmt: skip
    labels = [f"{d.label} (n={d.n})" + (" *" if d.p_adjusted < SIGNIFICANT else "") for d in differences]
    ax.set_yticks(range(len(differences)), list(reversed(labels)))
    ax.axvline(0, color="black", lw=1)
    ax.set_ylim(-0.7, len(differences) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    level = int(CONFIDENCE * 100)
    ax.set_xlabel(f"{monitor}: method − {baseline}, points (paired over seeds, {level}% interval)")
    ax.set_title(
        f"{task}: difference to {baseline}\nfilled and *: BH-adjusted p < {SIGNIFICANT} (paired t-test)",
        fontsize=10,
    )
    return save_outside(fig, path)
