"""Provenance: every results.json and model card says which code, libraries, hardware, data and base model
produced the run, with values checked against the imported modules and the files' real sha256; the report
lists the environments and warns when the runs of one task differ."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import datasets
import hydra
import peft
import pytorch_lightning
import torch
import transformers

from peft_glue.record import ADAPTER_DIR, RunRecord
from peft_glue.report import write_report
from peft_glue.results.card import card_text
from peft_glue.train import train

from .conftest import REPO, compose_cfg, tiny_overrides
from .test_report import section, table_rows, write_run

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def test_a_run_records_the_versions_hardware_and_fingerprints_it_ran_with(tiny_bert, tiny_glue, tmp_path):
    overrides = [
        "method=lora",
        *tiny_overrides(tiny_bert, tiny_glue),
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
        "data.train_subset=8",
        "submission=false",
    ]
    record = RunRecord(tmp_path)
    train(compose_cfg(overrides, tmp_path), record)
    found = record.results.provenance
    assert found.libraries == {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "lightning": pytorch_lightning.__version__,
        "datasets": datasets.__version__,
        "hydra": hydra.__version__,
    }
    assert found.data == {
        f"MRPC/{name}.tsv": sha256(tiny_glue / "MRPC" / f"{name}.tsv") for name in ("train", "dev", "test")
    }
    # a local folder that is no copy of bert-base-uncased (another architecture): no Hub id, weights' sha256
    assert found.base_model["hub_id"] is None
    assert found.base_model["weights_sha256"] == {
        "model.safetensors": sha256(tiny_bert / "model.safetensors")
    }
    assert found.git_commit == git("rev-parse", "HEAD").strip()
    assert found.git_dirty == bool(git("status", "--porcelain").strip())
    assert found.hardware["cpu_cores"] == os.cpu_count()
    assert found.hardware["gpu_count"] == torch.cuda.device_count()
    assert found.precision == record.results.precision
    card = card_text(record.results, tmp_path, ADAPTER_DIR, tmp_path / ADAPTER_DIR)
    assert f"torch {torch.__version__}" in card and found.data["MRPC/train.tsv"] in card


def test_minilm_is_named_by_its_hub_id_not_the_packages_folder(tmp_path):
    overrides = ["model=minilm", "method=lora", "dry_run=true"]
    record = RunRecord(tmp_path)
    train(compose_cfg(overrides, tmp_path), record)
    base = record.results.provenance.base_model
    assert base["hub_id"] == MINILM_HUB_ID
    package_folder = Path(base["path"])
    assert base["weights_sha256"] == {"model.safetensors": sha256(package_folder / "model.safetensors")}
    card = card_text(record.results, tmp_path, ADAPTER_DIR, tmp_path / ADAPTER_DIR)
    assert f"base_model: {MINILM_HUB_ID}" in card
    assert f'from_pretrained(\n    "{MINILM_HUB_ID}"' in card  # the load snippet downloads it by its Hub id
    assert str(package_folder) not in card.split("## Provenance")[0]  # only provenance says where it was


def provenance_of(torch_version: str, train_sha: str, commit: str = "a" * 40) -> dict:
    return {
        "provenance": {
            "peft_glue": "0.1.0",
            "git_commit": commit,
            "git_dirty": False,
            "libraries": {"python": "3.11.9", "torch": torch_version, "peft": "0.21.2"},
            "hardware": {"cpu": "Some CPU", "cpu_cores": 2, "gpu": None, "gpu_count": 0, "cuda": None},
            "precision": "32-true",
            "data": {"MRPC/train.tsv": train_sha, "MRPC/dev.tsv": "d" * 64},
            "base_model": {"hub_id": MINILM_HUB_ID},
        }
    }


def test_the_report_lists_environments_and_warns_when_a_tasks_runs_differ(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, "0", seed=1, **provenance_of("2.13.0", "1" * 64))
    write_run(root, "1", seed=2, **provenance_of("2.13.0", "1" * 64))
    write_run(root, "2", seed=3, **provenance_of("2.12.0", "2" * 64))
    write_run(
        root,
        "3",
        task="sst2",
        method={"name": "bitfit", "lr": 1e-3},
        f1=None,
        **provenance_of("2.13.0", "1" * 64),
    )
    report = write_report([root], tmp_path / "report", aso_iterations=0).read_text()
    text = section(report, "Environments")
    rows = table_rows(text)
    assert [(row[1].split(", ")[1], row[-2], row[-1]) for row in rows] == [
        ("torch 2.13.0", "3", "mrpc, sst2"),
        ("torch 2.12.0", "1", "mrpc"),
    ]
    assert rows[0][0] == "0.1.0 @ aaaaaaaa"
    warnings = [line for line in text.splitlines() if line.startswith("**Warning**")]
    assert warnings == [
        "**Warning** (mrpc): its runs differ in libraries.torch (2.12.0 vs 2.13.0); "
        "data.MRPC/train.tsv (111111111111 vs 222222222222)."
    ]
