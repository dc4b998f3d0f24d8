"""GLUE data: the Hub's `nyu-mll/glue` or a local folder in the classic GLUE layout, tokenized once, cached.

Every split is normalised to the columns ``idx``, ``sentence1`` (``sentence2`` for pairs) and ``label``
(the task's target; ``task.unlabelled`` where the split has no labels), then tokenized with ``datasets.map``
into an on-disk cache keyed by the raw data, the tokenizer and ``max_length``. Batching: ``samplers.py``.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from datasets import Dataset, DatasetDict, Features, Value, load_dataset
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher
from pandas.errors import ParserWarning
from torch.utils.data import DataLoader, DistributedSampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from peft_glue.errors import UserError
from peft_glue.training.samplers import (
    EpochPosition,
    GroupedBatches,
    LengthGroupedSampler,
    SortedBatchSampler,
)
from peft_glue.training.splits import carve_test, carve_validation
from peft_glue.training.tasks import GlueTask

log = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OFFLINE_DATA_HINT = (
    "set GLUE_DIR or data.data_dir=/path/to/glue (classic GLUE layout); model=minilm for offline weights"
)


# --------------------------------------------------------------------------------------------- raw data
def load_glue(task: GlueTask, data_dir: str | os.PathLike | None) -> DatasetDict:
    """Train / validation / test of ``task``: the files a task of one's own names (file_task.py), else GLUE's
    from ``data_dir`` when given, else from the Hub."""
    raw = task.read_splits()
    if raw is None:
        raw = load_local(task, Path(data_dir).expanduser()) if data_dir else load_hub(task)
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise UserError(f"the {task.name} {split} split is empty; check the files in data.data_dir")
    return raw


def load_hub(task: GlueTask) -> DatasetDict:
    try:
        hub = load_dataset(HUB_DATASET, task.hub_config)
    except Exception as error:  # connection, DNS, offline-mode and missing-dataset errors all end here
        raise UserError(
            f"cannot load GLUE {task.name} from the Hugging Face Hub: {OFFLINE_DATA_HINT}"
        ) from error
    raw = DatasetDict({split: hub[hub_split] for split, hub_split in task.hub_splits.items()})
    for split, config in task.optional_hub_configs.items():  # MNLI's diagnostic set AX: its own config
        try:
            raw[split] = load_dataset(HUB_DATASET, config)["test"]
        except Exception as error:  # noqa: BLE001 - an optional set: go on without it
            log.warning("no %s split (Hub config %s): %s", split, config, error)
    return DatasetDict({split: normalise_hub(dataset, task) for split, dataset in raw.items()})


def normalise_hub(dataset: Dataset, task: GlueTask) -> Dataset:
    """The Hub's columns -> idx, sentence1[, sentence2], label (the Hub's labels are already the targets)."""
    hub_columns = task.hub_text_columns or (("sentence",) if not task.is_pair else ("sentence1", "sentence2"))
    ours = normalised_text_columns(task)
    renames = {hub: our for hub, our in zip(hub_columns, ours, strict=True) if hub != our}
    if renames:
        dataset = dataset.rename_columns(renames)
    return dataset.select_columns(["idx", *ours, "label"]).cast(normalised_features(task))


def load_local(task: GlueTask, data_dir: Path) -> DatasetDict:
    folder = data_dir / task.folder
    missing = [name for name in task.local_files.values() if not (folder / name).is_file()]
    if missing:
        stems = ",".join(name.removesuffix(".tsv") for name in task.local_files.values())
        raise UserError(
            f"{folder} lacks {', '.join(missing)}; data.data_dir (or GLUE_DIR) must hold "
            f"{task.folder}/{{{stems}}}.tsv"
        )
    raw = DatasetDict({split: read_glue_tsv(folder / name, task) for split, name in task.local_files.items()})
    for split, candidates in task.optional_local_files.items():  # MNLI's diagnostic set AX, when it is there
        found = [data_dir / name for name in candidates if (data_dir / name).is_file()]
        if found:
            raw[split] = read_glue_tsv(found[0], task)
    return raw


def normalised_text_columns(task: GlueTask) -> list[str]:
    return ["sentence1", "sentence2"][: len(task.text_columns)]


def read_glue_tsv(path: Path, task: GlueTask) -> Dataset:
    """A GLUE TSV: tab-separated, no quoting (sentences hold unbalanced quotes), maybe a UTF-8 BOM, maybe
    no header row (CoLA's train and dev: ``task.headerless_columns``); every row checked, then normalised to
    ``idx``, the task's sentence columns and ``label``."""
    header, headerless = glue_header(path, task)
    first_line = 1 if headerless else 2  # the file's line number of the first row
    check_rows(path, header, task.text_columns, first_line)
    table = load_tsv(path, header, headerless)
    labelled = task.label_column in header
    index_column = (
        task.index_column if task.index_column in header else "index" if "index" in header else None
    )

    def normalise(batch: dict, rows: list[int]) -> dict:
        texts = [batch[column] for column in task.text_columns]
        for row, values in zip(rows, zip(*texts, strict=True), strict=True):
            if any(value is None for value in values):
                raise UserError(f"{path} line {row + first_line} has too few tab-separated fields")
        labels = [task.unlabelled] * len(rows)
        if labelled:
            labels = [
                parse_label(task, label, path, row + first_line)
                for row, label in zip(rows, batch[task.label_column], strict=True)
            ]
        indices = rows
        if index_column is not None:
            indices = [
                parse_index(value, path, row + first_line)
                for row, value in zip(rows, batch[index_column], strict=True)
            ]
        return {
            "idx": indices,
            **dict(zip(normalised_text_columns(task), texts, strict=True)),
            "label": labels,
        }

    return table.map(
        normalise,
        batched=True,
        with_indices=True,
        remove_columns=header,
        features=normalised_features(task),
        desc=f"read {path.name}",
    )


def glue_header(path: Path, task: GlueTask) -> tuple[list[str], bool]:
    """The file's column names, and whether it has no header row (then the task's ``headerless_columns``)."""
    with open(path, encoding="utf-8-sig") as file:
        header = file.readline().rstrip("\r\n").split("\t")
    missing = [column for column in task.text_columns if column not in header]
    headerless = bool(missing) and task.headerless_columns is not None
    if headerless:
        if len(header) != len(task.headerless_columns):
            raise UserError(
                f"{path} line 1 has {len(header)} tab-separated fields; a {task.name} file without a header "
                f"has {len(task.headerless_columns)} ({', '.join(task.headerless_columns)})"
            )
        header = list(task.headerless_columns)
    elif missing:
        raise UserError(
            f"{path} lacks the column(s) {missing}; its header must name {list(task.text_columns)}"
        )
    return header, headerless


def load_tsv(
    path: Path,
    header: list[str],
    headerless: bool,
    kind: str = "GLUE TSV",
    sep: str = "\t",
    quoting: int = csv.QUOTE_NONE,
) -> Dataset:
    """The file as a table of strings (``datasets``' csv reader: GLUE's TSV has no quoting; no NA guessing);
    a malformed file is one line. ``kind``, ``sep``, ``quoting``: a CSV of one's own (file_task.py)."""
    try:
        with warnings.catch_warnings():
            # a row with more fields than the header would silently lose data: make pandas' warning an error
            warnings.simplefilter("error", ParserWarning)
            table = load_dataset(
                "csv",
                data_files=str(path),
                split="train",
                sep=sep,
                quoting=quoting,
                encoding="utf-8-sig",
                na_filter=False,
                index_col=False,
                features=Features({column: Value("string") for column in header}),
                **({"header": None, "column_names": header} if headerless else {}),
            )
    except ValueError as error:
        if "corresponds to no data" in str(error):
            raise UserError(
                f"{path} has a header but no rows (an empty split); fix or re-download it"
            ) from error
        raise UserError(f"{path} is not a well-formed {kind} ({error}); fix or re-download it") from error
    except (DatasetGenerationError, ParserWarning) as error:
        cause = str(error.__cause__ or error).strip().splitlines()[-1]
        raise UserError(f"{path} is not a well-formed {kind} ({cause}); fix or re-download it") from error
    return table


def check_rows(
    path: Path, columns: list[str], text_columns: tuple[str, ...], first_line: int, kind: str = "GLUE TSV"
) -> None:
    """Every row has as many tab-separated fields as the header names, and no empty sentence: otherwise one
    line naming the file, the line number and the row's start (pandas would fill or drop fields silently)."""
    texts = [columns.index(column) for column in text_columns]
    with open(path, encoding="utf-8-sig", newline="") as file:
        for number, line in enumerate(file, start=1):
            if number < first_line or not line.strip("\r\n"):
                continue
            fields = line.rstrip("\r\n").split("\t")
            start = line[:40].rstrip("\r\n")
            if len(fields) != len(columns):
                few = "too few" if len(fields) < len(columns) else "too many"
                raise UserError(
                    f"{path} is not a well-formed {kind}: line {number} has {few} tab-separated fields "
                    f"({len(fields)}, expected {len(columns)}: {', '.join(columns)}); it starts {start!r}"
                )
            empty = [columns[i] for i in texts if not fields[i].strip()]
            if empty:
                raise UserError(
                    f"{path} is not a well-formed {kind}: line {number} has an empty {empty[0]!r}; "
                    f"it starts {start!r}"
                )


def parse_index(text: str | None, path: Path, line: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UserError(f"{path} line {line}: index {text!r} is not a whole number") from None


def parse_label(task: GlueTask, text: str, path: Path, line: int) -> float | int:
    try:
        return task.parse_label(text)
    except ValueError as error:
        raise UserError(f"{path} line {line}: {error}") from None


def normalised_features(task: GlueTask) -> Features:
    """The columns every split is normalised to; labels are class indices, or scores for regression."""
    return Features(
        {
            "idx": Value("int64"),
            **{column: Value("string") for column in normalised_text_columns(task)},
            "label": Value("float32" if task.is_regression else "int64"),
        }
    )


# --------------------------------------------------------------------------------------------- tokenization
def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """What decides the token ids: vocabulary, normalizer, pre-tokenizer, post-processor (not the
    truncation/padding state that the fast tokenizer keeps from its last call), and which inputs it returns
    (``token_type_ids`` or not): two families never share a cache entry unless they tokenize alike."""
    kind = [type(tokenizer).__name__, list(tokenizer.model_input_names)]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return Hasher.hash([kind, sorted(tokenizer.get_vocab().items())])
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return Hasher.hash([kind, json.dumps(spec, sort_keys=True)])


def tokenize(
    raw: Dataset, task: GlueTask, tokenizer: PreTrainedTokenizerBase, max_length: int, tokenizer_hash: str
) -> Dataset:
    """Tokenize once; later runs with the same data, tokenizer and max_length read the cached result."""
    text_columns = normalised_text_columns(task)
    fingerprint = Hasher.hash([raw._fingerprint, tokenizer_hash, max_length])
    cache_file = None
    if raw.cache_files:
        cache_file = str(
            Path(raw.cache_files[0]["filename"]).parent / f"peft-glue-tokenized-{fingerprint}.arrow"
        )
        hit = os.path.exists(cache_file)
        log.info("tokenization cache %s: %s", "hit" if hit else "miss (tokenizing)", cache_file)

    def encode(batch: dict) -> dict:
        encoded = tokenizer(*(batch[c] for c in text_columns), truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return raw.map(
        encode,
        batched=True,
        remove_columns=[*text_columns, "label"],
        cache_file_name=cache_file,
        new_fingerprint=fingerprint,
        desc="tokenize",
    )


def worker_start_method() -> str | None:
    """How dataloader workers start: the platform's default (None), except inside a process whose default is
    not one of multiprocessing's own, like a worker of Hydra's joblib launcher (loky). torch cannot start a
    worker with that, and spawned ones die there, so such processes fork (where the platform can)."""
    if multiprocessing.get_start_method(allow_none=True) in (None, "fork", "spawn", "forkserver"):
        return None
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class GlueDataModule(pl.LightningDataModule):
    """Serves one GLUE task: length-grouped training batches, length-sorted evaluation, per-batch padding."""

    def __init__(
        self,
        task: GlueTask,
        tokenizer: PreTrainedTokenizerBase,
        data_dir: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        max_length: int = 128,
        group_by_length: bool = True,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        pad_to_multiple_of: int | None = None,
        train_subset: int | None = None,
        validation_size: int | float | None = None,
        test_size: int | float | None = None,
        split_seed: int = 0,
        predict_file: str | os.PathLike | None = None,
        seed: int = 0,
        virtual_tokens: int = 0,
    ):
        super().__init__()
        if max_length - virtual_tokens < 2:
            raise UserError(
                f"data.max_length must be >= 2 plus the method's {virtual_tokens} virtual tokens "
                f"(got {max_length})"
            )
        self.task = task
        self.tokenizer = tokenizer
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_length = max_length - virtual_tokens  # of the text: prompt learning prepends virtual tokens
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_subset = train_subset
        self.validation_size = validation_size  # carve validation from train (splits.py); None: GLUE dev
        self.test_size = test_size  # carve test from train: a dataset without a test file (splits.py)
        self.split_seed = split_seed
        self.predict_file = predict_file  # a TSV to predict instead of the test split
        self.seed = seed
        self.collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.splits: dict[str, Dataset] = {}  # tokenized
        self.raw: DatasetDict = DatasetDict()  # the same rows with their text: predictions beside it
        self.resume_at: EpochPosition | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.predict_file is not None:
            path = Path(self.predict_file)
            own = self.task.read_file(path)  # a task of one's own reads CSV, TSV or JSON Lines
            raw = DatasetDict({"test": own if own is not None else read_glue_tsv(path, self.task)})
        else:
            raw = load_glue(self.task, self.data_dir)
            if self.validation_size is not None:  # validation, then test, then the subset of the rest
                raw = carve_validation(raw, self.task, self.validation_size, self.split_seed)
            if self.test_size is not None:
                raw = carve_test(raw, self.task, self.test_size, self.split_seed)
            if "validation" not in raw:
                raise UserError(
                    f"task {self.task.name} has no validation set: give task.validation, or carve one from "
                    "train with data.validation_size=0.1"
                )
        if "train" in raw and self.train_subset and self.train_subset < len(raw["train"]):
            # the same examples for every run and seed, so that runs stay comparable
            raw["train"] = raw["train"].shuffle(seed=0).select(range(self.train_subset))
        self.raw = raw
        tokenizer_hash = tokenizer_fingerprint(self.tokenizer)
        self.splits = {
            split: tokenize(dataset, self.task, self.tokenizer, self.max_length, tokenizer_hash)
            for split, dataset in raw.items()
        }

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints: where training stands inside the current epoch (batches done per rank)."""
        if self.trainer is None or not self.trainer.training:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {
            "epoch": self.trainer.current_epoch,
            "batches_done": progress.processed,
            "world_size": self.trainer.world_size,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            self.resume_at = EpochPosition(
                state_dict["epoch"], state_dict["batches_done"], state_dict.get("world_size", 1)
            )

    def eval_splits(self, stage: str) -> list[str]:
        """The evaluation sets of ``stage`` ("validation", "test" or "predict") in loader order:
        ``validation``, then extra ones such as MNLI's ``validation_mm`` (their metrics carry its suffix)."""
        self.setup()
        return [split for split in self.splits if split != "train" and split.startswith(stage)]

    @property
    def test_labelled(self) -> bool:
        """Whether every test set has labels (then training evaluates them)."""
        return all(self.split_labelled(split) for split in self.eval_splits("test"))

    def split_labelled(self, split: str) -> bool:
        self.setup()
        return self.task.all_labelled(self.splits[split]["labels"])

    def submission_splits(self) -> list[str]:
        """The sets a submission file is written for: GLUE's test sets (``predict*`` once validation was
        carved from train and GLUE dev became ``test*``) that have no labels; a ``predict_file`` always."""
        splits = self.eval_splits("predict") or self.eval_splits("test")
        if self.predict_file is not None:
            return splits
        return [split for split in splits if not self.split_labelled(split)]

    def _loader(self, split: str, **batching) -> DataLoader:
        dataset = self.splits[split]
        columns = [column for column in (*MODEL_INPUTS, "labels", "idx") if column in dataset.column_names]
        return DataLoader(
            dataset.select_columns(columns),
            collate_fn=self.collate,
            # a generator of its own: creating an iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            multiprocessing_context=worker_start_method() if self.num_workers > 0 else None,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **batching,
        )

    def replicas(self) -> tuple[int, int]:
        """(world size, global rank): under DDP each rank loads its own share; Lightning's
        ``use_distributed_sampler`` must stay off, or it would shard the shares again."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        num_replicas, rank = self.replicas()
        if not self.group_by_length:
            if num_replicas == 1:
                return self._loader("train", batch_size=self.batch_size, shuffle=True)
            sampler = DistributedSampler(
                self.splits["train"], num_replicas, rank, shuffle=True, seed=self.seed
            )
            return self._loader("train", batch_size=self.batch_size, sampler=sampler)
        lengths = self.splits["train"]["length"]
        sampler = LengthGroupedSampler(
            lengths, self.batch_size, seed=self.seed, num_replicas=num_replicas, rank=rank
        )
        sampler.resume_at, self.resume_at = self.resume_at, None
        return self._loader("train", batch_sampler=GroupedBatches(sampler))

    def _eval_loader(self, split: str) -> DataLoader:
        lengths = self.splits[split]["length"]
        return self._loader(
            split, batch_sampler=SortedBatchSampler(lengths, self.eval_batch_size, *self.replicas())
        )

    def _eval_loaders(self, stage: str) -> DataLoader | list[DataLoader]:
        """One loader per evaluation set of ``stage``; a single set keeps a single loader."""
        loaders = [self._eval_loader(split) for split in self.eval_splits(stage)]
        return loaders[0] if len(loaders) == 1 else loaders

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("validation")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [self._eval_loader(split) for split in self.submission_splits()]
        return loaders[0] if len(loaders) == 1 else loaders
