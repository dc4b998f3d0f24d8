"""Task registry: one class per GLUE task, chosen by ``conf/task/<name>.yaml``.

A task says where its data lives (Hub config, local GLUE folder and column names), what its labels are
(class names, or a regression score), how a label string becomes a target, which metrics it reports and
which one picks the best epoch, its loss, and how a prediction is written to its submission file. The
module, the data and the report ask the task instead of assuming binary classification. Adding a task is one
class here plus one yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy

from peft_glue.errors import UserError

UNLABELLED = -1  # the label of an example whose split has no labels (GLUE's test splits)

# torchmetrics metric by name, built for a task
METRICS: dict[str, Callable[[GlueTask], Metric]] = {
    "accuracy": lambda task: MulticlassAccuracy(num_classes=task.num_labels, average="micro"),
    "f1": lambda task: BinaryF1Score(),  # of class 1, as GLUE reports it for MRPC and QQP
}


@dataclass(frozen=True)
class GlueTask:
    """Base class; ``monitor`` is the validation metric that picks the best epoch (``task.monitor=...``)."""

    name: ClassVar[str]
    hub_config: ClassVar[str]  # config name of the `nyu-mll/glue` Hub dataset
    folder: ClassVar[str]  # folder in the classic GLUE layout: <data_dir>/<folder>/{train,dev,test}.tsv
    text_columns: ClassVar[tuple[str, ...]]  # local TSV columns holding the text, in order
    label_column: ClassVar[str]  # local TSV column holding the label (absent in unlabelled test files)
    submission_file: ClassVar[str]  # file name the GLUE leaderboard expects
    label_names: ClassVar[tuple[str, ...]] = ("0", "1")  # class i as files and submissions write it
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)  # names in METRICS
    monitor: str = "accuracy"

    def __post_init__(self) -> None:
        if self.monitor not in self.metrics:
            raise UserError(
                f"task.monitor={self.monitor} is not a metric of {self.name}; "
                f"choose one of: {', '.join(self.metrics)}"
            )

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Outputs of the model's head: one score for regression, else one logit per class."""
        return 1 if self.is_regression else len(self.label_names)

    def parse_label(self, text: str) -> float | int:
        """A label as a file writes it (a class name or its index; a score) -> the training target.
        Raises ValueError with a message that says what was expected."""
        if self.is_regression:
            return float(text)
        if text in self.label_names:
            return self.label_names.index(text)
        if text.isdigit() and int(text) < self.num_labels:
            return int(text)
        *others, last = self.label_names
        raise ValueError(f"label {text!r} is not {', '.join(others)} or {last}")

    def metric_collection(self) -> MetricCollection:
        return MetricCollection({name: METRICS[name](self) for name in self.metrics})

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.is_regression:
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        return nn.functional.cross_entropy(logits, labels)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics and the submission file take: the class index, or the score."""
        return logits.squeeze(-1).float() if self.is_regression else logits.argmax(-1)

    def format_prediction(self, value: float | int) -> str:
        """One prediction as the GLUE server expects it in the submission file."""
        return f"{value:.3f}" if self.is_regression else self.label_names[int(value)]

    def info(self) -> dict[str, Any]:
        """Recorded in results.json, so that the report needs no import of the task."""
        return {"metrics": list(self.metrics), "monitor": self.monitor, "regression": self.is_regression}


@dataclass(frozen=True)
class SST2(GlueTask):
    """Stanford Sentiment Treebank: single sentences, positive or negative."""

    name = "sst2"
    hub_config = "sst2"
    folder = "SST-2"
    text_columns = ("sentence",)
    label_column = "label"
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
    submission_file = "MRPC.tsv"
