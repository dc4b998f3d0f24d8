"""A dataset of one's own as a task: a yaml, no code. ``conf/task/<name>.yaml`` in a ``--config-dir``:

    _target_: peft_glue.training.file_task.FileTask
    name: reviews
    train: data/train.csv            # CSV, TSV or JSON Lines (relative to the working directory)
    validation: data/dev.csv         # optional with data.validation_size (carved from train)
    test: null                       # optional; without one, data.test_size carves it from train
    text: [review]                   # one text column, or the two of a pair
    label: stars                     # the label column
    labels: [bad, ok, great]         # class names; null: inferred from train (sorted, logged); or regression
    metrics: [accuracy, f1_macro]    # of accuracy, f1 (binary), f1_macro, f1_micro, mcc, pearson, spearman
    monitor: f1_macro                # the validation metric that picks the best epoch

or ``task=file`` with the same keys on the command line (``conf/task/file.yaml``). With ``hub: <dataset id>``
(and ``hub_config``), ``train``/``validation``/``test`` name the dataset's splits instead of files.

The keys are this dataclass's fields, so the schema check refuses a wrong one before a run, as for any task.
Files are read by ``datasets``' csv and json builders; every row is checked (the columns, empty texts, the
labels: a wrong one names the line and the value) and normalised to the GLUE tasks' columns, so metrics,
monitor, splits, report, predictions, exports (``id2label``) and model cards are the GLUE tasks' code path.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import ClassLabel, Dataset, DatasetDict, Value, load_dataset
from torch import nn

from peft_glue.errors import UserError
from peft_glue.record import write_atomic
from peft_glue.training.data import (
    check_rows,
    load_tsv,
    normalised_features,
    normalised_text_columns,
)
from peft_glue.training.tasks import METRICS, GlueTask

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json"}
REGRESSION = "regression"  # task.labels=regression: one output, a score
CLASSIFICATION_METRICS = ("accuracy", "f1", "f1_macro", "f1_micro", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
ID_COLUMN = "id"  # the normalised column of task.id_column
MAX_INFERRED_LABELS = 100  # more distinct labels than this in train: a score, not classes


@dataclass(frozen=True, kw_only=True)
class FileTask(GlueTask):
    """A text-classification or regression task whose files, columns, labels and metrics are its fields."""

    given_splits: ClassVar[tuple[str, str]] = ("validation_file", "test_file")
    name: str = "custom"
    train: str | None = None  # a file, or the Hub dataset's split
    validation: str | None = None
    test: str | None = None
    hub: str | None = None  # a Hub dataset id (or a dataset folder): train/validation/test are its splits
    hub_config: str | None = None
    text: list[str] | str | None = None  # a column name, or a list of one or two (a pair)
    label: str = "label"
    labels: list[str | int] | str | None = (
        None  # class names (a list), "regression", or null: inferred from train
    )
    id_column: str | None = None  # written beside each prediction instead of the text
    metrics: list[str] | None = (
        None  # names in tasks.METRICS; null: accuracy, or Pearson and Spearman for regression
    )
    derived: dict[str, list[str]] | None = None  # name -> the metrics it is the mean of
    monitor: str | None = None  # the validation metric that picks the best epoch
    class_weights: bool = (
        False  # cross-entropy weighted n / (classes * count): imbalanced classes count alike
    )

    def __post_init__(self) -> None:
        if not self.train:
            raise UserError("task.train is not set: the training file (CSV, TSV or JSON Lines) or Hub split")
        texts = [self.text] if isinstance(self.text, str) else list(self.text or [])
        if len(texts) not in (1, 2):
            raise UserError(f"task.text={texts}: name one text column, or the two columns of a pair")
        set_ = object.__setattr__  # a frozen dataclass: the fields become the GlueTask attributes once
        set_(self, "text_columns", tuple(str(column) for column in texts))
        set_(self, "label_column", self.label)
        set_(self, "index_column", self.id_column)
        set_(self, "label_names", self.resolve_labels())
        kind = REGRESSION_METRICS if self.is_regression else CLASSIFICATION_METRICS
        metrics = tuple(self.metrics or (REGRESSION_METRICS if self.is_regression else ("accuracy",)))
        for metric in metrics:
            if metric not in kind or metric not in METRICS:
                raise UserError(f"task.metrics: {metric} is not a metric of this task; choose from {kind}")
        if "f1" in metrics and self.num_labels != 2:
            raise UserError(
                f"task.metrics: f1 is binary (of the second label) and this task has {self.num_labels} "
                "classes; use f1_macro or f1_micro"
            )
        set_(self, "metrics", metrics)
        derived = {name: tuple(parts) for name, parts in (self.derived or {}).items()}
        for name, parts in derived.items():
            if not parts or any(part not in metrics for part in parts):
                raise UserError(f"task.derived.{name}={list(parts)}: the mean of metrics of task.metrics")
        set_(self, "derived", derived)
        if self.monitor is None:
            raise UserError(
                f"task.monitor is not set: the metric that picks the best epoch, e.g. {metrics[0]}"
            )
        super().__post_init__()

    # -------------------------------------------------------------------------------------------- labels
    def resolve_labels(self) -> tuple[str, ...]:
        """The class names as declared, none for regression, or those of the training file (sorted)."""
        if self.labels == REGRESSION:
            return ()
        if isinstance(self.labels, str):
            raise UserError(f"task.labels={self.labels}: give a list of class names, regression, or null")
        if self.labels is not None:
            names = tuple(str(name) for name in self.labels)
            if len(names) < 2 or len(set(names)) != len(names):
                raise UserError(f"task.labels={list(names)}: two or more distinct class names")
            return names
        names = self.inferred_labels()
        log.info(
            "task %s: %d labels inferred from %s: %s", self.name, len(names), self.train, ", ".join(names)
        )
        return names

    def inferred_labels(self) -> tuple[str, ...]:
        table, where, _ = self.load_split("train")
        self.check_columns(table.column_names, where, need_label=True)
        feature = table.features[self.label]
        if isinstance(feature, ClassLabel):  # a Hub dataset's declared names
            return tuple(feature.names)
        column = table[self.label]
        if None in column or "" in column:
            row = next(i for i, value in enumerate(column) if value in (None, ""))
            raise UserError(
                f"{where} row {row + 1} has no '{self.label}'; every training example needs a label"
            )
        values = {str(value) for value in column}
        numeric = all(value.lstrip("-").isdigit() for value in values)
        names = tuple(sorted(values, key=int if numeric else str))
        if len(names) > MAX_INFERRED_LABELS:
            raise UserError(
                f"{where}: {len(names)} distinct labels in '{self.label}'; scores? task.labels=regression"
            )
        if len(names) < 2:
            raise UserError(f"{where}: one label ({', '.join(names)}) in '{self.label}'; a task needs two")
        return names

    @cached_property
    def class_weight(self) -> torch.Tensor:
        """n / (classes * count of the class) over the training file (scikit-learn's "balanced" weights: one
        line, so no new dependency); a class absent from train cannot be weighted."""
        counts = torch.bincount(torch.tensor(self.read_split("train")["label"]), minlength=self.num_labels)
        if (counts == 0).any():
            absent = [self.label_names[i] for i in (counts == 0).nonzero().flatten().tolist()]
            raise UserError(f"task.class_weights: {self.train} has no example of {', '.join(absent)}")
        return counts.sum() / (self.num_labels * counts.float())

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.class_weights and not self.is_regression:
            weight = self.class_weight.to(logits.device)
            return nn.functional.cross_entropy(logits.float(), labels, weight=weight)
        return super().loss(logits, labels)

    # -------------------------------------------------------------------------------------------- reading
    def read_splits(self) -> DatasetDict:
        """train, and validation and test where given: each read, checked and normalised."""
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return DatasetDict({split: self.read_split(split) for split, source in splits.items() if source})

    def read_split(self, split: str) -> Dataset:
        table, where, first_line = self.load_split(split)
        return self.normalise(table, where, first_line, need_label=split != "test")

    def read_file(self, path: Path) -> Dataset:
        """A file to predict (``predict input=``): labelled or not."""
        table, first_line = load_rows(path)
        return self.normalise(table, str(path), first_line, need_label=False)

    def load_split(self, split: str) -> tuple[Dataset, str, int | None]:
        """The split's raw table, where it came from, and the file line of its first row (None: the Hub)."""
        source = getattr(self, split)
        if self.hub is None:
            table, first_line = load_rows(Path(source).expanduser())
            return table, source, first_line
        where = f"{self.hub} ({self.hub_config or 'default'}) split {source}"
        try:
            table = load_dataset(self.hub, self.hub_config, split=source)
        except Exception as error:  # connection, offline mode, unknown dataset, config or split: all end here
            cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserError(
                f"cannot load {where}: {cause}; check task.hub, task.hub_config, task.{split}"
            ) from None
        return table, where, None

    def check_columns(self, columns: list[str], where: str, need_label: bool) -> None:
        wanted = [*self.text_columns, *([self.label] if need_label else []), *filter(None, [self.id_column])]
        missing = [column for column in wanted if column not in columns]
        if missing:
            raise UserError(
                f"{where} lacks the column(s) {', '.join(missing)} (task.text, task.label, task.id_column); "
                f"it has: {', '.join(columns)}"
            )

    def normalise(self, table: Dataset, where: str, first_line: int | None, need_label: bool) -> Dataset:
        """Every row checked (texts present, labels of the task), then GLUE's columns: idx (the row),
        sentence1[, sentence2], label (UNLABELLED without a label column) and ``id`` (task.id_column)."""
        self.check_columns(table.column_names, where, need_label)
        labelled = self.label in table.column_names
        place = "line" if first_line is not None else "row"
        first = first_line if first_line is not None else 0

        def rows(batch: dict, indices: list[int]) -> dict:
            texts = [batch[column] for column in self.text_columns]
            for index, values in zip(indices, zip(*texts, strict=True), strict=True):
                for column, value in zip(self.text_columns, values, strict=True):
                    if not isinstance(value, str) or not value.strip():
                        raise UserError(f"{where} {place} {index + first}: '{column}' is empty or not text")
            labels = [self.unlabelled] * len(indices)
            if labelled:
                labels = [self.parse_row_label(value, where, f"{place} {index + first}")
                          for index, value in zip(indices, batch[self.label], strict=True)]  # fmt: skip
            ids = {ID_COLUMN: [str(value) for value in batch[self.id_column]]} if self.id_column else {}
            return {"idx": indices, **dict(zip(normalised_text_columns(self), texts, strict=True)),
                    "label": labels, **ids}  # fmt: skip

        features = normalised_features(self)
        if self.id_column:
            features[ID_COLUMN] = Value("string")
        return table.map(rows, batched=True, with_indices=True, remove_columns=table.column_names,
                         features=features, desc=f"read {Path(where).name}")  # fmt: skip

    def parse_row_label(self, value: Any, where: str, place: str) -> float | int:
        text = "" if value is None else str(value)
        try:
            return self.parse_label(text)
        except ValueError as error:
            raise UserError(f"{where} {place}: {error} (task.labels)") from None

    # -------------------------------------------------------------------------------------------- predictions
    def format_prediction(self, value: float | int) -> str:
        """A class name, or a score to float32's precision (GLUE's 3 decimals hide small differences)."""
        return f"{float(value):.7g}" if self.is_regression else self.label_names[int(value)]

    @property
    def submission_file(self) -> str:  # type: ignore[override]  # a class attribute of the GLUE tasks
        """The predictions of an unlabelled test split: ``<name>.predictions.<the test file's type>``."""
        suffix = Path(self.test).suffix if self.test and self.hub is None else ".csv"
        return f"{self.name}.predictions{suffix}"

    def info(self) -> dict[str, Any]:
        """GlueTask's, plus where the data came from (the model card's Data section)."""
        sources = {"train": self.train, "validation": self.validation, "test": self.test}
        dataset = {"hub": self.hub, "hub_config": self.hub_config} if self.hub else {}
        return {**super().info(), "dataset": {**dataset, **{k: v for k, v in sources.items() if v}}}


def file_format(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(
            f"{path}: a file of type {path.suffix or '(none)'!r}; give a .csv, .tsv or .jsonl file"
        )
    return kind


def load_rows(path: Path) -> tuple[Dataset, int]:
    """The file as a table (CSV and TSV: every column a string, nothing guessed as NA) and the file line of
    its first row. CSV: quoted fields (commas, quotes, line breaks inside); TSV: GLUE's, verbatim, no
    quoting, every line's fields counted; JSON Lines: one object per line."""
    kind = file_format(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (relative paths start from the working directory)")
    if kind == "json":
        try:
            return load_dataset("json", data_files=str(path), split="train"), 1
        except Exception as error:  # datasets' json reader: one line of what it could not read
            cause = str(error.__cause__ or error).strip().splitlines()[-1]
            raise UserError(f"{path} is not well-formed JSON Lines ({cause})") from None
    with open(path, encoding="utf-8-sig", newline="") as file:
        header = next(csv.reader(file, delimiter="\t" if kind == "tsv" else ","), [])
    if kind == "tsv":
        check_rows(path, header, (), first_line=2, kind="TSV")
        return load_tsv(path, header, headerless=False, kind="TSV"), 2
    return load_tsv(path, header, headerless=False, kind="CSV", sep=",", quoting=csv.QUOTE_MINIMAL), 2


def prediction_table(task: FileTask, rows: Dataset, predictions: list[tuple[torch.Tensor, torch.Tensor]]):
    """The predicted rows in file order: the id (or the text columns), the label where the rows have
    one, and the prediction (a label name, or a score)."""
    indices = torch.cat([idx for idx, _ in predictions]).tolist()
    values = torch.cat([pred for _, pred in predictions]).tolist()
    predicted = dict(zip(indices, values, strict=True))
    position = {index: place for place, index in enumerate(rows["idx"])}
    shown = [ID_COLUMN] if task.id_column else normalised_text_columns(task)
    names = [task.id_column] if task.id_column else list(task.text_columns)
    labelled = bool(len(rows)) and task.all_labelled(rows["label"])
    table = []
    for index in sorted(predicted):
        row = rows[position[index]]
        line = {name: row[column] for name, column in zip(names, shown, strict=True)}
        if labelled:
            line[task.label] = task.format_prediction(row["label"])
        line["prediction"] = task.format_prediction(predicted[index])
        table.append(line)
    return table


def write_prediction_table(path: Path, task: FileTask, rows: Dataset, predictions: list) -> Path:
    """Predictions beside each row, in the file type of ``path``: CSV (quoted where needed), TSV (GLUE's
    plain tab-separated lines) or JSON Lines."""
    table = prediction_table(task, rows, predictions)
    columns = list(table[0]) if table else ["prediction"]
    kind = file_format(path)
    if kind == "json":
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in table)
    elif kind == "tsv":
        text = "".join("\t".join(map(str, line)) + "\n" for line in [columns, *(r.values() for r in table)])
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        text = buffer.getvalue()
    write_atomic(path, text)
    return path
