"""Published numbers as data: the package's table holds the papers' rows (checked against the values read in
the papers), and the report sets a reference file's values beside the measured ones."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from peft_glue.errors import UserError
from peft_glue.report import write_report
from peft_glue.results.published import COLUMNS, read_published

from .test_report import section, table_rows, write_run


def test_the_package_table_holds_the_papers_rows():
    table = read_published()
    lora = table[(table["paper"] == "Hu et al. 2021 (LoRA)") & (table["model"] == "FacebookAI/roberta-base")]
    assert set(lora["method"]) == {"full", "bitfit", "adapter_drop", "lora"}
    rte = lora[lora["task"] == "rte"].set_index("trainable_params")["value"]
    assert rte["0.3M"].tolist() == [71.5, 86.6] and rte["125.0M"] == 78.7  # RTE: LoRA 86.6, FT 78.7
    hu = table[table["paper"] == "Hu et al. 2021 (LoRA)"]
    large = hu[hu["model"] == "FacebookAI/roberta-large"]
    large_lora = large[large["method"] == "lora"].set_index("task")  # Table 2, RoB_large (LoRA) 0.8M
    table_2 = {"mnli": 90.6, "sst2": 96.2, "mrpc": 90.9, "cola": 68.2, "qnli": 94.9, "qqp": 91.6}
    assert large_lora["value"].to_dict() == table_2 | {"rte": 87.4, "stsb": 92.6}
    assert large_lora.loc["cola", "metric"] == "mcc" and set(large_lora["aggregate"]) == {"median"}
    large_ft = large[large["method"] == "full"].set_index("task")  # RoB_large (FT)* 355.0M
    assert (large_ft.loc["rte", "value"], large_ft.loc["mnli", "value"]) == (86.6, 90.2)
    assert set(large["method"]) == {"full", "lora"} and len(large) == 16  # the dagger rows are not here
    adalora = table[table["paper"] == "Zhang et al. 2023 (AdaLoRA)"]
    assert set(adalora["method"]) == {"full", "bitfit", "lora", "adalora"}
    assert set(adalora["aggregate"]) == {"mean"} and set(adalora["seeds"]) == {"5"}
    run_glue = table[table["paper"] == "transformers run_glue.py README"].set_index(["task", "metric"])[
        "value"
    ]
    assert run_glue[("mrpc", "f1")] == 88.85 and run_glue[("wnli", "accuracy")] == 56.34
    vera = table[table["method"] == "vera"].set_index("task")  # VeRA's Table 2, RoBERTa base
    table_2 = {"sst2": 94.6, "mrpc": 89.5, "cola": 65.6, "qnli": 91.8, "rte": 78.7, "stsb": 90.7}
    assert vera["value"].to_dict() == table_2 and vera.loc["stsb", "metric"] == "pearson"
    assert set(vera["aggregate"]) == {"median"} and set(vera["seeds"]) == {"5"}  # Section 4.1


def write_reference(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({column: row.get(column, "") for column in COLUMNS} for row in rows)
    return path


def test_the_report_sets_the_published_value_beside_the_measured_one(tmp_path):
    root = tmp_path / "sweep"
    accuracies = [0.80, 0.82, 0.87]
    for seed, acc in enumerate(accuracies, start=1):
        write_run(root, str(seed), seed=seed, acc=acc, f1=acc + 0.05)
    common = {
        "paper": "Someone 2025",
        "table": "Table 1",
        "model": "minilm",
        "method": "lora",
        "task": "mrpc",
    }
    reference = write_reference(
        tmp_path / "mine.csv",
        [
            {**common, "metric": "accuracy", "value": 85.0, "seeds": 5, "aggregate": "median"},
            {**common, "metric": "f1", "value": 99.0, "seeds": 3, "aggregate": "mean"},
            {**common, "task": "sst2", "metric": "accuracy", "value": 99.0},  # no such run: no row
        ],
    )
    report = write_report([root], tmp_path / "report", aso_iterations=0, published=[reference]).read_text()
    rows = {row[3]: row for row in table_rows(section(report, "Published results"))}
    assert set(rows) == {"accuracy", "f1"}
    percent = 100 * np.array(accuracies)
    low, high = stats.t.interval(0.95, df=2, loc=percent.mean(), scale=stats.sem(percent))
    median = float(np.median(percent))
    assert rows["accuracy"][4:] == [
        f"{median:.2f} (median)",
        "3",
        f"[{low:.2f}, {high:.2f}]",
        "85.00",
        "Someone 2025, Table 1",
        "5 seeds, median",
        f"{median - 85.0:+.2f}",
        "yes",
    ]
    f1 = percent + 5
    assert rows["f1"][4] == f"{f1.mean():.2f} (mean)" and rows["f1"][-2] == f"{f1.mean() - 99.0:+.2f}"
    assert rows["f1"][-1] == "no"  # 99 lies above the interval of 85, 87, 92


def test_a_reference_file_without_the_columns_is_refused_in_one_line(tmp_path):
    (tmp_path / "bad.csv").write_text("paper,value\nX,1\n")
    with pytest.raises(UserError, match="lacks the columns table, model, method"):
        read_published([tmp_path / "bad.csv"])


def test_a_value_of_the_last_epoch_is_compared_with_the_last_epoch(tmp_path):
    """run_glue.py evaluates its final model; LoRA and AdaLoRA take each run's best epoch."""
    assert set(read_published()["epoch"]) == {"best", "last"}
    assert set(read_published().query("paper == 'transformers run_glue.py README'")["epoch"]) == {"last"}
    root = tmp_path / "sweep"
    write_run(root, "1", seed=1, acc=0.80)  # the last epoch is 0.01 lower
    common = {"paper": "P", "table": "T", "model": "minilm", "method": "lora", "task": "mrpc"}
    reference = write_reference(
        tmp_path / "mine.csv", [{**common, "metric": "accuracy", "value": 79.0, "aggregate": "single"}]
    )
    with open(reference) as file:
        lines = file.read().splitlines()
    (tmp_path / "last.csv").write_text("\n".join([lines[0] + ",epoch", lines[1] + ",last"]) + "\n")
    report = write_report([root], tmp_path / "report", aso_iterations=0, published=[tmp_path / "last.csv"])
    (row,) = table_rows(section(report.read_text(), "Published results"))
    assert row[4] == "79.00 (mean)" and row[-2] == "+0.00"
