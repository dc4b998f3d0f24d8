"""End-to-end runs on a tiny random BERT and a tiny GLUE-layout folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from peft_glue.record import RunRecord
from peft_glue.train import train
from peft_glue.training import components
from peft_glue.training.module import GlueClassifier

from .conftest import compose_cfg, run_cli, tiny_overrides

REQUIRED = {
    "task", "method", "model", "seed", "trainable_params", "total_params", "trainable_percent", "val", "test",
    "train_seconds", "train_samples_per_second", "peak_memory_mb", "status",
}  # fmt: skip


def read_results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def check_results(results: dict, task: str, method: str) -> None:
    assert results.keys() >= REQUIRED
    assert results["status"] == "completed"
    assert results["task"] == task and results["method"]["name"] == method
    assert 0 < results["trainable_params"] <= results["total_params"]
    assert results["train_seconds"] > 0 and results["train_samples_per_second"] > 0
    assert [m["epoch"] for m in results["val_history"]] == [0, 1]
    assert results["val"]["last"] == results["val_history"][-1]
    assert 0 <= results["val"]["best"]["accuracy"] <= 1


@pytest.mark.slow  # a whole multirun of every method x task; each method and task also has fast tests
def test_every_method_on_every_task_in_one_multirun(tiny_bert, tiny_glue, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "method=full,bitfit,lora", "task=mrpc,sst2", "seed=7",
        *tiny_overrides(tiny_bert, tiny_glue), f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(path.parent for path in sweep.glob("*/results.json"))
    assert len(folders) == 6
    seen = set()
    for folder in folders:
        results = read_results(folder)
        check_results(results, results["task"], results["method"]["name"])
        seen.add((results["task"], results["method"]["name"]))
        assert (folder / "metrics.csv").is_file() and (folder / ".hydra" / "config.yaml").is_file()
        # GLUE test files have no labels: predictions are written as a submission file instead
        assert results["test"] is None
        (submission,) = map(Path, results["predictions"])
        assert submission.name == {"mrpc": "MRPC.tsv", "sst2": "SST-2.tsv"}[results["task"]]
        lines = submission.read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 25
        assert [int(line.split("\t")[0]) for line in lines[1:]] == list(range(24))
        assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    assert seen == {(t, m) for t in ("mrpc", "sst2") for m in ("full", "bitfit", "lora")}
    assert read_results(folders[0])["seed"] == 7


def test_rank_sweep_writes_one_result_per_rank(tiny_bert, tiny_glue, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "method=lora", "method.r=1,4", "trainer.max_epochs=1", *tiny_overrides(tiny_bert, tiny_glue),
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = [read_results(path.parent) for path in sorted(sweep.glob("*/results.json"))]
    assert [r["method"]["r"] for r in results] == [1, 4]
    assert results[0]["trainable_params"] < results[1]["trainable_params"]
    assert all(r["status"] == "completed" for r in results)


def test_labelled_test_split_is_evaluated(tiny_bert, tiny_glue, tmp_path):
    glue = tmp_path / "glue"
    (glue / "MRPC").mkdir(parents=True)
    for name in ("train", "dev"):
        (glue / "MRPC" / f"{name}.tsv").write_bytes((tiny_glue / "MRPC" / f"{name}.tsv").read_bytes())
    (glue / "MRPC" / "test.tsv").write_bytes((tiny_glue / "MRPC" / "dev.tsv").read_bytes())
    overrides = ["task=mrpc", "method=bitfit", "logger=[csv,tensorboard]", *tiny_overrides(tiny_bert, glue)]
    record = RunRecord(tmp_path / "run")
    train(compose_cfg(overrides, tmp_path / "run"), record)
    assert record.results.status == "completed"
    assert set(record.results.test) == {"accuracy", "f1", "acc_and_f1", "loss"}  # MRPC: + the derived mean
    assert record.results.predictions is None
    # both loggers: metrics.csv for the report, TensorBoard event files
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_dry_run_builds_but_does_not_train(tiny_bert, tmp_path):
    cfg = compose_cfg(
        [f"model.name_or_path={tiny_bert}", "dry_run=true", "data.data_dir=/nonexistent"], tmp_path
    )
    record = RunRecord(tmp_path)
    train(cfg, record)
    assert record.results.status == "dry_run" and record.results.trainable_params > 0
    assert read_results(tmp_path)["trainable_params"] == record.results.trainable_params


def test_dropout_is_active_inside_training_step(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    modes: list[bool] = []
    original = GlueClassifier.training_step

    def spy(self, batch, batch_idx):
        dropouts = [m for m in self.model.modules() if isinstance(m, nn.Dropout)]
        modes.append(bool(dropouts) and all(m.training for m in dropouts))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(GlueClassifier, "training_step", spy)
    # from_pretrained hands back eval mode; the module must switch dropout on for training
    monkeypatch.setattr(components, "load_model", _eval_mode(components.load_model))
    cfg = compose_cfg(["method=full", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)
    train(cfg, RunRecord(tmp_path))
    assert modes and all(modes)


def _eval_mode(load_model):
    def load(*args, **kwargs):
        return load_model(*args, **kwargs).eval()

    return load


@pytest.mark.parametrize("method", ["full", "lora"])
def test_same_seed_same_metrics(tiny_bert, tiny_glue, tmp_path, method):
    runs = []
    for name in ("a", "b"):
        cfg = compose_cfg([f"method={method}", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / name)
        record = RunRecord(tmp_path / name)
        train(cfg, record)
        runs.append(record.results.val_history)
    assert runs[0] == runs[1]
