"""What a run keeps: small checkpoints, exact resume after SIGKILL, exports the HF ecosystem loads."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from peft_glue.errors import UserError
from peft_glue.predict import main as predict_main
from peft_glue.record import RunRecord, write_atomic, write_folder_atomic
from peft_glue.results.runs import read_metrics
from peft_glue.train import train
from peft_glue.training.methods import LoRA, apply_bitfit
from peft_glue.training.module import GlueClassifier
from peft_glue.training.tasks import MRPC

from .conftest import compose_cfg, run_cli, tiny_overrides, write_tiny_glue


def trained(overrides: list[str], run_dir: Path) -> tuple[GlueClassifier, RunRecord]:
    record = RunRecord(run_dir)
    module = train(compose_cfg(overrides, run_dir), record)
    return module, record


def logits(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 20, (6, 12), generator=generator)
    with torch.no_grad():
        return model.eval()(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits


def fresh_base(tiny_bert: Path) -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)


def test_lora_adapter_loads_in_peft_and_merges(tiny_bert, tiny_glue, tmp_path):
    module, record = trained(["method=lora", "merge=true", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)
    ours = logits(module.model)
    adapter = PeftModel.from_pretrained(fresh_base(tiny_bert), record.results.exports["weights"])
    assert torch.equal(logits(adapter), ours)
    merged = AutoModelForSequenceClassification.from_pretrained(record.results.exports["merged"])
    assert not isinstance(merged, PeftModel)
    torch.testing.assert_close(logits(merged), ours, atol=1e-5, rtol=0)


def test_bitfit_tensors_apply_to_a_fresh_base(tiny_bert, tiny_glue, tmp_path):
    module, record = trained(["method=bitfit", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)
    restored = apply_bitfit(fresh_base(tiny_bert), record.results.exports["weights"])
    assert torch.equal(logits(restored), logits(module.model))
    assert not torch.equal(logits(fresh_base(tiny_bert)), logits(module.model))


def test_full_model_saved_with_save_pretrained(tiny_bert, tiny_glue, tmp_path):
    module, record = trained(["method=full", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)
    restored = AutoModelForSequenceClassification.from_pretrained(record.results.exports["weights"])
    assert torch.equal(logits(restored), logits(module.model))


def test_peft_checkpoints_hold_only_trainable_tensors(tiny_bert, tiny_glue, tmp_path):
    trained(["method=lora", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / "lora")
    checkpoint = torch.load(tmp_path / "lora" / "checkpoints" / "last.ckpt", weights_only=True)
    keys = checkpoint["state_dict"].keys()
    assert keys and all("lora_" in k or "classifier" in k for k in keys)
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"] and checkpoint["loops"]

    module, _ = trained(["method=full", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / "full")
    checkpoint = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["state_dict"].keys() == module.state_dict().keys() - _metric_keys(module)


def _metric_keys(module: GlueClassifier) -> set[str]:
    return {k for k in module.state_dict() if not k.startswith("model.")}


def test_lora_checkpoint_of_bert_base_is_small():
    module = GlueClassifier(LoRA(r=8).apply(BertForSequenceClassification(BertConfig())), MRPC(), lr=1e-3)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    buffer = io.BytesIO()
    torch.save(checkpoint["state_dict"], buffer)
    weights_mb = buffer.tell() / 2**20
    assert weights_mb + 2 * 4 * trainable / 2**20 < 5  # weights + AdamW's two moments


def test_checkpoint_of_another_method_is_refused(tiny_bert, tiny_glue, tmp_path):
    trained(["method=bitfit", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / "bitfit")
    ckpt = tmp_path / "bitfit" / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match="lacks .* trained tensors"):
        trained(["method=lora", f"resume={ckpt}", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / "lora")


@pytest.mark.parametrize(
    "method",
    [["method=lora", "method.dropout=0.1"], ["method=ia3"]],
    ids=["lora", "ia3"],
)
@pytest.mark.slow  # 400 steps, a checkpoint every 3 (a minute or more); test_resume has a fast case
def test_killed_run_resumes_to_the_same_metrics(tiny_bert, tmp_path, method):
    glue = write_tiny_glue(tmp_path / "glue", n_train=800)
    common = [
        f"model.name_or_path={tiny_bert}", f"data.data_dir={glue}", *method, "data.batch_size=4",
        "trainer.max_epochs=2", "checkpoint.every_n_train_steps=3", "trainer.enable_progress_bar=false",
        "seed=5",
    ]  # fmt: skip
    reference = run_cli(*common, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]

    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "peft_glue.train", *common, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps_per_epoch = 200
    killed_at = _kill_when_past(process, run_dir / "checkpoints" / "last.ckpt", steps_per_epoch + 20)
    assert steps_per_epoch < killed_at < 2 * steps_per_epoch  # killed in the middle of the second epoch
    assert json.loads((run_dir / "results.json").read_text())["status"] == "running"

    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    assert results["resumed_from"].endswith("last.ckpt")
    assert results["val_history"] == expected["val_history"]
    assert (run_dir / "MRPC.tsv").read_text() == (tmp_path / "reference" / "MRPC.tsv").read_text()
    # the training curves of both attempts are kept: validation of epoch 0 was logged before the kill
    folders = (run_dir, tmp_path / "reference")
    validation = [read_metrics(folder).dropna(subset=["val/accuracy"]) for folder in folders]
    assert list(validation[0]["epoch"]) == list(validation[1]["epoch"]) == [0, 1]
    assert list(validation[0]["val/accuracy"]) == list(validation[1]["val/accuracy"])


def _kill_when_past(process: subprocess.Popen, checkpoint: Path, step: int, timeout: float = 300) -> int:
    """SIGKILL the run as soon as its last checkpoint is past `step`; returns the checkpoint's step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            global_step = torch.load(checkpoint, weights_only=True)["global_step"]
        except Exception:  # not written yet, or caught mid-rename
            global_step = -1
        if global_step > step:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return global_step
        time.sleep(0.02)
    process.kill()
    raise AssertionError("the run ended before it could be killed mid-epoch")


def test_resume_of_a_finished_run_does_nothing(tiny_bert, tiny_glue, tmp_path):
    run = f"hydra.run.dir={tmp_path}/r"
    result = run_cli(*tiny_overrides(tiny_bert, tiny_glue), "trainer.max_epochs=1", run, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    before = (tmp_path / "r" / "results.json").read_text()
    again = run_cli(f"resume={tmp_path / 'r'}", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to resume" in again.stdout + again.stderr
    assert (tmp_path / "r" / "results.json").read_text() == before


def test_resumed_sweep_skips_finished_jobs_and_reruns_the_rest_in_place(tiny_bert, tiny_glue, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [*tiny_overrides(tiny_bert, tiny_glue), "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    result = run_cli("-m", "seed=1,2", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(folder for folder in sweep.iterdir() if folder.is_dir())
    assert len(jobs) == 2
    finished = (jobs[0] / "results.json").read_text()
    interrupted = json.loads((jobs[1] / "results.json").read_text())
    (jobs[1] / "results.json").write_text(json.dumps({**interrupted, "status": "failed"}))

    again = run_cli("-m", f"resume={sweep}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(folder for folder in sweep.iterdir() if folder.is_dir()) == jobs  # no new job folders
    assert (jobs[0] / "results.json").read_text() == finished
    assert f"{jobs[0]} already completed" in again.stdout + again.stderr
    assert json.loads((jobs[1] / "results.json").read_text())["status"] == "completed"


def test_diverging_loss_stops_the_run_with_a_clear_message(tiny_bert, tiny_glue, tmp_path):
    with pytest.raises(UserError, match=r"training loss became (nan|inf).*lower optimizer.lr"):
        trained(["method=full", "optimizer.lr=1e30", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)


def test_predict_writes_the_submission_of_a_finished_run(tiny_bert, tiny_glue, tmp_path):
    run = tmp_path / "run"
    overrides = ["method=lora", "task=sst2", *tiny_overrides(tiny_bert, tiny_glue), f"hydra.run.dir={run}"]
    result = run_cli(*overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    predict_main([f"run={run}", f"out={tmp_path / 'again'}"])
    assert (tmp_path / "again" / "SST-2.tsv").read_text() == (run / "SST-2.tsv").read_text()
    predict_main(
        [f"run={tmp_path / 'run'}", f"input={tiny_glue / 'SST-2' / 'dev.tsv'}", f"out={tmp_path / 'dev'}"]
    )
    lines = (tmp_path / "dev" / "dev.predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 33


def test_submission_false_skips_the_test_set_prediction(tiny_bert, tiny_glue, tmp_path):
    overrides = ["method=lora", "task=sst2", "submission=false", *tiny_overrides(tiny_bert, tiny_glue)]
    _, record = trained(overrides, tmp_path / "run")
    assert record.results.status == "completed" and record.results.predictions is None
    assert not (tmp_path / "run" / "SST-2.tsv").exists()


def test_peak_memory_is_the_jobs_own_not_an_earlier_jobs_in_the_same_process(tiny_bert, tiny_glue, tmp_path):
    """A joblib worker runs job after job: each records its own peak, not the process's lifetime one."""
    block = torch.ones(2**28, dtype=torch.float64)  # 2 GiB, touched: the process's peak rises by it
    del block
    _, record = trained(
        ["method=bitfit", "task=sst2", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / "run"
    )
    assert 0 < record.results.peak_memory_mb < 2048


def test_predict_of_a_folder_that_is_no_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict_main([f"run={tmp_path}"])
    assert exit_info.value.code == 2
    assert "has no .hydra/config.yaml" in capsys.readouterr().err


def test_atomic_writes_leave_the_old_content_when_interrupted(tmp_path):
    target = tmp_path / "results.json"
    write_atomic(target, "old")
    folder = write_folder_atomic(tmp_path / "adapter", lambda f: (f / "w.bin").write_text("old"))

    def crash(folder: Path) -> None:
        (folder / "w.bin").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomic(folder, crash)
    assert (folder / "w.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "results.json"]
    assert target.read_text() == "old"
