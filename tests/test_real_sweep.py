"""One real multirun made in the test session: a job that diverges mid-training, the others complete, the
exit is non-zero; `report` and `analyze` read the very folders it left, and their tables carry its values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file

from peft_glue.analyze import main as analyze_main
from peft_glue.report import main as report_main

from .conftest import run_cli, tiny_overrides

A_KEY = "base_model.model.bert.encoder.layer.{}.attention.self.query.lora_A.weight"


@pytest.fixture(scope="module")
def sweep(tiny_bert, tiny_glue, tmp_path_factory) -> tuple[Path, object]:
    """LoRA r=1,4 x lr=1e30 (the loss becomes NaN within the first epoch),1e-3: 4 jobs, the failing ones
    first, so completed jobs follow a failed one in the same process."""
    root = tmp_path_factory.mktemp("real-sweep")
    folder = root / "sweep"
    result = run_cli(
        "-m", "method=lora", "method.r=1,4", "optimizer.lr=1e30,1e-3", "seed=3",
        *tiny_overrides(tiny_bert, tiny_glue), "trainer.max_epochs=1", f"hydra.sweep.dir={folder}", cwd=root,
    )  # fmt: skip
    return folder, result


def jobs(folder: Path) -> list[dict]:
    return [
        {**json.loads(path.read_text()), "dir": path.parent} for path in sorted(folder.glob("*/results.json"))
    ]


def test_a_job_failing_mid_training_leaves_the_others_completed_and_the_exit_non_zero(sweep):
    folder, result = sweep
    runs = jobs(folder)
    assert [(r["method"]["r"], r["optimizer"]["lr"], r["status"]) for r in runs] == [
        (1, 1e30, "failed"),
        (1, 1e-3, "completed"),
        (4, 1e30, "failed"),
        (4, 1e-3, "completed"),
    ]
    for failed in (runs[0], runs[2]):
        assert "training loss became" in failed["error"]
        assert not (failed["dir"] / "adapter").exists()  # it failed in training, before any export
    for completed in (runs[1], runs[3]):
        assert (completed["dir"] / "adapter" / "adapter_model.safetensors").is_file()
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 job(s) failed: 0_" in result.stderr and "; 2_" in result.stderr


def table_rows(text: str, title: str) -> list[list[str]]:
    """Cells of the Markdown table rows in the `## title` section (header and rule excluded)."""
    part = text.split(f"## {title}")[1].split("\n## ")[0]
    rows = [
        [c.strip() for c in line.strip("| ").split(" | ")] for line in part.splitlines() if line[:2] == "| "
    ]
    return [row for row in rows[1:] if set(row) != {"---"}]


def test_report_tables_hold_the_values_of_the_real_runs(sweep, tmp_path):
    folder, _ = sweep
    runs = jobs(folder)
    report_main([str(folder), "--out", str(tmp_path)])
    text = (tmp_path / "report.md").read_text()
    assert "4 runs from" in text and "2 completed, 2 failed" in text

    def pct(value: float) -> str:
        return f"{100 * value:.1f} (n=1)"

    # task | r | lr | trainable params | % of model | best and last of each metric of the task | train
    # samples/s | peak memory (MB)
    expected = [
        ["mrpc", str(r["method"]["r"]), "0.001", f"{r['trainable_params']:,}",
         f"{r['trainable_percent']:.4f}",
         *(pct(r["val"][when][m]) for m in r["task_info"]["metrics"] for when in ("best", "last")),
         f"{r['train_samples_per_second']:,.1f}", f"{r['peak_memory_mb']:,.0f}"]
        for r in runs if r["status"] == "completed"
    ]  # fmt: skip
    assert all(
        r["task_info"]["metrics"] == ["accuracy", "f1", "acc_and_f1"] for r in runs if "task_info" in r
    )
    assert table_rows(text, "LoRA rank sweep") == expected
    failed = table_rows(text, "Failed and unfinished runs")
    assert [row[0].split("/")[-1] for row in failed] == [
        r["dir"].name for r in runs if r["status"] == "failed"
    ]
    assert all(row[-1] == r["error"] for row, r in zip(failed, [runs[0], runs[2]], strict=True))
    table = pd.read_csv(tmp_path / "results.csv")
    assert (
        sorted(zip(table["status"], table["seed"], strict=True))
        == [("completed", 3)] * 2 + [("failed", 3)] * 2
    )


def phi_11(a1: np.ndarray, a2: np.ndarray) -> float:
    """φ(1,1): squared cosine between the top right-singular vectors of two A matrices (plain numpy)."""
    top = [np.linalg.svd(a, full_matrices=False)[2][0] for a in (a1, a2)]
    return float(np.dot(top[0], top[1]) ** 2)


def test_analyze_compares_the_real_adapters(sweep, tmp_path):
    folder, _ = sweep
    completed = {r["method"]["r"]: r["dir"] for r in jobs(folder) if r["status"] == "completed"}
    analyze_main([str(folder), "--out", str(tmp_path)])
    text = (tmp_path / "analysis.md").read_text()
    assert "2 LoRA runs" in text
    (row,) = table_rows(text, "Rank vs rank (same seed)")
    assert row[:5] == ["mrpc", "bert_base_uncased", "1", "4", "1"]
    adapters = {r: load_file(str(d / "adapter" / "adapter_model.safetensors")) for r, d in completed.items()}
    expected = [
        phi_11(adapters[1][A_KEY.format(layer)], adapters[4][A_KEY.format(layer)]) for layer in (0, 1)
    ]
    assert row[5:8] == [f"{expected[0]:.3f}", f"{expected[1]:.3f}", f"{np.mean(expected):.3f}"]
    assert (tmp_path / "rank_mrpc_bert_base_uncased_r1_vs_r4.png").is_file()


def test_an_unexpected_exception_mid_training_fails_its_job_only(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    """Not a UserError (a bug, a library error): the generic branch records it with its type, the sweep goes
    on, and the multirun exits non-zero listing it. In-process, so that the failure can be planted."""
    from peft_glue import train as train_module
    from peft_glue.training.module import GlueClassifier

    original = GlueClassifier.training_step

    def explode_on_seed_7(self, batch, batch_idx):
        if batch_idx == 2 and self.trainer.current_epoch == 0 and torch.initial_seed() == 7:
            raise RuntimeError("a planted failure at step 2")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(GlueClassifier, "training_step", explode_on_seed_7)
    folder = tmp_path / "sweep"
    argv = ["-m", "method=bitfit", "seed=7,8", *tiny_overrides(tiny_bert, tiny_glue), "trainer.max_epochs=1"]
    monkeypatch.setattr("sys.argv", ["peft_glue.train", *argv, f"hydra.sweep.dir={folder}"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train_module.main()
    assert exit_info.value.code == 1
    runs = jobs(folder)
    assert [(r["seed"], r["status"]) for r in runs] == [(7, "failed"), (8, "completed")]
    assert runs[0]["error"] == "RuntimeError: a planted failure at step 2"
