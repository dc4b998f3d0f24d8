"""A new task and a new method from this file alone (no yaml, no change to peft_glue): they train, predict
and show up in the report, because the module, the data and the report ask the task and the method."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from peft_glue.record import RunRecord, read_results
from peft_glue.report import write_report
from peft_glue.train import train
from peft_glue.training.methods import Method
from peft_glue.training.tasks import GlueTask

from .conftest import FILLER, NEGATIVE, POSITIVE, compose_cfg


@dataclass(frozen=True)
class Mood(GlueTask):
    """Three classes named by words: what a binary-only pipeline would get wrong."""

    name = "mood"
    hub_config = "none"
    folder = "MOOD"
    text_columns = ("sentence",)
    label_column = "label"
    submission_file = "MOOD.tsv"
    label_names: ClassVar[tuple[str, ...]] = ("sad", "plain", "glad")


@dataclass
class TopLayers(Method):
    """The head and the top ``layers`` encoder layers train; saved as those tensors."""

    name = "top_layers"
    export_dir = "top_layers"
    order = -1  # listed before every built-in method
    sweeps = {"layers": "top-layer count"}
    layers: int = 0

    def trains(self, model: PreTrainedModel, param_name: str) -> bool:
        if not param_name.startswith(f"{model.base_model_prefix}."):
            return True  # the head
        depth = model.config.num_hidden_layers
        return any(f".layer.{i}." in param_name for i in range(depth - self.layers, depth))

    def apply(self, model: PreTrainedModel) -> nn.Module:
        for param_name, param in model.named_parameters():
            param.requires_grad = self.trains(model, param_name)
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, folder / "weights.safetensors")

    def load(self, base: PreTrainedModel, folder: Path) -> nn.Module:
        base.load_state_dict(load_file(folder / "weights.safetensors"), strict=False)
        return self.apply(base)


def write_mood(root: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = {"sad": NEGATIVE, "plain": FILLER, "glad": POSITIVE}

    def rows(n: int) -> list[tuple[str, str]]:
        labels = [("sad", "plain", "glad")[i % 3] for i in range(n)]
        return [(" ".join(rng.choice(words[y] if i % 2 else FILLER) for i in range(6)), y) for y in labels]

    folder = root / "MOOD"
    folder.mkdir(parents=True)
    for split, n in (("train", 96), ("dev", 48)):
        lines = ["sentence\tlabel", *(f"{s}\t{y}" for s, y in rows(n))]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    lines = ["index\tsentence", *(f"{i}\t{s}" for i, (s, _) in enumerate(rows(12)))]
    (folder / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_a_toy_task_and_method_train_predict_and_report(tiny_bert, tmp_path):
    data = write_mood(tmp_path / "glue")
    sweep = tmp_path / "sweep"
    for layers in (0, 2):
        run_dir = sweep / f"layers={layers}"
        overrides = [
            f"task._target_={__name__}.Mood",
            "task.monitor=accuracy",
            "method=full",
            f"method._target_={__name__}.TopLayers",
            f"+method.layers={layers}",
            "optimizer.lr=3e-3",
            f"model.name_or_path={tiny_bert}",
            f"data.data_dir={data}",
            "data.batch_size=8",
            "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false",
        ]
        record = RunRecord(
            run_dir, task="mood", method={"name": "top_layers", "layers": layers}, model="tiny", seed=42
        )
        train(compose_cfg(overrides, run_dir), record)
        results = read_results(run_dir)
        assert results.status == "completed", results.error
        assert results.task_info.metrics == ["accuracy"] and results.method_info.order == -1
        # three classes, predicted and written by their names
        submission = (run_dir / "MOOD.tsv").read_text().splitlines()
        assert submission[0] == "index\tprediction" and len(submission) == 13
        assert {line.split("\t")[1] for line in submission[1:]} <= {"sad", "plain", "glad"}
        assert (run_dir / "top_layers" / "weights.safetensors").is_file()
    assert (
        read_results(sweep / "layers=0").trainable_params < read_results(sweep / "layers=2").trainable_params
    )

    report = write_report([sweep], tmp_path / "report").read_text()
    assert "## top-layer count sweep" in report and "top-layer_sweep_mood.png" not in report
    assert "(count_sweep_mood.png)" in report  # the plot of the declared sweep
    assert "| mood | top_layers layers=0 |" in report and "| mood | top_layers layers=2 |" in report
