"""Reading local GLUE TSVs, tokenization caching, length-grouped batching."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler

from peft_glue.errors import UserError
from peft_glue.training import hardware
from peft_glue.training.data import GlueDataModule, load_glue, read_glue_tsv
from peft_glue.training.models import load_tokenizer
from peft_glue.training.samplers import LengthGroupedSampler, SortedBatchSampler
from peft_glue.training.tasks import MRPC, SST2

from .conftest import BOM, SHARED_GLUE, shared_glue, write_tiny_glue


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_bom_and_unbalanced_quotes_are_read_verbatim(tmp_path):
    path = write(
        tmp_path / "train.tsv",
        BOM + "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\tHe said "yes\tShe "agreed" 5 " times\n'
        "0\t3\t4\tnull\tNA\n",
    )
    data = read_glue_tsv(path, MRPC())
    assert data["sentence1"] == ['He said "yes', "null"]
    assert data["sentence2"] == ['She "agreed" 5 " times', "NA"]
    assert data["label"] == [1, 0]
    assert data["idx"] == [0, 1]


def test_unlabelled_test_split_keeps_its_index(tmp_path):
    path = write(tmp_path / "test.tsv", "index\tsentence\n7\tit 's \"fine\n9\tbad\n")
    data = read_glue_tsv(path, SST2())
    assert data["idx"] == [7, 9]
    assert data["label"] == [-1, -1]
    assert data["sentence1"] == ["it 's \"fine", "bad"]


def test_labelled_local_test_split_is_evaluated(tmp_path):
    root = write_tiny_glue(tmp_path)
    dev = (root / "MRPC" / "dev.tsv").read_text(encoding="utf-8")
    (root / "MRPC" / "test.tsv").write_text(dev, encoding="utf-8")  # a test file with a Quality column
    raw = load_glue(MRPC(), root)
    assert min(raw["test"]["label"]) == 0 and max(raw["test"]["label"]) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sentence\tscore\ngood\t1\n", None),  # no label column: read as unlabelled (a test file)
        ("text\tlabel\ngood\t1\n", "lacks the column"),
        ("sentence\tlabel\ngood\t2\n", "label '2' is not 0 or 1"),
        ("sentence\tlabel\ngood\tpositive\n", "is not 0 or 1"),
        ("sentence\tlabel\ngood\t1\textra\tfields\n", "not a well-formed GLUE TSV"),
        # every row is checked: the file, the line, what is wrong, how the row starts
        ("sentence\tlabel\ngood\t1\nbad film\t0\textra\n", r"line 3 has too many .* starts 'bad film"),
        ("sentence\tlabel\ngood\t1\nfine\t1\nbad film\n", r"line 4 has too few .*starts 'bad film'"),
        ("sentence\tlabel\ngood\t1\n \t0\n", r"line 3 has an empty 'sentence'"),
    ],
)
def test_malformed_tsv_is_a_one_line_user_error(tmp_path, text, message):
    path = write(tmp_path / "train.tsv", text)
    if message is None:
        assert read_glue_tsv(path, SST2())["label"] == [-1]
        return
    with pytest.raises(UserError, match=message) as error:
        read_glue_tsv(path, SST2())
    assert "\n" not in str(error.value)


def test_data_dir_without_the_task_files(tmp_path):
    (tmp_path / "SST-2").mkdir()
    with pytest.raises(UserError, match=r"lacks train.tsv, dev.tsv, test.tsv; data.data_dir"):
        load_glue(SST2(), tmp_path)


def test_empty_split(tmp_path):
    root = write_tiny_glue(tmp_path)
    (root / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(UserError, match="dev.tsv has a header but no rows"):
        load_glue(SST2(), root)


def test_hub_unreachable_names_the_offline_route(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="set GLUE_DIR or data.data_dir"):
        load_glue(SST2(), None)


def test_real_glue_files_read_in_full():
    shared_glue()
    mrpc = load_glue(MRPC(), SHARED_GLUE)
    assert {split: len(d) for split, d in mrpc.items()} == {"train": 3668, "validation": 408, "test": 1725}
    assert Counter(mrpc["train"]["label"])[1] == 2474
    assert not mrpc["train"]["sentence1"][0].startswith(BOM)
    sst = load_glue(SST2(), SHARED_GLUE)
    assert {split: len(d) for split, d in sst.items()} == {"train": 67349, "validation": 872, "test": 1821}
    assert Counter(sst["validation"]["label"]) == {1: 444, 0: 428}
    assert set(sst["test"]["label"]) == {-1}


def test_tokenization_is_cached_and_batches_are_padded_dynamically(tiny_bert, tmp_path, caplog):
    root = write_tiny_glue(tmp_path)
    tokenizer = load_tokenizer(str(tiny_bert))

    def setup() -> GlueDataModule:
        datamodule = GlueDataModule(MRPC(), tokenizer, data_dir=str(root), batch_size=4, max_length=16)
        datamodule.setup()
        return datamodule

    with caplog.at_level("INFO", logger="peft_glue.training.data"):
        setup()
        assert "tokenization cache miss" in caplog.text
        caplog.clear()
        datamodule = setup()
        assert "tokenization cache hit" in caplog.text and "miss" not in caplog.text
    assert max(datamodule.splits["train"]["length"]) <= 16
    for batch in datamodule.train_dataloader():
        longest = batch["attention_mask"].sum(1).max()
        assert batch["input_ids"].shape[1] == longest  # padded to the batch's longest, not max_length
    assert not datamodule.test_labelled


def test_sampler_yields_every_example_once_per_epoch():
    lengths = [int(x) for x in torch.randint(1, 60, (1003,))]
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=3, bucket_batches=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(1003))


def test_sampler_batches_are_length_homogeneous():
    lengths = [int(x) for x in torch.randint(1, 200, (4000,))]
    sampler = LengthGroupedSampler(lengths, batch_size=32, seed=0, bucket_batches=50)
    batches = list(BatchSampler(sampler, batch_size=32, drop_last=False))
    assert batches == sampler.batches()  # a plain BatchSampler cuts exactly the grouped batches
    padding = sum(32 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)
    random_batches = [list(range(i, min(i + 32, 4000))) for i in range(0, 4000, 32)]
    random_padding = sum(32 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in random_batches)
    assert padding < random_padding / 10
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # longest batch first


def test_sampler_order_depends_on_seed_and_epoch_only():
    lengths = list(range(500))
    first = list(LengthGroupedSampler(lengths, 8, seed=1))
    assert first == list(LengthGroupedSampler(lengths, 8, seed=1))
    assert first != list(LengthGroupedSampler(lengths, 8, seed=2))
    sampler = LengthGroupedSampler(lengths, 8, seed=1)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_evaluation_batches_cover_all_examples_sorted_by_length():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    batches = list(SortedBatchSampler(lengths, batch_size=3))
    assert sorted(i for b in batches for i in b) == list(range(7))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)


def test_worker_processes_serve_the_same_batches(tiny_bert, tiny_glue):
    """data.num_workers (2 per GPU by default) must not change what is trained on, or in which order."""
    tokenizer = load_tokenizer(str(tiny_bert))

    def epoch(workers: int) -> list[dict]:
        datamodule = GlueDataModule(
            SST2(), tokenizer, data_dir=str(tiny_glue), batch_size=8, num_workers=workers, seed=3
        )
        datamodule.setup()
        return list(datamodule.train_dataloader())

    served, reference = epoch(2), epoch(0)
    assert len(served) == len(reference) > 1
    for batch, expected in zip(served, reference, strict=True):
        assert batch.keys() == expected.keys()
        assert all(torch.equal(batch[key], expected[key]) for key in expected)


@pytest.mark.parametrize(
    ("cuda", "gpus", "cores", "workers"),
    [(False, 0, 8, 0), (True, 1, 8, 2), (True, 4, 8, 1), (True, 8, 8, 0), (True, 1, 1, 0)],
)
def test_dataloader_workers_only_on_gpus_and_leave_a_core_per_gpu(monkeypatch, cuda, gpus, cores, workers):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    assert hardware.dataloader_workers() == workers


@pytest.mark.parametrize(
    ("cuda", "gpu_bf16", "cpu_bf16", "precision"),
    [(True, True, False, "bf16-mixed"), (True, False, True, "32-true"), (False, False, True, "bf16-mixed"),
     (False, False, False, "32-true")],
)  # fmt: skip
def test_default_precision_is_bf16_only_where_the_hardware_runs_it_fast(
    monkeypatch, cuda, gpu_bf16, cpu_bf16, precision
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: gpu_bf16)
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: cpu_bf16)
    assert hardware.best_precision() == precision
