"""The tiny BERT learns an easy synthetic task; metrics, test metrics and submission rows are checked against
what the exported model predicts, one example at a time, with accuracy and F1 recomputed in plain Python."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peft_glue.record import RunRecord
from peft_glue.results.runs import read_metrics
from peft_glue.train import train

from .conftest import BOM, FILLER, NEGATIVE, POSITIVE, compose_cfg, tiny_overrides

TEST_INDICES = [907, 3, 41, 500, 12, 288, 77, 1000, 6, 154, 95, 730, 19, 402, 61, 250]  # shuffled, with gaps


def easy_sentence(rng: random.Random, label: int) -> str:
    """Mostly words of the label's polarity: a 2-layer BERT of width 32 learns it in a few epochs."""
    words = POSITIVE if label else NEGATIVE
    return " ".join(rng.choice(words if rng.random() < 0.6 else FILLER) for _ in range(3 + rng.randrange(6)))


def write_easy_glue(root: Path, n_train: int = 128, n_dev: int = 64, seed: int = 0) -> Path:
    """SST-2: sentences of one polarity, the test file with shuffled, non-contiguous indices. MRPC: a
    pair is a "paraphrase" when both sentences are positive; its test file is a copy of dev (labelled)."""
    rng = random.Random(seed)
    sst, mrpc = root / "SST-2", root / "MRPC"
    sst.mkdir(parents=True)
    mrpc.mkdir(parents=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        rows = [f"{easy_sentence(rng, i % 2)}\t{i % 2}" for i in range(n)]
        (sst / f"{name}.tsv").write_text("\n".join(["sentence\tlabel", *rows]) + "\n")
    rows = [f"{index}\t{easy_sentence(rng, rng.randrange(2))}" for index in TEST_INDICES]
    (sst / "test.tsv").write_text("\n".join(["index\tsentence", *rows]) + "\n")
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    for name, n in (("train", n_train), ("dev", n_dev)):
        rows = [
            f"{i % 2}\t{i}\t{i + n}\t{easy_sentence(rng, i % 2)}\t{easy_sentence(rng, i % 2)}"
            for i in range(n)
        ]
        (mrpc / f"{name}.tsv").write_text(BOM + "\n".join([header, *rows]) + "\n", encoding="utf-8")
    (mrpc / "test.tsv").write_bytes((mrpc / "dev.tsv").read_bytes())
    return root


@pytest.fixture(scope="module")
def easy_glue(tmp_path_factory) -> Path:
    return write_easy_glue(tmp_path_factory.mktemp("easy-glue"))


def run(overrides: list[str], folder: Path) -> RunRecord:
    """A run in fp32 (bf16 on some CPUs would round the logits that the checks recompute in fp32)."""
    record = RunRecord(folder)
    train(compose_cfg([*overrides, "trainer.precision=32-true"], folder), record)
    assert record.results.status == "completed"
    return record


@pytest.fixture(scope="module")
def sst2_run(tiny_bert, easy_glue, tmp_path_factory) -> RunRecord:
    folder = tmp_path_factory.mktemp("sst2-full")
    overrides = ["task=sst2", "method=full", "optimizer.lr=3e-3", *tiny_overrides(tiny_bert, easy_glue)]
    return run([*overrides, "trainer.max_epochs=3"], folder)


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8-sig").splitlines()[1:]]


@torch.no_grad()
def predict_one(model: torch.nn.Module, tokenizer, *texts: str) -> int:
    """The model's class for one example, alone in its batch (no padding)."""
    return int(model.eval()(**tokenizer(*texts, return_tensors="pt")).logits.argmax(-1).item())


def accuracy_f1(predictions: list[int], labels: list[int]) -> tuple[float, float]:
    """Accuracy, and F1 of class 1, in plain Python."""
    tp = sum(p == y == 1 for p, y in zip(predictions, labels, strict=True))
    fp = sum(p == 1 and y == 0 for p, y in zip(predictions, labels, strict=True))
    fn = sum(p == 0 and y == 1 for p, y in zip(predictions, labels, strict=True))
    accuracy = sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels)
    return accuracy, 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_tiny_bert_learns_and_its_accuracy_is_that_of_the_exported_model(sst2_run, tiny_bert, easy_glue):
    history = [epoch["accuracy"] for epoch in sst2_run.results.val_history]
    assert history[-1] >= 0.9, history  # chance: 0.5 (balanced dev set of 64)
    assert history[0] < history[-1] or history[0] >= 0.9
    model = AutoModelForSequenceClassification.from_pretrained(sst2_run.results.exports["weights"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rows = read_tsv(easy_glue / "SST-2" / "dev.tsv")
    predictions = [predict_one(model, tokenizer, sentence) for sentence, _ in rows]
    accuracy, _ = accuracy_f1(predictions, [int(label) for _, label in rows])
    # the export is the epoch validation picked (the best), which need not be the last one
    assert sst2_run.results.best["accuracy"] == pytest.approx(accuracy, abs=1e-7)


def test_submission_rows_are_the_exported_models_predictions_sentence_by_sentence(
    sst2_run, tiny_bert, easy_glue
):
    (submission_file,) = sst2_run.results.predictions
    submission = Path(submission_file).read_text().splitlines()
    assert submission[0] == "index\tprediction"
    rows = [line.split("\t") for line in submission[1:]]
    assert [int(index) for index, _ in rows] == sorted(TEST_INDICES)  # index order, every index once
    model = AutoModelForSequenceClassification.from_pretrained(sst2_run.results.exports["weights"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    sentences = {int(index): sentence for index, sentence in read_tsv(easy_glue / "SST-2" / "test.tsv")}
    expected = [
        [str(index), str(predict_one(model, tokenizer, sentences[index]))] for index in sorted(sentences)
    ]
    assert rows == expected
    assert {prediction for _, prediction in rows} == {"0", "1"}  # a model that learned: both classes


def test_labelled_test_copy_of_dev_gives_the_best_epochs_validation_metrics(tiny_bert, easy_glue, tmp_path):
    """The test set is evaluated with the checkpoint the monitor picked (the export): on a copy of dev, its
    metrics are that epoch's validation metrics."""
    overrides = ["task=mrpc", "method=full", "optimizer.lr=3e-3", *tiny_overrides(tiny_bert, easy_glue)]
    record = run([*overrides, "trainer.max_epochs=3"], tmp_path)
    best, test = record.results.val["best"], record.results.test
    assert record.results.best_checkpoint["epoch"] == best["epoch"] and record.results.predictions is None
    assert (test["accuracy"], test["f1"]) == (best["accuracy"], best["f1"])
    losses = read_metrics(tmp_path).dropna(subset=["val/loss"])
    val_loss = losses[losses["epoch"] == best["epoch"]]["val/loss"].iloc[-1]  # the best epoch's
    assert test["loss"] == pytest.approx(val_loss, rel=1e-6)
    model = AutoModelForSequenceClassification.from_pretrained(record.results.exports["weights"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rows = read_tsv(easy_glue / "MRPC" / "dev.tsv")
    predictions = [predict_one(model, tokenizer, first, second) for _, _, _, first, second in rows]
    accuracy, f1 = accuracy_f1(predictions, [int(row[0]) for row in rows])
    assert set(predictions) == {0, 1} and accuracy >= 0.8  # both classes predicted: F1 is not trivial
    assert test["accuracy"] == pytest.approx(accuracy, abs=1e-7)
    assert test["f1"] == pytest.approx(f1, abs=1e-6)
