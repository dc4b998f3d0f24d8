"""The GLUE table of the report and the submission set collected from a sweep's runs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from peft_glue.report import write_report
from peft_glue.submit import GLUE_SUBMISSION, main
from peft_glue.training.tasks import MNLI, MRPC, QNLI, QQP, RTE, SST2, STSB, WNLI, CoLA

TASKS = {task.name: task for task in (CoLA, SST2, MRPC, STSB, QQP, MNLI, QNLI, RTE, WNLI)}
LORA = {"name": "lora", "lr": 1e-3, "r": 8}


def write_run(
    root: Path, name: str, task: str, seed: int, best: dict, files: bool = True, lr: float = 1e-3
) -> Path:
    """A completed run folder as peft_glue.train leaves it, with its submission files."""
    info = TASKS[task]().info()
    record = {
        "status": "completed", "task": task, "method": LORA, "model": "minilm", "seed": seed,
        "task_info": info, "optimizer": {"lr": lr}, "batch_size": 16, "max_epochs": 3,
        "train_subset": None, "val": {"best": {"epoch": 1, **best}, "last": {"epoch": 2, **best}},
    }  # fmt: skip
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    for file in info["submission_files"] if files else []:
        (folder / file).write_text(f"index\tprediction\n0\t{name}\n")
    return folder


def scores(task: str, seed: int) -> dict:
    """Validation values of a task, different per seed; paired metrics with their derived mean."""
    x = 0.5 + 0.03 * seed + 0.01 * list(TASKS).index(task)
    values = {"cola": {"mcc": x, "accuracy": x + 0.2},
              "stsb": {"pearson": x, "spearman": x + 0.02},
              "mrpc": {"accuracy": x, "f1": x + 0.1}, "qqp": {"accuracy": x, "f1": x + 0.1},
              "mnli": {"accuracy": x, "accuracy_mm": x + 0.04}}.get(task, {"accuracy": x})  # fmt: skip
    for name, parts in TASKS[task].derived.items():
        values[name] = sum(values[p] for p in parts) / len(parts)
    return values


def hand_score(task: str, v: dict) -> float:
    """GLUE's score of a task, written out."""
    if task == "cola":
        return v["mcc"]
    if task == "stsb":
        return (v["pearson"] + v["spearman"]) / 2
    if task in ("mrpc", "qqp"):
        return (v["accuracy"] + v["f1"]) / 2
    if task == "mnli":
        return (v["accuracy"] + v["accuracy_mm"]) / 2
    return v["accuracy"]


def test_glue_table_averages_tasks_as_glue_does(tmp_path):
    for seed in (1, 2):
        for task in TASKS:
            write_run(tmp_path / "sweep", f"{task}_{seed}", task, seed, scores(task, seed))
    report = write_report([tmp_path / "sweep"], tmp_path / "report").read_text()
    glue = report[report.index("## GLUE") :].split("\n## ")[0]
    header, _, row = [line for line in glue.splitlines() if line.startswith("|")]
    cells = dict(zip(header.strip("|").split(" | "), row.strip("|").split(" | "), strict=True))
    per_seed = []
    for seed in (1, 2):
        task_scores = []
        for task in TASKS:
            v = scores(task, seed)
            main_metric = hand_score(task, v)
            task_scores.append(main_metric)
        per_seed.append(100 * np.mean(task_scores))
    expected = f"{np.mean(per_seed):.1f} ± {np.std(per_seed, ddof=1):.1f} (n=2)"
    assert cells["GLUE avg "].strip() == expected
    stsb = [100 * (scores("stsb", s)["pearson"] + scores("stsb", s)["spearman"]) / 2 for s in (1, 2)]
    assert cells["STS-B"].strip() == f"{np.mean(stsb):.1f} ± {np.std(stsb, ddof=1):.1f} (n=2)"
    mm = [100 * scores("mnli", s)["accuracy_mm"] for s in (1, 2)]
    assert cells["MNLI-mm"].strip() == f"{np.mean(mm):.1f} ± {np.std(mm, ddof=1):.1f} (n=2)"


def test_glue_table_takes_each_task_at_its_picked_rate_not_a_pool_of_rates(tmp_path):
    """An lr sweep: SST-2 at 1e-3 (validation 80, 82) and at 1e-2 (50, 52, a collapse). The column shows the
    picked rate's runs only, as the comparison section does; RTE, run at one rate, is unaffected."""
    for seed in (1, 2):
        for lr, acc in ((1e-3, 0.78 + 0.02 * seed), (1e-2, 0.48 + 0.02 * seed)):
            write_run(tmp_path / "sweep", f"sst2_{lr}_{seed}", "sst2", seed, {"accuracy": acc}, lr=lr)
        write_run(tmp_path / "sweep", f"rte_{seed}", "rte", seed, {"accuracy": 0.5 + 0.1 * seed})
    report = write_report([tmp_path / "sweep"], tmp_path / "report").read_text()
    glue = report[report.index("## GLUE") :].split("\n## ")[0]
    header, _, row = [line for line in glue.splitlines() if line.startswith("|")]
    cells = dict(zip(header.strip("|").split(" | "), row.strip("|").split(" | "), strict=True))
    assert cells["SST-2"].strip() == f"81.0 ± {100 * np.std([0.80, 0.82], ddof=1):.1f} (n=2)"
    assert cells["RTE"].strip() == f"65.0 ± {100 * np.std([0.6, 0.7], ddof=1):.1f} (n=2)"


def test_glue_average_needs_every_task(tmp_path):
    for task in ("rte", "stsb"):
        write_run(tmp_path / "sweep", task, task, 1, scores(task, 1))
    report = write_report([tmp_path / "sweep"], tmp_path / "report").read_text()
    assert "– (2/9 tasks)" in report


def test_submit_takes_each_tasks_best_run_and_names_the_missing(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_run(sweep, "rte_low", "rte", 1, {"accuracy": 0.6})
    write_run(sweep, "rte_high", "rte", 2, {"accuracy": 0.7})
    write_run(sweep, "rte_best_but_no_files", "rte", 3, {"accuracy": 0.9}, files=False)
    write_run(sweep, "stsb_a", "stsb", 1, {"pearson_and_spearman": 0.8, "pearson": 0.2, "spearman": 0.2})
    write_run(sweep, "stsb_b", "stsb", 2, {"pearson_and_spearman": 0.7, "pearson": 0.9, "spearman": 0.9})
    write_run(sweep, "mnli", "mnli", 1, {"accuracy": 0.7, "accuracy_mm": 0.7})
    main([str(sweep), "--out", str(tmp_path / "submission")])
    out = capsys.readouterr()
    assert (tmp_path / "submission" / "RTE.tsv").read_text().endswith("\trte_high\n")
    assert (tmp_path / "submission" / "STS-B.tsv").read_text().endswith("\tstsb_a\n")  # by its monitor
    with zipfile.ZipFile(tmp_path / "submission.zip") as zipped:
        assert sorted(zipped.namelist()) == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv", "STS-B.tsv"]
    assert "incomplete: no run gives CoLA.tsv, SST-2.tsv, MRPC.tsv, QQP.tsv, QNLI.tsv, WNLI.tsv" in out.err
    assert "(tasks: cola, mrpc, qnli, qqp, sst2, wnli)" in out.err
    selection = json.loads((tmp_path / "submission" / "selection.json").read_text())
    assert len(selection["files"]) + len(selection["missing"]) == len(GLUE_SUBMISSION) == 11


def test_submit_of_a_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nothing")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
