"""The training examples every bench_train variant uses (the framework's `data.train_subset=N`), and checks
that the framework's own data module picks the same ones."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from peft_glue.training.data import GlueDataModule
from peft_glue.training.models import load_tokenizer
from peft_glue.training.tasks import GlueTask


@dataclass
class Slice:
    """Text columns (one list per column), 0/1 labels and the train.tsv row of each example."""

    texts: list[list[str]]
    labels: list[int]
    rows: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def prefix(self, count: int) -> Slice:
        return Slice([column[:count] for column in self.texts], self.labels[:count], self.rows[:count])

    def fingerprint(self) -> str:
        """A hash of the examples in order, to show that two loaders picked the same ones."""
        payload = json.dumps([*self.texts, self.labels], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_slice(glue_dir: Path, task: GlueTask, examples: int) -> Slice:
    """The framework's `data.train_subset=N`: the TSV read the same way, then shuffle(seed=0).select(range(N))
    (or the whole file, unshuffled, when N is not smaller than it)."""
    from datasets import Features, Value, load_dataset

    path = glue_dir / task.folder / "train.tsv"
    with open(path, encoding="utf-8-sig") as file:
        header = file.readline().rstrip("\r\n").split("\t")
    table = load_dataset(
        "csv",
        data_files=str(path),
        split="train",
        sep="\t",
        quoting=csv.QUOTE_NONE,  # GLUE sentences hold unbalanced quotes
        encoding="utf-8-sig",
        na_filter=False,
        index_col=False,
        features=Features({column: Value("string") for column in header}),
    )
    table = table.add_column("__row", list(range(len(table))))
    if examples < len(table):
        table = table.shuffle(seed=0).select(range(examples))
    texts = [list(table[column]) for column in task.text_columns]  # datasets 4+ returns lazy columns
    labels = [int(v) for v in table[task.label_column]]
    return Slice(texts, labels, list(table["__row"]))


def token_ids(data: Slice, tokenizer: Any, max_length: int) -> list[list[int]]:
    """Each example's token ids, truncated to ``max_length`` and unpadded, as the framework tokenizes."""
    return tokenizer(*data.texts, truncation=True, max_length=max_length)["input_ids"]


def token_fingerprint(rows: Sequence[int], ids: Sequence[Sequence[int]], labels: Sequence[int]) -> str:
    """A hash of (row, token ids, label) of every example, in row order: the same for the same examples
    tokenized alike, whatever order a loader serves them in."""
    examples = sorted(zip(rows, map(list, ids), labels, strict=True))
    return hashlib.sha256(json.dumps(examples).encode()).hexdigest()[:16]


@dataclass
class FrameworkEpoch:
    """One training epoch as the framework's data module serves it."""

    fingerprint: str  # token_fingerprint of its examples
    batch_shapes: list[tuple[int, int]]  # (batch size, padded length) of each batch, in order


def framework_epoch(cfg: DictConfig) -> FrameworkEpoch | None:
    """Read the first training epoch from the framework's own GlueDataModule, built from ``cfg`` as
    `python -m peft_glue.train` builds it (same slice, seed, batch size, length grouping). None, with a note,
    if that fails: this is a cross-check and must never stop the benchmark."""
    try:
        task = instantiate(cfg.task)
        tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
        data = GlueDataModule(task, tokenizer, seed=cfg.seed, **cfg.data)
        data.setup()
        rows: list[int] = []
        ids: list[list[int]] = []
        labels: list[int] = []
        shapes: list[tuple[int, int]] = []
        for batch in data.train_dataloader():
            count, length = batch["input_ids"].shape
            shapes.append((int(count), int(length)))
            rows += [int(row) for row in batch["idx"]]
            ids += [
                example[mask.bool()].tolist()
                for example, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
            ]
            labels += [int(label) for label in batch["labels"]]
        return FrameworkEpoch(token_fingerprint(rows, ids, labels), shapes)
    except Exception as error:  # an optional cross-check: never let it stop the benchmark
        print(f"note: cannot read the framework's training epoch ({error})", file=sys.stderr)
        return None
