"""A dataset of one's own as a yaml task (training/file_task.py): written by the test into a config dir,
trained a few steps, predicted and reported, its metrics recomputed from the predictions; every bad file."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from peft_glue.errors import UserError
from peft_glue.predict import predict
from peft_glue.record import RunRecord, read_results
from peft_glue.report import write_report
from peft_glue.results.runs import read_metrics
from peft_glue.submit import best_runs
from peft_glue.train import train
from peft_glue.training.data import GlueDataModule, read_glue_tsv
from peft_glue.training.file_task import FileTask
from peft_glue.training.tasks import SST2

from .conftest import FILLER, NEGATIVE, POSITIVE, compose_cfg, shared_glue

TARGET = "peft_glue.training.file_task.FileTask"
NEUTRAL = ["film", "story", "plot", "movie", "very", "quite"]


def text(rng: random.Random, words: list[str]) -> str:
    """Mostly words of one kind: the tiny BERT learns to tell them apart in a couple of epochs."""
    return " ".join(rng.choice(words if rng.random() < 0.9 else FILLER) for _ in range(3 + rng.randrange(6)))


def write_task_yaml(config_dir: Path, name: str, **fields) -> Path:
    """conf/task/<name>.yaml in a user's config folder (what ``--config-dir`` points at)."""
    path = config_dir / "task" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"_target_": TARGET, "name": name, **fields}, sort_keys=False))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def three_class_rows(n: int, seed: int) -> list[dict]:
    """Reviews with commas and quotes inside (quoted CSV fields), three classes."""
    rng = random.Random(seed)
    words = {"bad": NEGATIVE, "ok": NEUTRAL, "great": POSITIVE}
    rows = []
    for i in range(n):
        stars = ["bad", "ok", "great"][i % 3]
        rows.append({"review": f'{text(rng, words[stars])}, "{rng.choice(FILLER)}", and', "stars": stars})
    return rows


def own_run(tiny_bert: Path, config_dir: Path, run_dir: Path, task: str, *extra: str, method: str = "full"):
    """``python -m peft_glue.train --config-dir CONFIG_DIR task=<task> ...``, in-process, two short epochs;
    the best epoch is exported (checkpointing on), so its metrics are those of the predictions."""
    overrides = [
        f"task={task}",
        f"method={method}",
        f"model.name_or_path={tiny_bert}",
        "data.batch_size=8",
        "optimizer.lr=1e-2",
        "trainer.max_epochs=2",
        "trainer.precision=32-true",  # predict runs in 32-bit: the same predictions as the run's
        "trainer.enable_progress_bar=false",
        f"hydra.searchpath=[file://{config_dir}]",
        *extra,
    ]
    cfg = compose_cfg(overrides, run_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(_plain(cfg)))
    train(cfg, RunRecord(run_dir, task=task, method={"name": method}, model="tiny", seed=42))
    results = read_results(run_dir)
    assert results.status == "completed", results.error
    return results


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)  # as Hydra's config.yaml
    values.pop("hydra")
    return values


def read_predictions(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file, delimiter="\t" if path.suffix == ".tsv" else ","))


def macro_f1_and_mcc(truth: np.ndarray, predicted: np.ndarray, k: int) -> tuple[float, float]:
    """By hand from the confusion matrix: the mean F1 over classes, and Gorodkin's multi-class MCC."""
    confusion = np.zeros((k, k))
    np.add.at(confusion, (truth, predicted), 1)
    tp = np.diag(confusion)
    f1 = [2 * tp[c] / (confusion[c].sum() + confusion[:, c].sum()) if tp[c] else 0.0 for c in range(k)]
    n, correct = confusion.sum(), tp.sum()
    rows, cols = confusion.sum(1), confusion.sum(0)
    denominator = np.sqrt((n**2 - cols @ cols) * (n**2 - rows @ rows))
    mcc = (correct * n - rows @ cols) / denominator if denominator else 0.0  # one class predicted: 0
    return float(np.mean(f1)), float(mcc)


# ---------------------------------------------------------------------------------------------- three tasks
@pytest.fixture(scope="module")
def reviews(tiny_bert, tmp_path_factory) -> tuple[Path, Path]:
    """A three-class CSV task (labels inferred) with a labelled test file: (its data folder, its run)."""
    root = tmp_path_factory.mktemp("reviews")
    for split, n, seed in (("train", 48, 0), ("dev", 12, 1), ("test", 15, 2)):
        write_csv(root / f"{split}.csv", three_class_rows(n, seed))
    write_task_yaml(
        root / "conf", "reviews", train=str(root / "train.csv"), validation=str(root / "dev.csv"),
        test=str(root / "test.csv"), text="review", label="stars", labels=None,  # inferred, sorted
        metrics=["accuracy", "f1_macro", "mcc"], monitor="f1_macro",
    )  # fmt: skip
    own_run(tiny_bert, root / "conf", root / "run", "reviews")
    return root, root / "run"


def similar_rows(rng: random.Random, n: int, labelled: bool = True) -> str:
    """Sentence pairs scored by sameness, negative scores included (JSON Lines)."""
    lines = []
    for i in range(n):
        first = text(rng, POSITIVE + NEGATIVE)
        second = first if i % 3 == 0 else text(rng, POSITIVE + NEGATIVE)
        score = {"score": round(2.0 - (i % 3) * 2.1, 2)} if labelled else {}
        lines.append(json.dumps({"a": first, "b": second, **score}))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def similar(tiny_bert, tmp_path_factory) -> tuple[Path, Path]:
    """A pair-regression JSON Lines task without a test file: data.test_size carves one."""
    root = tmp_path_factory.mktemp("similar")
    rng = random.Random(3)
    for name, n, labelled in (("train", 36, True), ("dev", 12, True), ("new", 5, False)):
        (root / f"{name}.jsonl").write_text(similar_rows(rng, n, labelled))
    write_task_yaml(
        root / "conf", "similar", train=str(root / "train.jsonl"), validation=str(root / "dev.jsonl"),
        text=["a", "b"], label="score", labels="regression", metrics=["pearson", "spearman"],
        derived={"pearson_and_spearman": ["pearson", "spearman"]}, monitor="pearson_and_spearman",
    )  # fmt: skip
    own_run(tiny_bert, root / "conf", root / "run", "similar", "data.test_size=9", method="lora")
    return root, root / "run"


def rare_rows(rng: random.Random, n: int, labelled: bool = True) -> str:
    """One example in five positive (TSV with an id column)."""
    lines = ["id\ttext" + ("\tlabel" if labelled else "")]
    for i in range(n):
        label = "pos" if i % 5 == 0 else "neg"
        lines.append(
            f"r{i}\t{text(rng, POSITIVE if label == 'pos' else NEGATIVE)}"
            + (f"\t{label}" if labelled else "")
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def rare(tiny_bert, tmp_path_factory) -> tuple[Path, Path]:
    """An imbalanced binary TSV task with class weights and an unlabelled test file."""
    root = tmp_path_factory.mktemp("rare")
    rng = random.Random(4)
    for name, n, labelled in (("train", 40, True), ("dev", 15, True), ("test", 7, False)):
        (root / f"{name}.tsv").write_text(rare_rows(rng, n, labelled))
    write_task_yaml(
        root / "conf", "rare", train=str(root / "train.tsv"), validation=str(root / "dev.tsv"),
        test=str(root / "test.tsv"), text="text", labels=["neg", "pos"], id_column="id",
        metrics=["accuracy", "f1", "f1_macro"], monitor="f1_macro", class_weights=True,
    )  # fmt: skip
    own_run(tiny_bert, root / "conf", root / "run", "rare")
    return root, root / "run"


def test_three_class_csv_task_metrics_from_its_predictions(reviews, tmp_path):
    data, run = reviews
    results = read_results(run)
    assert results.task_info.labels == ["bad", "great", "ok"]  # inferred from train, sorted
    assert results.splits.sizes == {"train": 48, "validation": 12, "test": 15}
    assert (results.splits.validation_from, results.splits.test_from) == ("validation_file", "test_file")
    (data / "train.csv").rename(data / "moved.csv")  # the labels were inferred: the run's are kept
    try:
        written = predict(run, input_tsv=data / "test.csv", out_dir=tmp_path)
    finally:
        (data / "moved.csv").rename(data / "train.csv")
    assert [p.name for p in written] == ["test.predictions.csv"]
    rows = read_predictions(written[0])
    assert [row["review"] for row in rows] == [row["review"] for row in three_class_rows(15, 2)]  # quotes
    names = results.task_info.labels
    truth = np.array([names.index(row["stars"]) for row in rows])
    predicted = np.array([names.index(row["prediction"]) for row in rows])
    f1, mcc = macro_f1_and_mcc(truth, predicted, 3)
    assert results.test["accuracy"] == pytest.approx(float(np.mean(truth == predicted)), abs=1e-6)
    assert results.test["f1_macro"] == pytest.approx(f1, abs=1e-6)
    assert results.test["mcc"] == pytest.approx(mcc, abs=1e-6)
    config_json = json.loads((run / "model" / "config.json").read_text())
    assert config_json["id2label"] == {"0": "bad", "1": "great", "2": "ok"}


def test_pair_regression_jsonl_task_is_compared_on_a_carved_test_split(similar, tmp_path):
    data, run = similar
    results = read_results(run)
    assert results.splits.test_from == "train" and results.splits.sizes == {
        "train": 27,
        "validation": 12,
        "test": 9,
    }
    # the carved test split (negative scores are labels: NaN marks a missing one): scored, not predicted
    assert {"pearson", "pearson_and_spearman"} <= results.test.keys() and results.predictions is None
    # the validation file predicted again: the run's best-epoch metrics from the written scores
    predicted = read_predictions(predict(run, input_tsv=data / "dev.jsonl", out_dir=tmp_path)[0])
    truth = [float(row["score"]) for row in predicted]
    scores = [float(row["prediction"]) for row in predicted]
    assert results.best["pearson"] == pytest.approx(stats.pearsonr(truth, scores)[0], abs=1e-4)
    assert results.best["spearman"] == pytest.approx(stats.spearmanr(truth, scores)[0], abs=1e-4)
    new = read_predictions(predict(run, input_tsv=data / "new.jsonl", out_dir=tmp_path)[0])
    assert [set(row) for row in new] == [{"a", "b", "prediction"}] * 5  # beside each pair, no label


def test_imbalanced_binary_tsv_task_metrics_from_its_predictions(rare, tmp_path):
    data, run = rare
    results = read_results(run)
    # the unlabelled test file: predicted by the run, each prediction beside its row's id
    test_rows = read_predictions(run / "rare.predictions.tsv")
    assert [row["id"] for row in test_rows] == [f"r{i}" for i in range(7)]
    assert {row["prediction"] for row in test_rows} <= {"neg", "pos"}
    dev = read_predictions(predict(run, input_tsv=data / "dev.tsv", out_dir=tmp_path)[0])
    truth = np.array([row["label"] == "pos" for row in dev])
    predicted = np.array([row["prediction"] == "pos" for row in dev])
    tp, fp, fn = (truth & predicted).sum(), (~truth & predicted).sum(), (truth & ~predicted).sum()
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    assert results.best["accuracy"] == pytest.approx(float(np.mean(truth == predicted)), abs=1e-6)
    assert results.best["f1"] == pytest.approx(f1, abs=1e-6)
    macro = macro_f1_and_mcc(truth.astype(int), predicted.astype(int), 2)[0]
    assert results.best["f1_macro"] == pytest.approx(macro, abs=1e-6)


def test_report_and_model_cards_of_the_three_tasks(reviews, similar, rare, tmp_path):
    runs = [reviews[1], similar[1], rare[1]]
    report = write_report(runs, tmp_path / "report", aso_iterations=0).read_text()
    assert "in % on the test split (the task's test file)" in report
    for run, metric in zip(runs, ["f1_macro", "pearson", "f1_macro"], strict=True):
        results = read_results(run)
        value = (results.test or results.best)[metric]  # rare's test file is unlabelled: validation
        assert (
            f"| {results.task} | {results.method_name} |" in report and f"{100 * value:.1f} (n=1)" in report
        )
        card = next(run.glob("*/README.md")).read_text()
        assert "a dataset of one's own" in card and "nyu-mll/glue" not in card and results.task in card
        files = results.provenance.data  # the task's own files fingerprinted, not GLUE's
        assert files and all(hashlib.sha256(Path(f).read_bytes()).hexdigest() == h for f, h in files.items())


def test_class_weights_are_balanced_and_weight_the_loss(tmp_path):
    (tmp_path / "train.tsv").write_text(
        "text\tlabel\n" + "".join(f"good\t{i % 4 == 0:d}\n" for i in range(40))
    )
    task = FileTask(train=str(tmp_path / "train.tsv"), text="text", labels=["0", "1"], monitor="accuracy",
                    class_weights=True)  # fmt: skip
    assert torch.allclose(task.class_weight, torch.tensor([40 / (2 * 30), 40 / (2 * 10)]))
    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor([2 / 3, 2.0]))
    assert torch.allclose(task.loss(logits, labels), expected)
    unweighted = FileTask(
        train=str(tmp_path / "train.tsv"), text="text", labels=["0", "1"], monitor="accuracy"
    )
    assert torch.equal(unweighted.loss(logits, labels), torch.nn.functional.cross_entropy(logits, labels))


def test_sst2_files_as_a_yaml_task_read_exactly_as_task_sst2(tiny_glue, tiny_bert, tmp_path):
    """The same rows, targets and ids as the SST2 class, so the same seed gives the same numbers."""
    folder = tiny_glue / "SST-2"
    task = FileTask(
        name="sst2_files", train=str(folder / "train.tsv"), validation=str(folder / "dev.tsv"),
        test=str(folder / "test.tsv"), text="sentence", monitor="accuracy",
    )  # fmt: skip
    assert task.label_names == SST2.label_names and task.num_labels == 2
    own = task.read_splits()
    for split, name in (("train", "train"), ("validation", "dev"), ("test", "test")):
        glue = read_glue_tsv(folder / f"{name}.tsv", SST2())
        assert own[split].to_dict() == glue.to_dict(), split


def test_a_run_of_ones_own_task_is_never_a_glue_submission(tmp_path):
    """Even named like a GLUE task and holding a file of GLUE's name, it is not GLUE's test set."""
    info = {"dataset": {"train": "mine.csv"}, "submission_files": ["SST-2.tsv"], "monitor": "accuracy"}
    results = {"status": "completed", "task": "sst2", "task_info": info, "val": {"best": {"accuracy": 0.9}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "SST-2.tsv").write_text("index\tprediction\n0\t1\n")
    with pytest.raises(UserError, match="no completed run with submission files"):
        best_runs([tmp_path])


# ---------------------------------------------------------------------------------------------- bad files
def own_task(path: Path, **fields) -> FileTask:
    defaults = {"train": str(path), "text": "review", "label": "stars", "labels": ["bad", "good"]}
    return FileTask(**{**defaults, "monitor": "accuracy", **fields})


@pytest.mark.parametrize(("name", "content", "message"), [
    ("a.csv", "review,score\ngood,bad\n", r"a.csv lacks the column\(s\) stars .*it has: review, score"),
    ("a.csv", 'review,stars\ngood,good\n"bad, bad",bda\n', r"a.csv line 3: label 'bda' is not bad or good"),
    ("a.tsv", "review\tstars\ngood\tgood\nbad\tbad\textra\n", r"a.tsv is not a well-formed TSV: line 3 has"),
    ("a.csv", "review,stars\ngood,good\n,bad\n", r"a.csv line 3: 'review' is empty"),
    ("a.csv", "review,stars\ngood,good\nbad,bad,extra\n", r"a.csv is not a well-formed CSV .*line 3"),
    ("a.jsonl", '{"review": "good", "stars": "good"}\n{"review": "bad"}\n', r"a.jsonl line 2: label ''"),
    ("a.jsonl", '{"review": "good", "stars": "good"}\n{"text": "bad", "stars": "bad"}\n', r"2: 'review' is"),
    ("a.jsonl", '{"review": "good", "stars": "good"\n', r"a.jsonl is not well-formed JSON Lines"),
    ("a.txt", "review,stars\n", r"a.txt: a file of type '.txt'; give a .csv, .tsv or .jsonl file"),
])  # fmt: skip
def test_bad_files_are_one_line_naming_file_line_and_value(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message) as error:
        own_task(path).read_splits()
    assert "\n" not in str(error.value)


def test_quoted_commas_quotes_and_line_breaks_in_a_csv_are_read_verbatim(tmp_path):
    rows = [{"review": 'good, "very" good', "stars": "good"}, {"review": "bad,\nbad", "stars": "bad"}]
    data = own_task(write_csv(tmp_path / "a.csv", rows)).read_splits()["train"]
    assert data["sentence1"] == ['good, "very" good', "bad,\nbad"] and data["label"] == [1, 0]


@pytest.mark.parametrize(("fields", "message"), [
    ({"train": None}, r"task.train is not set"),
    ({"text": ["a", "b", "c"]}, r"task.text=\['a', 'b', 'c'\]: name one text column, or the two"),
    ({"labels": ["bad", "ok", "good"], "metrics": ["f1"]}, r"f1 is binary .* 3 classes; use f1_macro"),
    ({"metrics": ["pearson"]}, r"task.metrics: pearson is not a metric of this task"),
    ({"monitor": "mcc"}, r"task.monitor=mcc is not a metric of custom; choose one of: accuracy"),
    ({"labels": "scores"}, r"task.labels=scores: give a list of class names, regression, or null"),
    ({"labels": ["good", "good"]}, r"two or more distinct class names"),
])  # fmt: skip
def test_bad_task_fields_are_one_line(tmp_path, fields, message):
    path = tmp_path / "a.csv"
    path.write_text("review,stars\ngood,good\nbad,bad\n")
    with pytest.raises(UserError, match=message):
        own_task(path, **fields)


def test_inferred_labels_are_sorted_numerically_and_a_score_column_is_refused(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("review,stars\n" + "".join(f"good,{n}\n" for n in (10, 2, 1, 2)))
    assert own_task(path, labels=None).label_names == ("1", "2", "10")
    path.write_text("review,stars\n" + "".join(f"good,{n / 7:.4f}\n" for n in range(150)))
    with pytest.raises(UserError, match=r"150 distinct labels in 'stars'; scores\? task.labels=regression"):
        own_task(path, labels=None)


def test_a_hub_dataset_by_its_split_names(tmp_path):
    """``hub:`` takes what ``datasets.load_dataset`` takes: a Hub id, or (here, offline) a dataset folder."""
    write_csv(
        tmp_path / "train.csv", [{"review": "good", "stars": "good"}, {"review": "bad", "stars": "bad"}]
    )
    write_csv(tmp_path / "validation.csv", [{"review": "bad film", "stars": "bad"}])
    task = own_task(tmp_path, hub=str(tmp_path), train="train", validation="validation", labels=None)
    splits = task.read_splits()
    assert task.label_names == ("bad", "good") and splits["validation"]["label"] == [0]
    with pytest.raises(UserError, match=r"cannot load .* split nosuch: .*check task.hub, task.hub_config"):
        own_task(tmp_path, hub=str(tmp_path), train="nosuch", labels=None)


def test_missing_validation_and_a_test_size_beside_a_test_file(tiny_bert, tmp_path):
    from peft_glue.training.models import load_tokenizer

    path = tmp_path / "a.csv"
    path.write_text("review,stars\n" + "".join(f"good,{['bad', 'good'][i % 2]}\n" for i in range(20)))
    tokenizer = load_tokenizer(str(tiny_bert), False)
    with pytest.raises(
        UserError, match=r"no validation set: give task.validation, or .*data.validation_size"
    ):
        GlueDataModule(own_task(path), tokenizer).setup()
    carved = GlueDataModule(own_task(path), tokenizer, validation_size=4, test_size=6)
    carved.setup()
    assert {name: len(split) for name, split in carved.splits.items()} == {
        "train": 10,
        "validation": 4,
        "test": 6,
    }
    with pytest.raises(UserError, match=r"data.test_size carves a test split for a dataset without one"):
        GlueDataModule(own_task(path, validation=str(path), test=str(path)), tokenizer, test_size=4).setup()


def test_a_yaml_task_with_a_wrong_key_is_refused_before_the_run(tmp_path, capsys):
    from peft_glue.training.config import check_command_line

    write_task_yaml(tmp_path, "mine", train="a.csv", txet="review", monitor="accuracy")
    with pytest.raises(SystemExit):
        check_command_line([f"--config-dir={tmp_path}", "task=mine"])
    assert "unknown key 'task.txet'" in capsys.readouterr().err


@pytest.mark.slow  # reads the whole of SST-2 (67k rows) twice and trains twice: ~1 minute on 2 cores
def test_real_sst2_files_as_a_yaml_task_give_the_numbers_of_task_sst2(tiny_bert, tmp_path):
    glue = shared_glue("SST-2")
    config = tmp_path / "conf"
    write_task_yaml(
        config, "sst2_files", train=str(glue / "train.tsv"), validation=str(glue / "dev.tsv"),
        text="sentence", labels=["0", "1"], metrics=["accuracy"], monitor="accuracy",
    )  # fmt: skip
    common = ["data.train_subset=256", "trainer.max_epochs=2", "seed=7"]
    own = own_run(tiny_bert, config, tmp_path / "own", "sst2_files", *common)
    glue_run = own_run(tiny_bert, config, tmp_path / "glue", "sst2", f"data.data_dir={glue.parent}", *common)
    assert own.val_history == glue_run.val_history and own.best == glue_run.best
    # and every logged loss: the tiny model's accuracy alone sits at a majority class either way
    own_logs, glue_logs = read_metrics(tmp_path / "own"), read_metrics(tmp_path / "glue")
    for column in ("train/loss", "val/loss"):
        assert own_logs[column].dropna().tolist() == glue_logs[column].dropna().tolist(), column
