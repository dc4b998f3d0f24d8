"""Gather the results.json of runs and sweeps into results.csv, a Markdown report, its HTML twin and plots.

    python -m peft_glue.report outputs/method_comparison outputs/lora_rank [--out DIR] [--aso-iterations N]
        [--baseline METHOD] [--published MY_ROWS.csv]

Runs that differ only by seed form one configuration, reported as mean ± std (n=K). Failed, unfinished
and dry runs are listed too, so that a missing number is never a silent gap in a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peft_glue.record import COMPLETED, DRY_RUN
from peft_glue.results.aggregate import aggregate, varying_settings
from peft_glue.results.cli import run_folders_cli
from peft_glue.results.comparison import comparison_section
from peft_glue.results.environments import environment_section
from peft_glue.results.html import write_html
from peft_glue.results.published import published_section
from peft_glue.results.runs import load_runs
from peft_glue.results.sections import (
    curves_section,
    dry_run_section,
    glue_section,
    header,
    hyperparameter_sweep_sections,
    lr_sweep_section,
    method_task_section,
    problems_section,
)
from peft_glue.results.stats import ASO_ITERATIONS
from peft_glue.results.tradeoff import tradeoff_section


def write_report(
    paths: Sequence[Path],
    out: Path,
    aso_iterations: int = ASO_ITERATIONS,
    baseline: str | None = None,
    published: Sequence[Path] | None = None,
) -> Path:
    """Write results.csv, report.md, report.html and the plots into ``out``; return report.md's path.
    ``aso_iterations`` 0 leaves out the almost-stochastic-order column (1.5 s a pair of methods);
    ``baseline`` is the method the forest plots compare every other one to (default: full fine-tuning);
    ``published``: CSV files of published results besides the package's own (``results/published.py``)."""
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
    lines += tradeoff_section(runs, out)
    lines += method_task_section(configs, settings)
    lines += glue_section(runs)
    lines += published_section(runs, published or ())
    lines += hyperparameter_sweep_sections(runs, configs, settings, out)
    lines += lr_sweep_section(configs, settings, out)
    lines += comparison_section(runs, out, aso_iterations, baseline)
    lines += curves_section(runs, out)
    lines += dry_run_section(runs, settings)
    lines += environment_section(runs)
    lines += problems_section(runs, paths)
    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    write_html(report)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    aso = {
        "type": int,
        "default": ASO_ITERATIONS,
        "help": "bootstrap iterations of the almost-stochastic-order test per pair of methods "
        f"(default {ASO_ITERATIONS}, about 1.5 s a pair; 0 leaves the test out)",
    }
    baseline = {
        "help": "the method (name or label, e.g. full, 'lora r=4') that the forest plots measure every other "
        "one against (default: full fine-tuning where a task has it)"
    }
    published = {
        "action": "append",
        "type": Path,
        "help": "a CSV of published results with the columns of peft_glue/results/published_glue_dev.csv, "
        "added to it (repeatable)",
    }
    options = {"--aso-iterations": aso, "--baseline": baseline, "--published": published}
    report = run_folders_cli(argv, "python -m peft_glue.report", __doc__, "report", write_report, options)
    print(f"wrote {report}, report.html, results.csv and plots in {report.parent}")


if __name__ == "__main__":
    main()
