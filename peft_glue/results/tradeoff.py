"""The trade-off (Pareto) figure of each task, the report's first: what every method scores at its picked
learning rate against what it costs (trainable parameters, peak memory, throughput), with the Pareto front
(no other method scores higher at a lower cost) drawn and named."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from peft_glue.record import COMPLETED
from peft_glue.results.comparison import TaskPick, pick_per_task
from peft_glue.results.figures import plt, save_outside
from peft_glue.results.formatting import fmt_value
from peft_glue.results.interactive import Marker, Panel, write_scatter_panels
from peft_glue.results.palette import method_color
from peft_glue.results.stats import CONFIDENCE, Summary, summarize


@dataclass(frozen=True)
class Cost:
    column: str  # results.json field (flattened)
    title: str
    lower_is_better: bool
    log_scale: bool


COSTS = (
    Cost("trainable_params", "trainable parameters", True, True),
    Cost("peak_memory_mb", "peak memory (MB)", True, False),
    Cost("train_samples_per_second", "train samples/s", False, False),
)


@dataclass(frozen=True)
class MethodPoint:
    """A configuration at its picked rate: its score over seeds and the mean of each cost over them."""

    label: str
    lr: float
    score: Summary
    costs: dict[str, float]
    seeds: list  # the seeds that scored


def pareto_front(
    costs: Sequence[float], scores: Sequence[float], lower_cost_is_better: bool = True
) -> list[int]:
    """The indices of the points no other point dominates (a cost at least as good and a score at least as
    high, one of them strictly), ordered from the cheapest; points with a NaN are on no front. Written out
    because it is six lines and the packages that do it would be a dependency for those six lines."""
    sign = 1.0 if lower_cost_is_better else -1.0
    valid = [i for i in range(len(costs)) if not (math.isnan(costs[i]) or math.isnan(scores[i]))]

    def dominates(j: int, i: int) -> bool:
        cost_j, cost_i = sign * costs[j], sign * costs[i]
        no_worse = cost_j <= cost_i and scores[j] >= scores[i]
        return no_worse and (cost_j < cost_i or scores[j] > scores[i])

    front = [i for i in valid if not any(dominates(j, i) for j in valid)]
    return sorted(front, key=lambda i: (sign * costs[i], scores[i]))


def method_points(runs: pd.DataFrame, pick: TaskPick) -> list[MethodPoint]:
    done = runs[runs["status"] == COMPLETED]
    points = []
    for config in pick.picked:
        config_runs = done[done["_key"] == config["key"]]
        costs = {
            cost.column: float(pd.to_numeric(config_runs[cost.column], errors="coerce").mean())
            if cost.column in config_runs
            else math.nan
            for cost in COSTS
        }
        scores = config["score"]
        seeds = sorted(seed for seed, value in scores.items() if pd.notna(value))
        points.append(MethodPoint(config["label"], config["lr"], summarize(scores.values()), costs, seeds))
    return points


def tradeoff_section(runs: pd.DataFrame, out: Path) -> list[str]:
    lines = ["", "## Trade-offs: score against cost", ""]
    if not (runs["status"] == COMPLETED).any():
        return lines + ["No completed runs."]
    level = int(CONFIDENCE * 100)
    lines.append(
        f"Each method at its picked learning rate (see Comparisons): the mean over seeds and its {level}% "
        "t-interval, against what it costs. The dashed staircase is the Pareto front: the methods that no "
        "other one beats on both score and cost; they are named in the figure and below."
    )
    for pick in pick_per_task(runs):
        points = method_points(runs, pick)
        where = "test" if pick.on_test else "validation"
        path = plot_tradeoff(pick.task, points, pick.monitor, where, out / f"tradeoff_{pick.task}.png")
        lines += ["", f"### {pick.task}", ""]
        if path is None:
            lines.append("No cost recorded (trainable parameters, memory, throughput); plot skipped.")
            continue
        lines.append(f"![{pick.task}: {where} {pick.monitor} against trainable parameters, memory and speed]"
                     f"({path.name})")  # fmt: skip
        for cost in COSTS:
            front = front_of(points, cost)
            if front:
                names = ", ".join(points[i].label for i in front)
                lines += ["", f"Pareto front against {cost.title}: {names}."]
    return lines


def front_of(points: Sequence[MethodPoint], cost: Cost) -> list[int]:
    costs = [p.costs[cost.column] for p in points]
    return pareto_front(costs, [p.score.mean for p in points], cost.lower_is_better)


def plot_tradeoff(task: str, points: list[MethodPoint], monitor: str, where: str, path: Path) -> Path | None:
    """One panel per recorded cost, the score axis shared; the legend (every method) right of the panels."""
    drawn = [c for c in COSTS if any(not math.isnan(p.costs[c.column]) for p in points)]
    if not drawn:
        return None
    fig, axes = plt.subplots(1, len(drawn), figsize=(4.4 * len(drawn), 4.4), sharey=True, squeeze=False)
    for ax, cost in zip(axes[0], drawn, strict=True):
        draw_cost_panel(ax, points, cost)
    level = int(CONFIDENCE * 100)
    axes[0][0].set_ylabel(f"{where} {monitor} (%): mean, {level}% interval")
    fig.suptitle(f"{task}: {where} {monitor} against cost, each method at its picked learning rate")
    fig.tight_layout()
    handles = [
        Line2D([], [], marker="o", ls="none", color=method_color(p.label),
               label=f"{p.label}  lr={fmt_value(p.lr)}  n={p.score.n}")
        for p in points
    ]  # fmt: skip
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    write_interactive(task, points, monitor, where, drawn, path)
    return save_outside(fig, path)


def write_interactive(
    task: str, points: list[MethodPoint], monitor: str, where: str, drawn: list[Cost], png: Path
) -> Path:
    """The same figure for report.html, where hovering a point reads its method, rate, seeds and value."""
    level = int(CONFIDENCE * 100)
    markers = []
    for p in points:
        interval = (
            ""
            if math.isnan(p.score.low)
            else f", {level}% CI [{100 * p.score.low:.1f}, {100 * p.score.high:.1f}]"
        )
        hover = (
            f"<b>{p.label}</b><br>lr {fmt_value(p.lr)}, seeds {', '.join(map(fmt_value, p.seeds))}"
            f"<br>{where} {monitor} {100 * p.score.mean:.1f}{interval}"
        )
        markers.append(Marker(p.label, method_color(p.label), 100 * p.score.mean, 100 * p.score.low,
                              100 * p.score.high, hover))  # fmt: skip
    panels = [
        Panel(cost.title, cost.log_scale, [p.costs[cost.column] for p in points], front_of(points, cost))
        for cost in drawn
    ]
    title = f"{task}: {where} {monitor} against cost (hover a point; click a legend entry to hide it)"
    return write_scatter_panels(png, title, f"{where} {monitor} (%)", markers, panels)


def draw_cost_panel(ax: plt.Axes, points: list[MethodPoint], cost: Cost) -> None:
    xs = [p.costs[cost.column] for p in points]
    ys = [100 * p.score.mean for p in points]
    for point, x, y in zip(points, xs, ys, strict=True):
        if math.isnan(x) or math.isnan(y):
            continue
        low, high = point.score.low, point.score.high
        yerr = None if math.isnan(low) else [[y - 100 * low], [100 * high - y]]
        ax.errorbar([x], [y], yerr=yerr, fmt="o", ms=6, capsize=3, color=method_color(point.label))
    front = front_of(points, cost)
    if front:
        ax.plot([xs[i] for i in front], [ys[i] for i in front], drawstyle="steps-post", color="black",
                ls="--", lw=1, zorder=0)  # fmt: skip
        for k, i in enumerate(front):  # above and below in turn: neighbours on the front often lie close
            offset = (4, 5) if k % 2 == 0 else (4, -11)
            ax.annotate(points[i].label, (xs[i], ys[i]), xytext=offset, textcoords="offset points", size=8)
    if cost.log_scale:  # ticks at 1, 2 and 5 of each decade, written 20k, 3M: readable within one decade too
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: compact_count(value)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    better = "fewer is better" if cost.lower_is_better else "more is better"
    ax.set_xlabel(f"{cost.title}{' (log scale)' if cost.log_scale else ''}, {better}")
    ax.grid(alpha=0.3)


def compact_count(value: float) -> str:
    """20000 -> 20k, 3000000 -> 3M: a tick label that stays short."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"
