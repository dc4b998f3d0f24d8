"""Task registry: one class per GLUE task, chosen by ``conf/task/<name>.yaml``.

A task says where its data lives (Hub config, local GLUE folder and column names), which metrics it reports
and how its submission file is named. Adding a task is one class here plus one yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class GlueTask:
    name: ClassVar[str]
    hub_config: ClassVar[str]  # config name of the `nyu-mll/glue` Hub dataset
    folder: ClassVar[str]  # folder in the classic GLUE layout: <data_dir>/<folder>/{train,dev,test}.tsv
    text_columns: ClassVar[tuple[str, ...]]  # local TSV columns holding the text, in order
    label_column: ClassVar[str]  # local TSV column holding the 0/1 label (absent in unlabelled test files)
    metrics: ClassVar[tuple[str, ...]]  # torchmetrics binary metrics: "accuracy", "f1"
    submission_file: ClassVar[str]  # file name the GLUE leaderboard expects
    num_labels: ClassVar[int] = 2
    monitor: ClassVar[str] = "accuracy"  # validation metric that picks the best epoch

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


@dataclass(frozen=True)
class SST2(GlueTask):
    """Stanford Sentiment Treebank: single sentences, positive or negative."""

    name = "sst2"
    hub_config = "sst2"
    folder = "SST-2"
    text_columns = ("sentence",)
    label_column = "label"
    metrics = ("accuracy",)
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
