"""The tutorial (docs/tutorial.md) runs as written: its peft_glue commands, end to end, on the real SST-2
files and the real MiniLM weights at its tiny budget; the numbers its report shows are those of the runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import shared_glue

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"


def tutorial_commands() -> list[list[str]]:
    """The ``python -m peft_glue.<command> ...`` lines of the tutorial's ``bash`` blocks, in order (set-up
    lines such as ``make install`` are the CI's own steps)."""
    blocks = re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("python -m peft_glue.")]


def test_the_tutorial_has_a_sweep_and_a_report():
    commands = tutorial_commands()
    assert [c[:3] for c in commands] == [
        ["python", "-m", "peft_glue.train"],
        ["python", "-m", "peft_glue.report"],
    ]


@pytest.mark.slow  # two MiniLM runs on 256 SST-2 sentences, one epoch each: minutes on 2 CPU cores
def test_the_tutorial_runs_end_to_end(tmp_path):
    env = {**os.environ, "GLUE_DIR": str(shared_glue("SST-2").parent)}
    for command in tutorial_commands():
        done = subprocess.run(
            [sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
    runs = {}
    for path in sorted((tmp_path / "outputs" / "tutorial").glob("*/results.json")):
        results = json.loads(path.read_text())
        assert results["status"] == "completed"
        assert results["train_subset"] == 256 and results["data_dir"] == env["GLUE_DIR"]
        runs[results["method"]["name"]] = results["val"]["best"]["accuracy"]
    assert sorted(runs) == ["bitfit", "lora"]
    table = pd.read_csv(tmp_path / "outputs" / "tutorial" / "report" / "results.csv")
    assert dict(zip(table["method.name"], table["val.best.accuracy"], strict=True)) == pytest.approx(runs)
    report = (tmp_path / "outputs" / "tutorial" / "report" / "report.md").read_text()
    for method, accuracy in runs.items():
        assert f"| sst2 | {method} | 0.001 |" in report and f"{100 * accuracy:.1f} (n=1)" in report
