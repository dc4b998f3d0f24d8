"""The typed run record that joins the two wings, and the shape of the house: imports point one way."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from peft_glue.record import RunRecord, RunResults, Splits, TaskInfo, read_results

PACKAGE = Path(__file__).resolve().parent.parent / "peft_glue"

# results.json as the version before the typed record wrote it (MNLI, a method-carried lr)
OLDER = {
    "status": "completed",
    "task": "mnli",
    "task_info": {"metrics": ["accuracy"], "monitor": "accuracy", "labels": ["a", "b", "c"], "old_key": 1},
    "method": {"name": "lora", "lr": 0.002, "r": 8},
    "model": "minilm",
    "seed": 3,
    "val": {"best": {"accuracy": 0.75, "epoch": 1}, "last": {"accuracy": 0.7, "epoch": 2}},
    "splits": {"validation_from": "train", "sizes": {"train": 90, "validation": 10}},
    "predictions": "/runs/x/MNLI-m.tsv",
    "written_by_a_newer_version": {"x": 1},
}


def test_an_older_results_json_reads_through_named_fields(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(OLDER))
    results = read_results(tmp_path)
    assert results.monitor == "accuracy" and results.monitor_value == 0.75
    assert results.learning_rate == 0.002  # no optimizer recorded: the method's lr of older records
    assert results.method_name == "lora" and results.identity()["method"] == {"name": "lora", "r": 8}
    assert results.identity()["lr"] == 0.002
    assert results.predictions == ["/runs/x/MNLI-m.tsv"]  # one file was a string: now always a list
    assert results.validation_carved and results.splits.sizes == {"train": 90, "validation": 10}
    assert results.task_info.labels == ["a", "b", "c"]
    assert results.extra == {"written_by_a_newer_version": {"x": 1}}  # kept, and written back
    assert results.to_dict()["written_by_a_newer_version"] == {"x": 1}


def test_the_optimizer_is_the_one_home_of_the_learning_rate():
    results = RunResults(method={"name": "bitfit", "lr": 0.1}, optimizer={"lr": 0.003})
    assert results.learning_rate == 0.003 and results.identity()["lr"] == 0.003


def test_a_run_that_never_validated_has_a_nan_monitor_value():
    assert math.isnan(RunResults(task_info=TaskInfo(monitor="mcc")).monitor_value)
    assert math.isnan(
        RunResults(val={"best": {"accuracy": 0.9}}, task_info=TaskInfo(monitor="mcc")).monitor_value
    )


def test_saving_round_trips_and_refuses_an_undeclared_key(tmp_path):
    record = RunRecord(tmp_path, task="rte", method={"name": "lora", "r": 4}, seed=1)
    record.save(splits={"validation_from": "train", "sizes": {"train": 9}}, trainable_params=12)
    assert isinstance(record.results.splits, Splits) and record.results.splits.sizes == {"train": 9}
    assert read_results(tmp_path) == record.results
    with pytest.raises(TypeError, match="trainable_parms"):
        record.save(trainable_parms=3)  # a typo is an error, not a silent new key
    assert read_results(tmp_path).trainable_params == 12


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(
    ("wing", "forbidden"), [("training", "peft_glue.results"), ("results", "peft_glue.training")]
)
def test_the_wings_never_import_each_other(wing, forbidden):
    offenders = {
        f"{path.name}: {name}"
        for path in (PACKAGE / wing).glob("*.py")
        for name in imported_modules(path)
        if name.startswith(forbidden)
    }
    assert not offenders


def test_the_record_imports_nothing_of_the_package():
    assert not {name for name in imported_modules(PACKAGE / "record.py") if name.startswith("peft_glue")}


def test_the_results_commands_never_import_torch():
    code = (
        "import sys, peft_glue.report, peft_glue.analyze, peft_glue.submit, peft_glue.results.card; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('peft_glue.training')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        ("peft_glue.report", "no results.json found below"),
        ("peft_glue.analyze", "no LoRA adapter"),
        ("peft_glue.submit", "no completed run with submission files below"),
    ],
)
def test_a_results_command_given_no_runs_fails_in_one_line(tmp_path, command, fragment):
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", command, str(tmp_path / "empty"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and fragment in done.stderr
