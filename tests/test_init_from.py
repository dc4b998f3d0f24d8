"""init_from: a run starts from another run's trained tensors, exactly (torch.equal), with only a head of
another size left at its fresh initialisation; the source in the same sweep is found by task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict, load_peft_weights
from safetensors.torch import load_file

from peft_glue.errors import UserError
from peft_glue.record import COMPLETED, RunRecord
from peft_glue.report import write_report
from peft_glue.results.runs import load_runs
from peft_glue.train import train
from peft_glue.training.artifacts import export_trained
from peft_glue.training.components import assemble
from peft_glue.training.init_from import in_this_sweep, initialise_from, is_head

from .conftest import compose_cfg, tiny_overrides
from .test_report import write_run


def finished_run(method: str, run_dir: Path, tiny_bert: Path, tiny_glue: Path, task: str = "mrpc") -> Path:
    """A completed run's folder as training leaves it, without the training: its tensors moved off their
    initial values (LoRA's B starts at zero), exported by the method, and its results.json."""
    cfg = compose_cfg([f"method={method}", f"task={task}", *tiny_overrides(tiny_bert, tiny_glue)], run_dir)
    torch.manual_seed(1)
    parts = assemble(cfg)
    with torch.no_grad():
        for param in parts.model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    record = RunRecord(run_dir, task=task, method={"name": method}, seed=42, task_info=parts.task.info())
    exports = export_trained(parts.method, parts.model, parts.tokenizer, run_dir, merge=False)
    record.save(status=COMPLETED, exports=exports)
    return run_dir


@pytest.fixture(scope="module")
def sources(tiny_bert, tiny_glue, tmp_path_factory) -> dict[str, Path]:
    """Finished MRPC runs (2 labels) of LoRA and of full fine-tuning."""
    root = tmp_path_factory.mktemp("sources")
    return {method: finished_run(method, root / method, tiny_bert, tiny_glue) for method in ("lora", "full")}


def started_from(source: Path, method: str, task: str, tiny_bert: Path, tiny_glue: Path, tmp_path: Path):
    """A model of ``task`` built for ``method``, its tensors before init_from, and after."""
    cfg = compose_cfg([f"method={method}", f"task={task}", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)
    torch.manual_seed(0)
    parts = assemble(cfg)
    before = {name: tensor.clone() for name, tensor in trained_state(parts.model).items()}
    info = initialise_from(str(source), parts.method, parts.model, parts.task)
    return parts.model, before, trained_state(parts.model), info


def trained_state(model) -> dict[str, torch.Tensor]:
    """The tensors an export saves, under its names."""
    return get_peft_model_state_dict(model) if hasattr(model, "peft_config") else model.state_dict()


@pytest.mark.parametrize("task", ["sst2", "stsb"])
def test_lora_init_from_loads_the_saved_adapter_exactly_and_a_head_of_another_size_afresh(
    sources, task, tiny_bert, tiny_glue, tmp_path
):
    model, before, after, info = started_from(sources["lora"], "lora", task, tiny_bert, tiny_glue, tmp_path)
    saved = load_peft_weights(str(sources["lora"] / "adapter"))
    assert set(after) == set(saved)
    head = {name for name in saved if is_head(model, name)}
    assert head and len(head) < len(saved)
    for name, tensor in saved.items():
        if task == "stsb" and name in head:  # 1 label, not MRPC's 2: the fresh head stays
            assert tensor.shape != after[name].shape and torch.equal(after[name], before[name]), name
        else:
            assert torch.equal(after[name], tensor), name
    expected = "re-initialised (2 -> 1 labels)" if task == "stsb" else "loaded"
    assert info["head"] == expected and info["task"] == "mrpc" and info["method"] == "lora"


def test_full_init_from_loads_the_whole_model_but_a_head_of_another_size(
    sources, tiny_bert, tiny_glue, tmp_path
):
    model, before, after, info = started_from(sources["full"], "full", "stsb", tiny_bert, tiny_glue, tmp_path)
    saved = load_file(sources["full"] / "model" / "model.safetensors")
    head = {name for name in after if is_head(model, name)}
    assert head == {"classifier.weight", "classifier.bias"}
    for name, tensor in after.items():
        expected = before[name] if name in head else saved[name]
        assert torch.equal(tensor, expected), name
    assert info["head"] == "re-initialised (2 -> 1 labels)"


def test_init_from_a_run_of_another_method_is_refused_in_one_line(sources, tiny_bert, tiny_glue, tmp_path):
    with pytest.raises(UserError, match="trained with method=full; this run is method=lora"):
        started_from(sources["full"], "lora", "mrpc", tiny_bert, tiny_glue, tmp_path)


def test_sweep_task_finds_the_run_of_that_task_with_the_same_seed_and_model(tmp_path):
    sweep = tmp_path / "sweep"
    for name, task, seed, status in [
        ("0", "mnli", 1, COMPLETED),
        ("1", "mnli", 2, COMPLETED),
        ("2", "mnli", 3, "failed"),
        ("3", "rte", 2, "running"),
    ]:
        RunRecord(sweep / name, task=task, seed=seed, model="minilm").save(status=status)
    assert in_this_sweep("sweep:mnli", sweep / "3", 2, "minilm") == sweep / "1"
    with pytest.raises(UserError, match="no completed mnli run with seed 3 and model=minilm"):
        in_this_sweep("sweep:mnli", sweep / "3", 3, "minilm")


@pytest.mark.slow  # two tiny trainings, about 15 s
def test_a_sweep_trains_the_source_task_first_and_starts_the_others_from_it(tiny_bert, tiny_glue, tmp_path):
    """init_from=sweep:mrpc: the MRPC job trains from the pretrained model, the SST-2 job from its adapter."""
    common = ["method=lora", "init_from=sweep:mrpc", "trainer.max_epochs=1", "submission=false"]
    runs = {}
    for number, task in enumerate(("mrpc", "sst2")):
        run_dir = tmp_path / "sweep" / str(number)
        record = RunRecord(run_dir, task=task, seed=42, method={"name": "lora"})
        train(compose_cfg([*common, f"task={task}", *tiny_overrides(tiny_bert, tiny_glue)], run_dir), record)
        runs[task] = record.results
    assert runs["mrpc"].init_from is None
    assert runs["sst2"].init_from["source"] == str((tmp_path / "sweep" / "0" / "adapter").resolve())
    assert runs["sst2"].init_from["head"] == "loaded"
    assert runs["sst2"].identity()["init_from"] == "mrpc"


def test_the_report_labels_a_run_that_started_from_another_tasks_weights(tmp_path):
    write_run(tmp_path, "scratch")
    started = {"task": "mnli", "source": "x", "head": "loaded"}
    write_run(tmp_path, "transfer", init_from=started)
    runs = load_runs([tmp_path]).set_index("run_dir")["method_label"]
    assert {Path(folder).name: label for folder, label in runs.items()} == {
        "scratch": "lora",
        "transfer": "lora from mnli",
    }


def test_runs_started_from_another_tasks_weights_are_paired_with_those_from_scratch(tmp_path):
    """The starting point is a treatment, like the method: ``lora from mnli`` and ``lora`` on the same
    task, model and budget are compared seed by seed (the transfer experiment's paired test)."""
    started = {"task": "mnli", "source": "x", "head": "loaded"}
    for seed, (scratch, transfer) in enumerate([(0.80, 0.84), (0.78, 0.83), (0.81, 0.84)], start=1):
        write_run(tmp_path, f"scratch{seed}", seed=seed, acc=scratch)
        write_run(tmp_path, f"transfer{seed}", seed=seed, acc=transfer, init_from=started)
    report = write_report([tmp_path], tmp_path / "report", aso_iterations=0).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| lora vs lora from mnli |"))
    assert row.split(" | ")[1:3] == [
        "3",
        "-2.0",
    ]  # 3 seeds; acc and F1 mean: half of acc
