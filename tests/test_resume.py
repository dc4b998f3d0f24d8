"""Determinism and resumption compared on what training produced: the exported adapter tensors
(`torch.equal`) and the training loss of every step in metrics.csv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_glue.record import RunRecord
from peft_glue.results.runs import read_metrics
from peft_glue.train import train
from peft_glue.training.module import GlueClassifier

from .conftest import compose_cfg, tiny_overrides

ADAPTER = "adapter/adapter_model.safetensors"


def overrides(tiny_bert: Path, tiny_glue: Path) -> list[str]:
    """LoRA with dropout (the random generators matter), the loss logged at every step, a checkpoint every
    3 steps; 8 steps per epoch, 2 epochs."""
    return [
        "method=lora", "method.dropout=0.1", "optimizer.lr=1e-2", "trainer.log_every_n_steps=1",
        "checkpoint.every_n_train_steps=3", "seed=11", *tiny_overrides(tiny_bert, tiny_glue),
    ]  # fmt: skip


def trained(args: list[str], folder: Path) -> RunRecord:
    record = RunRecord(folder)
    train(compose_cfg(args, folder), record)
    return record


def step_losses(folder: Path) -> list[tuple[int, float]]:
    metrics = read_metrics(folder).dropna(subset=["train/loss"])
    return list(zip(metrics["step"].astype(int), metrics["train/loss"], strict=True))


def assert_same_training(folder: Path, reference: Path) -> None:
    ours, theirs = load_file(folder / ADAPTER), load_file(reference / ADAPTER)
    assert ours.keys() == theirs.keys() and any("lora_B" in key for key in ours)
    assert all(torch.equal(ours[key], theirs[key]) for key in ours), [
        key for key in ours if not torch.equal(ours[key], theirs[key])
    ]
    losses = step_losses(folder)
    assert [step for step, _ in losses] == list(range(16))  # every step of both epochs
    assert losses == step_losses(reference)


@pytest.fixture(scope="module")
def reference(tiny_bert, tiny_glue, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    trained(overrides(tiny_bert, tiny_glue), folder)
    adapter = load_file(folder / ADAPTER)
    assert any(key.endswith("lora_B.weight") and adapter[key].abs().sum() > 0 for key in adapter)  # trained
    return folder


def test_same_seed_same_tensors_and_step_losses(reference, tiny_bert, tiny_glue, tmp_path):
    trained(overrides(tiny_bert, tiny_glue), tmp_path)
    assert_same_training(tmp_path, reference)


class Interrupted(Exception):
    pass


def test_run_interrupted_mid_epoch_resumes_to_the_same_tensors_and_losses(
    reference, tiny_bert, tiny_glue, tmp_path, monkeypatch
):
    original = GlueClassifier.training_step

    def crash_at_step_11(self, batch, batch_idx):
        if self.global_step == 11:  # the last checkpoint is step 9: two steps of epoch 1 are redone
            raise Interrupted
        return original(self, batch, batch_idx)

    monkeypatch.setattr(GlueClassifier, "training_step", crash_at_step_11)
    with pytest.raises(Interrupted):
        trained(overrides(tiny_bert, tiny_glue), tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9
    monkeypatch.setattr(GlueClassifier, "training_step", original)

    record = trained([*overrides(tiny_bert, tiny_glue), "resume=auto"], tmp_path)
    assert record.results.resumed_from.endswith("last.ckpt")
    assert_same_training(tmp_path, reference)
