"""The GLUE tasks, one class each, chosen by ``conf/task/<name>.yaml``.

A task says where its data lives (Hub config and splits, local GLUE folder, file names and column names),
what its labels are (class names, or a regression score), how a label string becomes a target, which
metrics it reports (torchmetrics, plus metrics derived from them such as the mean of F1 and accuracy) and
which one picks the best epoch, its loss, and how a prediction is written to its submission file(s). The
module, the data and the report ask the task instead of assuming binary classification. Adding a GLUE-style
task is one class here plus one yaml; a dataset of one's own is only a yaml (``file_task.FileTask``).

Splits: every task has ``train``, ``validation`` and ``test``; a task with more evaluation sets (MNLI's
mismatched ones, the diagnostic AX set) names them ``validation<suffix>`` / ``test<suffix>``, and the metrics
of such a set carry the suffix (``accuracy_mm``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from peft_glue.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

UNLABELLED = -1  # the label of an example whose split has no labels (GLUE's test splits); regression: NaN

# torchmetrics metric by name, built for a task (each keeps states that torchmetrics syncs over DDP ranks;
# Pearson and Spearman keep the full predictions/targets or their moments, so they stay exact too)
METRICS: dict[str, Callable[[GlueTask], Metric]] = {
    "accuracy": lambda task: MulticlassAccuracy(num_classes=task.num_labels, average="micro"),
    "f1": lambda task: BinaryF1Score(),  # of class 1, as GLUE reports it for MRPC and QQP
    "f1_macro": lambda task: MulticlassF1Score(num_classes=task.num_labels, average="macro"),
    "f1_micro": lambda task: MulticlassF1Score(num_classes=task.num_labels, average="micro"),
    # Matthews correlation, CoLA's metric; its multi-class generalisation (Gorodkin's R_K) beyond 2 classes
    "mcc": lambda task: (
        BinaryMatthewsCorrCoef()
        if task.num_labels == 2
        else MulticlassMatthewsCorrCoef(num_classes=task.num_labels)
    ),
    "pearson": lambda task: PearsonCorrCoef(),
    "spearman": lambda task: SpearmanCorrCoef(),
}

LOCAL_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
HUB_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


@dataclass(frozen=True)
class GlueTask:
    """Base class; ``monitor`` is the validation metric that picks the best epoch (``task.monitor=...``)."""

    name: ClassVar[str]
    hub_config: ClassVar[str]  # config name of the `nyu-mll/glue` Hub dataset
    folder: ClassVar[str]  # folder in the classic GLUE layout: <data_dir>/<folder>/{train,dev,test}.tsv
    text_columns: ClassVar[tuple[str, ...]]  # local TSV columns holding the text, in order
    label_column: ClassVar[str]  # local TSV column holding the label (absent in unlabelled test files)
    submission_file: ClassVar[str]  # file name the GLUE leaderboard expects (of the ``test`` split)
    label_names: ClassVar[tuple[str, ...]] = ("0", "1")  # class i as files and submissions write it
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)  # names in METRICS
    # metrics computed from others: name -> the metrics it is the mean of (GLUE's paired scores)
    derived: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # the GLUE table's column(s) of this task: title -> metric; the task's GLUE score is their mean
    glue_columns: ClassVar[Mapping[str, str]] = {}
    given_splits: ClassVar[tuple[str, str]] = ("glue_dev", "glue_test")  # what results.json calls them
    index_column: ClassVar[str] = "index"  # local TSV column of the example id (submissions key on it)
    # the columns of local files without a header row (CoLA's train and dev); None: every file has one
    headerless_columns: ClassVar[tuple[str, ...] | None] = None
    local_files: ClassVar[Mapping[str, str]] = LOCAL_FILES  # split -> file in <folder>
    # split -> candidate files (relative to data_dir), the first that exists is read; none: no such split
    optional_local_files: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    hub_text_columns: ClassVar[tuple[str, ...] | None] = None  # the Hub's text columns, when named otherwise
    hub_splits: ClassVar[Mapping[str, str]] = HUB_SPLITS  # split -> the Hub's split name
    optional_hub_configs: ClassVar[Mapping[str, str]] = {}  # split -> the Hub config whose test split it is
    submission_files: ClassVar[Mapping[str, str]] = {}  # test split -> file, when there are several
    monitor: str = "accuracy"

    def __post_init__(self) -> None:
        if self.monitor not in self.validation_metric_names:
            raise UserError(
                f"task.monitor={self.monitor} is not a metric of {self.name}; "
                f"choose one of: {', '.join(self.validation_metric_names)}"
            )

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric reported on a validation set: torchmetrics ones, then derived ones."""
        return (*self.metrics, *self.derived)

    @property
    def validation_metric_names(self) -> tuple[str, ...]:
        """The metrics of every validation set (MNLI: ``accuracy`` and the mismatched ``accuracy_mm``)."""
        suffixes = [split_suffix(s) for s in self.evaluation_splits if s.startswith("validation")]
        return tuple(f"{name}{suffix}" for suffix in suffixes for name in self.metric_names)

    @property
    def evaluation_splits(self) -> tuple[str, ...]:
        """Every validation and test set the task may have (``validation``, ``test``, MNLI's ``*_mm``, AX)."""
        return tuple(split for split in (*self.local_files, *self.optional_local_files) if split != "train")

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def id2label(self) -> dict[int, str]:
        """The head's outputs by name, for the exported model configs (``pipeline`` then says
        ``entailment``, not ``LABEL_0``): the class names, or the one ``score`` of a regression task."""
        return {0: "score"} if self.is_regression else dict(enumerate(self.label_names))

    @property
    def num_labels(self) -> int:
        """Outputs of the model's head: one score for regression, else one logit per class."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def unlabelled(self) -> float | int:
        """The target of an example without a label (a test file): -1, or NaN for a score (which may be
        negative in a dataset of one's own)."""
        return math.nan if self.is_regression else UNLABELLED

    def all_labelled(self, targets: list[float] | list[int]) -> bool:
        """Whether every target is a label (none is ``unlabelled``)."""
        if self.is_regression:
            return not any(math.isnan(target) for target in targets)
        return min(targets, default=UNLABELLED) >= 0

    def parse_label(self, text: str) -> float | int:
        """A label as a file writes it (a class name or its index; a score) -> the training target.
        Raises ValueError with a message that says what was expected."""
        if self.is_regression:
            try:
                score = float(text)
            except ValueError:
                raise ValueError(f"score {text!r} is not a number") from None
            if not math.isfinite(score):
                raise ValueError(f"score {text!r} is not a finite number")
            return score
        if text in self.label_names:
            return self.label_names.index(text)
        if text.isdigit() and int(text) < self.num_labels:
            return int(text)
        *others, last = self.label_names
        raise ValueError(f"label {text!r} is not {', '.join(others)} or {last}")

    def read_splits(self) -> DatasetDict | None:
        """The task's own splits, for a task that names its files (``FileTask``); None: a GLUE task, read
        from the GLUE layout or the Hub by ``data.py``."""
        return None

    def read_file(self, path: Path) -> Dataset | None:
        """One file to predict (``predict input=``) as the task reads it; None: a GLUE TSV."""
        return None

    def metric_collection(self) -> MetricCollection:
        return MetricCollection({name: METRICS[name](self) for name in self.metrics})

    def derive(self, values: Mapping[str, Any], suffix: str = "") -> dict[str, Any]:
        """The derived metrics of one evaluation set's computed ``values`` (keys ``<metric><suffix>``)."""
        return {
            f"{name}{suffix}": sum(values[f"{part}{suffix}"] for part in parts) / len(parts)
            for name, parts in self.derived.items()
        }

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.is_regression:
            return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
        return nn.functional.cross_entropy(logits, labels)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics and the submission file take: the class index, or the score."""
        return logits.squeeze(-1).float() if self.is_regression else logits.argmax(-1)

    def format_prediction(self, value: float | int) -> str:
        """One prediction as the GLUE server expects it in the submission file."""
        return f"{value:.3f}" if self.is_regression else self.label_names[int(value)]

    def submission_file_of(self, split: str) -> str:
        """The submission file of a test split (``test``, or MNLI's ``test_mm`` and ``test_ax``; ``predict*``
        when validation was carved from train)."""
        split = "test" + split.removeprefix("predict") if split.startswith("predict") else split
        return self.submission_files.get(split, self.submission_file)

    @property
    def all_submission_files(self) -> tuple[str, ...]:
        """Every file the GLUE server wants of this task (MNLI: MNLI-m.tsv, MNLI-mm.tsv and AX.tsv)."""
        return tuple(self.submission_files.values()) or (self.submission_file,)

    def info(self) -> dict[str, Any]:
        """Recorded in results.json, so that the report and submit need no import of the task."""
        return {
            "metrics": list(self.metric_names),
            "monitor": self.monitor,
            "regression": self.is_regression,
            "labels": list(self.id2label.values()),
            "glue_columns": dict(self.glue_columns),
            "submission_files": list(self.all_submission_files),
        }


def split_suffix(split: str) -> str:
    """``validation_mm`` -> ``_mm``: what the metrics of that evaluation set are suffixed with."""
    for stage in ("validation", "test"):
        if split.startswith(stage):
            return split.removeprefix(stage)
    return ""


@dataclass(frozen=True)
class CoLA(GlueTask):
    """Corpus of Linguistic Acceptability: single sentences, grammatical (1) or not (0); Matthews corr."""

    name = "cola"
    hub_config = "cola"
    folder = "CoLA"
    text_columns = ("sentence",)
    label_column = "label"
    headerless_columns = ("source", "label", "original_mark", "sentence")
    metrics = ("mcc", "accuracy")
    glue_columns = {"CoLA": "mcc"}
    submission_file = "CoLA.tsv"
    monitor: str = "mcc"


@dataclass(frozen=True)
class SST2(GlueTask):
    """Stanford Sentiment Treebank: single sentences, positive or negative."""

    name = "sst2"
    hub_config = "sst2"
    folder = "SST-2"
    text_columns = ("sentence",)
    label_column = "label"
    glue_columns = {"SST-2": "accuracy"}
    submission_file = "SST-2.tsv"


@dataclass(frozen=True)
class MRPC(GlueTask):
    """Microsoft Research Paraphrase Corpus: sentence pairs, paraphrase or not."""

    name = "mrpc"
    hub_config = "mrpc"
    folder = "MRPC"
    text_columns = ("#1 String", "#2 String")
    label_column = "Quality"
    metrics = ("accuracy", "f1")
    derived = {"acc_and_f1": ("accuracy", "f1")}
    glue_columns = {"MRPC": "acc_and_f1"}
    submission_file = "MRPC.tsv"
    monitor: str = "acc_and_f1"


@dataclass(frozen=True)
class STSB(GlueTask):
    """Semantic Textual Similarity Benchmark: sentence pairs scored 0-5 (regression, one output, MSE)."""

    name = "stsb"
    hub_config = "stsb"
    folder = "STS-B"
    text_columns = ("sentence1", "sentence2")
    label_column = "score"
    label_names = ()  # regression
    metrics = ("pearson", "spearman")
    derived = {"pearson_and_spearman": ("pearson", "spearman")}
    glue_columns = {"STS-B": "pearson_and_spearman"}
    submission_file = "STS-B.tsv"
    monitor: str = "pearson_and_spearman"

    def format_prediction(self, value: float | int) -> str:
        """Scores clipped to GLUE's range [0, 5]."""
        return f"{min(max(float(value), 0.0), 5.0):.3f}"


@dataclass(frozen=True)
class QQP(GlueTask):
    """Quora Question Pairs: question pairs, duplicate or not; accuracy and F1."""

    name = "qqp"
    hub_config = "qqp"
    folder = "QQP"
    text_columns = ("question1", "question2")
    label_column = "is_duplicate"
    index_column = "id"
    metrics = ("accuracy", "f1")
    derived = {"acc_and_f1": ("accuracy", "f1")}
    glue_columns = {"QQP": "acc_and_f1"}
    submission_file = "QQP.tsv"
    monitor: str = "acc_and_f1"


@dataclass(frozen=True)
class MNLI(GlueTask):
    """Multi-Genre NLI: premise/hypothesis pairs, three classes; matched and mismatched evaluation sets,
    and the diagnostic set AX (predicted by the MNLI model) when it is there."""

    name = "mnli"
    hub_config = "mnli"
    folder = "MNLI"
    text_columns = ("sentence1", "sentence2")
    label_column = "gold_label"
    label_names = ("entailment", "neutral", "contradiction")  # the Hub's 0, 1, 2
    hub_text_columns = ("premise", "hypothesis")
    local_files = {
        "train": "train.tsv",
        "validation": "dev_matched.tsv",
        "validation_mm": "dev_mismatched.tsv",
        "test": "test_matched.tsv",
        "test_mm": "test_mismatched.tsv",
    }
    optional_local_files = {"test_ax": ("diagnostic/diagnostic.tsv", "MNLI/diagnostic.tsv")}
    hub_splits = {
        "train": "train",
        "validation": "validation_matched",
        "validation_mm": "validation_mismatched",
        "test": "test_matched",
        "test_mm": "test_mismatched",
    }
    optional_hub_configs = {"test_ax": "ax"}
    glue_columns = {"MNLI-m": "accuracy", "MNLI-mm": "accuracy_mm"}
    submission_file = "MNLI-m.tsv"
    submission_files = {"test": "MNLI-m.tsv", "test_mm": "MNLI-mm.tsv", "test_ax": "AX.tsv"}


@dataclass(frozen=True)
class QNLI(GlueTask):
    """Question NLI: does the sentence answer the question (entailment) or not."""

    name = "qnli"
    hub_config = "qnli"
    folder = "QNLI"
    text_columns = ("question", "sentence")
    label_column = "label"
    label_names = ("entailment", "not_entailment")  # the Hub's 0, 1
    hub_text_columns = ("question", "sentence")
    glue_columns = {"QNLI": "accuracy"}
    submission_file = "QNLI.tsv"


@dataclass(frozen=True)
class RTE(GlueTask):
    """Recognizing Textual Entailment: sentence pairs, entailment or not."""

    name = "rte"
    hub_config = "rte"
    folder = "RTE"
    text_columns = ("sentence1", "sentence2")
    label_column = "label"
    label_names = ("entailment", "not_entailment")  # the Hub's 0, 1
    glue_columns = {"RTE": "accuracy"}
    submission_file = "RTE.tsv"


@dataclass(frozen=True)
class WNLI(GlueTask):
    """Winograd NLI: sentence pairs, 1 = entailment, 0 = not (as GLUE's files and the Hub write them)."""

    name = "wnli"
    hub_config = "wnli"
    folder = "WNLI"
    text_columns = ("sentence1", "sentence2")
    label_column = "label"
    glue_columns = {"WNLI": "accuracy"}
    submission_file = "WNLI.tsv"
