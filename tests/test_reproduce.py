"""python -m peft_glue.reproduce: the same configuration trained again matches bit for bit (metrics and the
exported weights); a difference of one ulp in any metric, or in the environment, is named."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from peft_glue.record import Provenance, RunResults, read_results
from peft_glue.reproduce import command_of, environment_differences, metric_differences, metrics_of

from .conftest import run_cli, tiny_overrides


def results_with(accuracy: float) -> RunResults:
    best = {"epoch": 1, "accuracy": accuracy, "f1": math.nan}
    return RunResults(val={"best": best, "last": best}, val_history=[best], test={"accuracy": 0.5})


def test_one_ulp_in_one_metric_is_a_difference_and_nan_equals_nan():
    value = 0.8125
    assert metric_differences(results_with(value), results_with(value)) == []
    nudged = math.nextafter(value, 1.0)
    differences = metric_differences(results_with(value), results_with(nudged))
    assert [line.split(":")[0] for line in differences] == [
        "val.best.accuracy",
        "val.last.accuracy",
        "val_history[0].accuracy",
    ]


def test_environment_differences_name_the_library_and_the_data_file():
    old = Provenance(peft_glue="0.1.0", libraries={"torch": "2.13.0"}, data={"RTE/train.tsv": "a" * 64})
    new = Provenance(peft_glue="0.1.0", libraries={"torch": "2.12.0"}, data={"RTE/train.tsv": "b" * 64})
    assert environment_differences(old, new) == [
        "libraries.torch: 2.13.0 -> 2.12.0",
        f"data.RTE/train.tsv: {'a' * 64} -> {'b' * 64}",
    ]
    assert environment_differences(old, old) == []


def test_the_command_keeps_the_overrides_and_adds_the_seed_once(tmp_path):
    command = command_of(["method=lora", "resume=auto"], 7, tmp_path)
    assert command[3:] == ["method=lora", "seed=7", f"hydra.run.dir={tmp_path}"]
    assert command_of(["seed=3"], 3, tmp_path)[3:] == ["seed=3", f"hydra.run.dir={tmp_path}"]


@pytest.mark.slow  # two training processes, about 30 s
def test_a_tiny_run_reproduces_bit_for_bit(tiny_bert, tiny_glue, tmp_path):
    original = tmp_path / "original"
    args = ["method=lora", "seed=3", "trainer.max_epochs=2", *tiny_overrides(tiny_bert, tiny_glue)]
    done = run_cli(*args, f"hydra.run.dir={original}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    again = tmp_path / "again"
    command = [sys.executable, "-m", "peft_glue.reproduce", str(original / "adapter" / "README.md")]
    reproduced = subprocess.run(
        [*command, "--out", str(again)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert reproduced.returncode == 0, reproduced.stdout[-2000:] + reproduced.stderr[-2000:]
    assert "reproduced: every metric and the exported weights match bit for bit" in reproduced.stdout
    before, after = read_results(original), read_results(again)
    assert metrics_of(before) == metrics_of(after) and len(metrics_of(before)) > 6
    weights = "adapter/adapter_model.safetensors"
    assert (original / weights).read_bytes() == (again / weights).read_bytes()
    assert json.loads((again / "results.json").read_text())["seed"] == 3
