"""Bad input ends in one line that names the fix and a non-zero exit, never a traceback."""

from __future__ import annotations

import json

import pytest

from peft_glue.errors import UserError
from peft_glue.record import RunRecord
from peft_glue.train import train
from peft_glue.training.config import check_command_line

from .conftest import compose_cfg, run_cli, tiny_overrides


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_unknown_option_from_the_command_line(tmp_path):
    """The whole path a user sees: one line, the options, a non-zero exit, no traceback."""
    assert_one_line_error(
        run_cli("method=prefix", cwd=tmp_path), "unknown method 'prefix'", "bitfit, dora", "prefix_tuning"
    )


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (
            ["task=squad"],
            ["unknown task 'squad'", "cola, file, mnli, mrpc, qnli, qqp, rte, sst2, stsb, wnli"],
        ),
        (
            ["model=gpt5"],
            [
                "unknown model 'gpt5'",
                "bert_base_uncased, bert_large_uncased, deberta_v3_base",
                "minilm, modernbert_base",
            ],
        ),
        (["optimizer.lrr=1"], ["unknown key 'optimizer.lrr'", "check its spelling"]),
        (["-m", "method=lora,dorra"], ["unknown method 'dorra'"]),  # any value of a sweep
    ],
)
def test_unknown_options_and_keys(argv, fragments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    for fragment in fragments:
        assert fragment in error, error


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=lora", "method.r=0"], "method.r=0 is not valid: expected a number >= 1, e.g. method.r=8"),
        (["optimizer.lr=0"], "optimizer.lr=0.0 is not valid: expected a number > 0"),
        (["optimizer.lr=-1e-3"], "optimizer.lr=-0.001 is not valid: expected a number > 0"),
        (["model.name_or_path=/no/such/model"], "model.name_or_path=/no/such/model does not exist"),
    ],
)
def test_bad_values_are_user_errors(tiny_bert, tiny_glue, tmp_path, overrides, message):
    cfg = compose_cfg([*tiny_overrides(tiny_bert, tiny_glue), *overrides], tmp_path)
    with pytest.raises(UserError, match=message):
        train(cfg, RunRecord(tmp_path))


def test_data_dir_without_task_files_from_the_command_line(tiny_bert, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli(f"model.name_or_path={tiny_bert}", f"data.data_dir={tmp_path / 'empty'}", cwd=tmp_path)
    assert_one_line_error(result, "MRPC", "lacks train.tsv", "data.data_dir")
    results = json.loads(next(tmp_path.glob("outputs/runs/*/results.json")).read_text())
    assert results["status"] == "failed" and "lacks train.tsv" in results["error"]


def test_offline_without_data_dir_names_both_fixes(tiny_bert, tmp_path):
    result = run_cli(f"model.name_or_path={tiny_bert}", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(result, "set GLUE_DIR or data.data_dir", "model=minilm")


def test_offline_hub_model_names_the_offline_weights(tmp_path):
    result = run_cli("model=bert_base_uncased", "dry_run=true", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(result, "bert-base-uncased", "model=minilm")


def test_a_failing_job_does_not_stop_the_sweep(tiny_bert, tiny_glue, tmp_path):
    sweep = tmp_path / "sweep"
    """A value that only the data can refute (a validation split larger than the 64 training examples)
    fails its job alone; the multirun lists it and exits non-zero."""
    result = run_cli(
        "-m", "method=bitfit", "data.validation_size=1000,8", "trainer.max_epochs=1",
        *tiny_overrides(tiny_bert, tiny_glue), f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, "1 job(s) failed", "gives 1000 of 64 training examples")
    statuses = [json.loads(p.read_text())["status"] for p in sorted(sweep.glob("*/results.json"))]
    assert statuses == ["failed", "completed"]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("method.r=2,0", "method.r=0 is not valid: expected a number >= 1"),
        ("data.batch_size=8,0", "data.batch_size=0 is not valid: expected a number >= 1"),
        (
            "scheduler.warmup_ratio=0.1,1.0",
            "scheduler.warmup_ratio=1.0 is not valid: expected a number >= 0 and < 1",
        ),
        ("callbacks=early_stopping callbacks.early_stopping.patience=2,-1", "patience=-1 is not valid"),
    ],
)
def test_a_value_out_of_range_anywhere_in_a_sweep_stops_it_before_the_first_job(
    tmp_path, sweep, message, capsys
):
    argv = ["-m", "method=lora", *sweep.split(), f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and message in error, error


@pytest.mark.slow  # 35 s: three command lines, each composing the config
def test_resume_sources_are_checked_before_anything_loads(tiny_bert, tiny_glue, tmp_path):
    """A wrong resume= is one line that names the path, before any model or data is loaded (the default
    model, bert-base-uncased, cannot even be downloaded here: its error would be the wrong one)."""
    missing = tmp_path / "no_such_run"
    assert_one_line_error(run_cli(f"resume={missing}", cwd=tmp_path), f"resume={missing}", "no such file")
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint\n")
    assert_one_line_error(
        run_cli(f"resume={not_a_checkpoint}", cwd=tmp_path),
        str(not_a_checkpoint),
        "not a Lightning checkpoint",
    )
    plain_folder = tmp_path / "plain"
    plain_folder.mkdir()
    assert_one_line_error(run_cli(f"resume={plain_folder}", cwd=tmp_path), "neither a run folder")

    run_dir = tmp_path / "bitfit_run"
    overrides = [*tiny_overrides(tiny_bert, tiny_glue), "trainer.max_epochs=1"]
    done = run_cli("method=bitfit", *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    other = run_cli(
        "method=lora", f"resume={ckpt}", *overrides, "model.name_or_path=/never/loaded", cwd=tmp_path
    )
    assert_one_line_error(other, str(ckpt), "method=bitfit, not method=lora")


def test_a_malformed_row_stops_the_run_naming_file_and_line(tiny_bert, tiny_glue, tmp_path):
    """A row with a missing field would train on whatever filled the gap: it is one line, nothing trains."""
    glue = tmp_path / "glue"
    (glue / "SST-2").mkdir(parents=True)
    for name in ("dev", "test"):
        (glue / "SST-2" / f"{name}.tsv").write_bytes((tiny_glue / "SST-2" / f"{name}.tsv").read_bytes())
    rows = (tiny_glue / "SST-2" / "train.tsv").read_text().splitlines()
    rows.insert(5, "a sentence whose label went missing")
    (glue / "SST-2" / "train.tsv").write_text("\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    result = run_cli("task=sst2", *tiny_overrides(tiny_bert, glue), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_one_line_error(
        result, str(glue / "SST-2" / "train.tsv"), "line 6", "too few", "'a sentence whose label went missi"
    )
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"
    assert not (run_dir / "checkpoints").exists()  # nothing trained
