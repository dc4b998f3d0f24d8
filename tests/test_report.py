"""peft_glue.report on synthetic run folders: known metrics in, known tables, CSV rows and plots out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from peft_glue.report import main, write_report
from peft_glue.results.formatting import markdown_table, mean_std
from peft_glue.results.runs import load_runs, read_metrics
from peft_glue.training.methods import BitFit, Full, LoRA
from peft_glue.training.tasks import MRPC, SST2

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASKS = {task.name: task for task in (MRPC, SST2)}
METHODS = {method.name: method for method in (Full, BitFit, LoRA)}
LORA = {"name": "lora", "lr": 1e-3, "r": 8, "alpha": 8, "dropout": 0.0, "target_modules": ["query"]}


def write_run(
    root: Path,
    name: str,
    *,
    status: str = "completed",
    task: str = "mrpc",
    method: dict | None = None,
    seed: int = 1,
    acc: float | None = 0.8,
    f1: float | None = 0.85,
    lr: float | None = None,
    batch_size: int = 16,
    params: int = 37_634,
    metrics: bool = False,
    **extra,
) -> Path:
    """A run folder as peft_glue.train leaves it; ``acc``/``f1`` are the best epoch, last is 0.01 lower."""
    method = dict(method or LORA)
    record = {"status": status, "task": task, "method": method, "model": "minilm", "seed": seed}
    if status != "failed":
        record.update(
            task_info=TASKS[task]().info(),
            method_info=METHODS[method["name"]].info(),
            optimizer={"lr": lr or method["lr"], "weight_decay": 0.01},
            batch_size=batch_size,
            train_subset=None,
            max_epochs=5,
            trainable_params=params,
            total_params=22_751_620,
            trainable_percent=round(100 * params / 22_751_620, 4),
        )
    if status == "completed":
        best = {"epoch": 1, "step": 80, "accuracy": acc}
        last = {"epoch": 2, "step": 120, "accuracy": acc - 0.01}
        if f1 is not None:
            best["f1"], last["f1"] = f1, f1 - 0.01
            # MRPC's monitor since the GLUE tasks came: the mean of accuracy and F1
            best["acc_and_f1"], last["acc_and_f1"] = (acc + f1) / 2, (acc + f1) / 2 - 0.01
        record.update(val={"best": best, "last": last}, val_history=[best, last], test=None)
    record.update(extra)
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    if metrics:
        (folder / "metrics.csv").write_text(
            "epoch,lr-AdamW/pg1,step,train/loss,val/accuracy,val/f1,val/acc_and_f1,val/loss\n"
            ",0.001,9,,,,,\n0,,9,0.69,,,,\n0,,19,0.62,,,,\n0,,19,,0.70,0.80,0.75,0.6\n"
            "1,,29,0.55,,,,\n1,,39,0.41,,,,\n1,,39,,0.78,0.84,0.81,0.5\n"
        )
    return folder


def section(report: str, title: str) -> str:
    """The text of one `## title` section of report.md."""
    start = report.index(f"## {title}")
    end = report.find("\n## ", start + 1)
    return report[start : end if end > 0 else None]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text``, header and rule excluded."""
    rows = [
        [cell.strip() for cell in line.strip("| ").split(" | ")]
        for line in text.splitlines()
        if line[:2] == "| "
    ]
    return [row for i, row in enumerate(rows) if i > 0 and set(row) != {"---"}]


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A method comparison: LoRA on MRPC with 3 seeds, full with 2, BitFit on SST-2 with 1, and problems."""
    root = tmp_path / "sweep"
    for seed, acc in zip((1, 2, 3), (0.80, 0.82, 0.84), strict=True):
        write_run(root, f"{seed - 1}_method=lora", seed=seed, acc=acc, f1=acc + 0.05, metrics=True)
    write_run(root, "3_method=full", method={"name": "full", "lr": 2e-5}, seed=1, acc=0.86, f1=0.90,
              params=22_713_986)  # fmt: skip
    write_run(root, "4_method=full", method={"name": "full", "lr": 2e-5}, seed=2, acc=0.88, f1=0.90,
              params=22_713_986)  # fmt: skip
    write_run(root, "5_method=bitfit,task=sst2", task="sst2", method={"name": "bitfit", "lr": 1e-3}, acc=0.9,
              f1=None, params=52_226)  # fmt: skip
    write_run(
        root, "6_method=lora,task=sst2", status="failed", task="sst2", error="ValueError: CUDA out of memory"
    )
    write_run(root, "7_method=lora,task=sst2", status="running", task="sst2", seed=2)
    return root


def test_runs_differing_only_by_seed_aggregate_to_mean_std_n(sweep):
    report = write_report([sweep], sweep / "report").read_text()
    rows = {(row[0], row[1]): row for row in table_rows(section(report, "Methods × tasks"))}
    assert set(rows) == {("mrpc", "full"), ("mrpc", "lora"), ("sst2", "bitfit")}
    header = next(line for line in section(report, "Methods × tasks").splitlines() if line.startswith("| "))
    assert header.startswith("| task | method | lr | trainable params | % of model | acc (best) |")
    lora = rows[("mrpc", "lora")]
    # best 0.80/0.82/0.84 -> 82.0 ± 2.0 (sample std); last is 0.01 lower; F1 = acc + 0.05
    assert "82.0 ± 2.0 (n=3)" in lora and "81.0 ± 2.0 (n=3)" in lora and "87.0 ± 2.0 (n=3)" in lora
    assert "37,634" in lora and "0.1654" in lora
    assert "87.0 ± 1.4 (n=2)" in rows[("mrpc", "full")]
    bitfit = rows[("sst2", "bitfit")]
    assert "90.0 (n=1)" in bitfit and bitfit[-1] == "–"  # SST-2 has no F1
    # full fine-tuning is listed before LoRA within a task
    order = [row[1] for row in table_rows(section(report, "Methods × tasks"))]
    assert order.index("full") < order.index("lora")


def test_a_different_setting_is_a_different_configuration(tmp_path):
    write_run(tmp_path, "a", seed=1, acc=0.80, batch_size=16)
    write_run(tmp_path, "b", seed=2, acc=0.90, batch_size=32)
    report = write_report([tmp_path], tmp_path / "report").read_text()
    rows = table_rows(section(report, "Methods × tasks"))
    assert len(rows) == 2
    assert {row[3] for row in rows} == {"16", "32"}  # batch_size becomes a column because it varies
    assert any("80.0 (n=1)" in row for row in rows) and any("90.0 (n=1)" in row for row in rows)


def test_failed_and_running_runs_are_listed_not_dropped(sweep):
    report = write_report([sweep], sweep / "report").read_text()
    problems = section(report, "Failed and unfinished runs")
    failed = problems.split("### Unfinished")[0]
    assert "6_method=lora,task=sst2" in failed and "ValueError: CUDA out of memory" in failed
    unfinished = problems.split("### Unfinished")[1]
    assert "7_method=lora,task=sst2" in unfinished and "6_method" not in unfinished
    assert "8 runs from" in report and "6 completed, 1 failed, 1 running" in report
    # neither appears in the SST-2 results
    assert [row[1] for row in table_rows(section(report, "Methods × tasks")) if row[0] == "sst2"] == [
        "bitfit"
    ]


def test_results_csv_has_one_flattened_row_per_run(sweep):
    write_report([sweep], sweep / "report")
    csv = pd.read_csv(sweep / "report" / "results.csv")
    assert len(csv) == 8
    assert csv["status"].value_counts().to_dict() == {"completed": 6, "failed": 1, "running": 1}
    lora = csv[(csv["method.name"] == "lora") & (csv["status"] == "completed")].sort_values("seed")
    assert lora["val.best.accuracy"].tolist() == [0.80, 0.82, 0.84]
    assert lora["method.r"].tolist() == [8, 8, 8] and lora["optimizer.lr"].tolist() == [1e-3] * 3
    assert lora["config"].nunique() == 1  # same configuration id across seeds
    failed = csv[csv["status"] == "failed"].iloc[0]
    assert failed["error"] == "ValueError: CUDA out of memory" and pd.isna(failed["val.best.accuracy"])
    assert failed["lr"] == 1e-3  # the method's default, as the config would have used


def test_rank_sweep_table_and_plot(tmp_path):
    params = {1: 19_970, 4: 75_266, 16: 296_450}
    for r, acc in ((16, 0.84), (1, 0.80), (4, 0.82)):
        for seed in (1, 2):
            method = {**LORA, "r": r}
            write_run(
                tmp_path, f"r{r}_s{seed}", method=method, seed=seed, acc=acc + seed / 100, params=params[r]
            )
    report = write_report([tmp_path], tmp_path / "report").read_text()
    rows = table_rows(section(report, "LoRA rank sweep"))
    assert [row[1] for row in rows] == ["1", "4", "16"]
    assert [row[3] for row in rows] == ["19,970", "75,266", "296,450"]
    assert "81.5 ± 0.7 (n=2)" in rows[0] and "85.5 ± 0.7 (n=2)" in rows[2]
    assert is_png(tmp_path / "report" / "rank_sweep_mrpc.png")
    assert "](rank_sweep_mrpc.png)" in report
    assert "lora r=1" in section(report, "Methods × tasks")  # r varies, so it names the configuration


def test_lr_sweep_is_a_method_by_lr_table_with_a_plot(tmp_path):
    for lr, acc in ((1e-4, 0.70), (1e-3, 0.80)):
        for seed in (1, 2, 3):
            write_run(tmp_path, f"lora_{lr}_{seed}", seed=seed, lr=lr, acc=acc)
    for lr in (1e-5, 2e-5):
        write_run(tmp_path, f"full_{lr}", method={"name": "full", "lr": 2e-5}, lr=lr, acc=0.9)
    report = write_report([tmp_path], tmp_path / "report").read_text()
    lr_section = section(report, "Learning-rate sweep")
    header = next(line for line in lr_section.splitlines() if line.startswith("| method"))
    assert header == "| method | lr=1e-05 | lr=2e-05 | lr=0.0001 | lr=0.001 |"
    rows = {row[0]: row[1:] for row in table_rows(lr_section)}
    # MRPC's monitor, the mean of accuracy and F1 (0.85)
    assert rows["lora"] == ["–", "–", "77.5 ± 0.0 (n=3)", "82.5 ± 0.0 (n=3)"]
    assert rows["full"] == ["87.5 (n=1)", "87.5 (n=1)", "–", "–"]
    assert is_png(tmp_path / "report" / "lr_sweep_mrpc.png")


def test_training_curves_come_from_metrics_csv(sweep):
    report = write_report([sweep], sweep / "report").read_text()
    assert is_png(sweep / "report" / "curves_mrpc.png") and is_png(sweep / "report" / "loss_mrpc.png")
    curves = section(report, "Training curves")
    assert "](curves_mrpc.png)" in curves and "](loss_mrpc.png)" in curves
    # no SST-2 run has a metrics.csv: the plot is skipped with a note
    assert not (sweep / "report" / "curves_sst2.png").exists()
    assert "sst2: no `metrics.csv` with logged metrics; plot skipped." in curves


def test_metrics_of_a_resumed_run_keep_the_last_row_of_each_step(tmp_path):
    # attempt 1 logged steps 0-5 (and validation at 4), was killed, resumed from step 3 and logged 3-7
    rows = ["epoch,step,train/loss,val/accuracy"]
    rows += [f"0,{step},{1.0 - step / 10}," for step in range(6)] + ["0,4,,0.5"]
    rows += [f"0,{step},{0.5 - step / 10}," for step in range(3, 8)] + ["0,4,,0.6"]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    metrics = read_metrics(tmp_path)
    loss = metrics.dropna(subset=["train/loss"])
    assert list(loss["step"]) == list(range(8))
    assert list(loss["train/loss"]) == pytest.approx([1.0, 0.9, 0.8, 0.2, 0.1, 0.0, -0.1, -0.2])
    assert list(metrics.dropna(subset=["val/accuracy"])["val/accuracy"]) == [0.6]


def test_dry_runs_alone_give_params_only_and_skip_every_plot(tmp_path):
    for r, params in ((1, 19_970), (4, 75_266)):
        for seed in (1, 2):
            write_run(
                tmp_path,
                f"dry_r{r}_{seed}",
                status="dry_run",
                method={**LORA, "r": r},
                seed=seed,
                params=params,
            )
    report = write_report([tmp_path], tmp_path / "report").read_text()
    assert list((tmp_path / "report").glob("*.png")) == []
    assert "No completed runs." in report
    assert "None here of: LoRA rank (`method.r`)" in section(report, "Method sweeps")  # only dry runs
    assert "plot skipped" in section(report, "Learning-rate sweep")
    assert "plots skipped" in section(report, "Training curves")
    dry = table_rows(section(report, "Dry runs (parameter counts only, no training)"))
    assert [(row[1], row[3], row[-1]) for row in dry] == [
        ("lora r=1", "19,970", "2"),
        ("lora r=4", "75,266", "2"),
    ]


def test_mean_std_and_markdown_cells():
    assert mean_std([0.5, 0.7]) == "60.0 ± 14.1 (n=2)"
    assert mean_std([0.5, float("nan")]) == "50.0 (n=1)"
    assert mean_std([]) == "–"
    table = markdown_table(pd.DataFrame({"a": ["x|y"], "b": [1.5]}))
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | 1.5 |"]


def test_cli_default_out_and_missing_path(sweep, tmp_path, capsys):
    main([str(sweep)])
    assert (sweep / "report" / "report.md").is_file() and (sweep / "report" / "results.csv").is_file()
    assert "| ASO ε A>B | ASO ε B>A |" in (sweep / "report" / "report.md").read_text()
    main([str(sweep), "--out", str(tmp_path / "quick"), "--aso-iterations", "0"])  # the test left out
    assert "ASO" not in (tmp_path / "quick" / "report.md").read_text()
    # a second report must not pick up anything from the first one's folder
    assert len(load_runs([sweep])) == 8
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        main([str(empty)])
    assert "no results.json found" in capsys.readouterr().err


def test_methods_table_shows_the_test_split_and_the_cost_of_each_configuration(tmp_path):
    """With validation carved from train, the table carries the test split's value (GLUE dev, scored once)
    and what each configuration cost: train samples/s and peak memory, the mean over its seeds."""
    values = [(1, 0.70, 41.25, 1800.0), (2, 0.74, 38.75, 1900.0), (3, 0.78, 40.0, 2000.5)]
    for seed, test_acc, speed, memory in values:
        test = {"accuracy": test_acc, "f1": test_acc + 0.1, "acc_and_f1": test_acc + 0.05, "loss": 0.5}
        write_run(tmp_path, f"lora_{seed}", seed=seed, test=test, train_samples_per_second=speed,
                  peak_memory_mb=memory)  # fmt: skip
    report = write_report([tmp_path], tmp_path / "report").read_text()
    text = section(report, "Methods × tasks")
    header = next(line for line in text.splitlines() if line.startswith("| "))
    titles = [cell.strip() for cell in header.strip("| ").split(" | ")]
    (row,) = table_rows(text)
    cells = dict(zip(titles, row, strict=True))
    accs = pd.Series([v[1] for v in values]) * 100
    assert cells["acc (test)"] == f"{accs.mean():.1f} ± {accs.std():.1f} (n=3)"  # 74.0 ± 4.0
    assert cells["F1 (test)"] == f"{accs.mean() + 10:.1f} ± {accs.std():.1f} (n=3)"
    assert cells["acc (best)"] == "80.0 ± 0.0 (n=3)"  # validation is still there, apart
    assert cells["train samples/s"] == "40.0" and cells["peak memory (MB)"] == "1,900"
    assert "loss (test)" not in titles


def test_declared_sweeps_the_runs_do_not_hold_are_one_line_not_a_section_each(sweep):
    report = write_report([sweep], sweep / "report").read_text()
    assert "## LoRA rank sweep" not in report  # every LoRA run has r=8
    assert "None here of: LoRA rank (`method.r`)" in section(report, "Method sweeps")


def test_a_report_remade_from_its_results_csv_has_the_same_tables(sweep, tmp_path):
    """The docs keep a report's results.csv, not the run folders: a report remade from that table alone must
    carry every table of the first one (the per-epoch curves need the folders' metrics.csv and go)."""
    first = write_report([sweep], tmp_path / "first", aso_iterations=0).read_text()
    again = write_report([tmp_path / "first" / "results.csv"], tmp_path / "again", aso_iterations=0)
    remade = again.read_text()
    for title in ("Methods × tasks", "GLUE", "Comparisons", "Failed and unfinished runs"):
        assert table_rows(section(remade, title)) == table_rows(section(first, title))
    assert table_rows(remade) == table_rows(first)
    records = load_runs([tmp_path / "first" / "results.csv"])["_identity"].tolist()
    assert records == load_runs([sweep])["_identity"].tolist()  # lists (target_modules) are lists again
    columns = pd.read_csv(tmp_path / "first" / "results.csv").columns
    remade_csv = pd.read_csv(again.parent / "results.csv")
    pd.testing.assert_frame_equal(remade_csv[columns], pd.read_csv(tmp_path / "first" / "results.csv"))


def test_two_checkpoints_run_under_one_model_option_are_two_models(tmp_path):
    """``model.name_or_path=`` replaces the option's checkpoint: the report tells them apart by its name."""
    write_run(tmp_path, "a", overrides=["method=lora", "model.name_or_path=/tmp/families/tiny_roberta/"])
    write_run(tmp_path, "b", overrides=["method=lora", "model.name_or_path='/tmp/families/tiny deberta'"])
    write_run(tmp_path, "c", overrides=["method=lora"])
    runs = load_runs([tmp_path])
    assert sorted(runs["model"]) == ["minilm", "tiny_deberta", "tiny_roberta"]
    assert runs["config"].nunique() == 3
