"""logger=wandb and logger=mlflow: offline, and the final results of results.json reach each tracker."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from peft_glue.record import RunResults
from peft_glue.training.tracking import final_metrics
from tests.conftest import compose_cfg, run_cli, tiny_overrides


def tracker_env(tmp_path: Path) -> dict[str, str]:
    """Keep W&B's and MLflow's own settings and caches out of the user's home, and never go online."""
    return {
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_MODE": "offline",
    }


def read_wandb_records(path: Path) -> list:
    """The records of an offline run's ``.wandb`` file, as W&B's protobuf ``Record``s: the file is a LevelDB
    log (a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, header = 32768, 7
    pos, pending, records = 7, b"", []
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + header : pos + header + length]
        pos += header + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first start a record
        if kind in (1, 4):  # full/last end it
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(folder: Path) -> tuple[dict, dict]:
    """The config and the latest value of each history key of the one offline W&B run in a run folder."""
    [log] = sorted((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    config, history = {}, {}

    def key(item) -> str:  # W&B keeps a key with a "/" (val/best/accuracy) as its parts
        return item.key or "/".join(item.nested_key)

    for record in read_wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({key(item): json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.update({key(item): json.loads(item.value_json) for item in record.history.item})
    return config, history


def test_final_metrics_are_the_flat_numbers_of_results_json():
    record = {
        "status": "completed",
        "seed": 42,
        "batch_size": 16,
        "trainable_params": 1090,
        "trainable_percent": 4.8,
        "train_samples_per_second": 29.1,
        "val": {"best": {"epoch": 1, "accuracy": 0.75}, "last": {"epoch": 1, "accuracy": 0.75}},
        "val_history": [{"epoch": 0, "accuracy": 0.5}],
        "test": {"accuracy": 0.7, "f1": 0.8},
        "method": {"name": "lora", "r": 8},
        "merge_flag": True,
    }
    assert final_metrics(RunResults.from_dict(record)) == {
        "trainable_params": 1090,
        "trainable_percent": 4.8,
        "train_samples_per_second": 29.1,
        "val/best/epoch": 1,
        "val/best/accuracy": 0.75,
        "val/last/epoch": 1,
        "val/last/accuracy": 0.75,
        "test/accuracy": 0.7,
        "test/f1": 0.8,
    }
    assert final_metrics(RunResults(val=None, test=None)) == {}


def test_wandb_offline_runs_in_each_job_folder_hold_config_and_final_metrics(tiny_bert, tiny_glue, tmp_path):
    pytest.importorskip("wandb")
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *tiny_overrides(tiny_bert, tiny_glue),
        "trainer.max_epochs=1",
        "logger=[csv,wandb]",
        "optimizer.lr=1e-3,2e-3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=tracker_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(folder for folder in sweep.iterdir() if (folder / "results.json").is_file())
    assert len(jobs) == 2
    for job, lr in zip(jobs, (1e-3, 2e-3), strict=True):
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "completed"
        # one W&B run per job, in the job's folder (not the first job's run reused)
        config, history = wandb_run(job)
        assert config["optimizer"]["lr"] == lr
        assert config["method"]["_target_"] == "peft_glue.training.methods.LoRA"
        assert history["val/best/accuracy"] == results["val"]["best"]["accuracy"]
        assert history["val/last/f1"] == results["val"]["last"]["f1"]
        assert history["trainable_params"] == results["trainable_params"]
        assert history["train_samples_per_second"] == results["train_samples_per_second"]
        assert (job / "metrics.csv").is_file()  # the csv logger still there


def test_mlflow_local_store_holds_params_and_final_metrics(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    result = run_cli(
        *tiny_overrides(tiny_bert, tiny_glue),
        "task=sst2",
        "method=bitfit",
        "trainer.max_epochs=1",
        "logger=mlflow",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env=tracker_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores without it
    store = tmp_path / "outputs" / "mlruns"  # the default: outputs/mlruns of the folder the command ran in
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("peft_glue")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sst2_bitfit"
    metrics, params = run.data.metrics, run.data.params
    assert metrics["val/best/accuracy"] == results["val"]["best"]["accuracy"]
    assert metrics["trainable_params"] == results["trainable_params"]
    assert metrics["train_samples_per_second"] == results["train_samples_per_second"]
    assert float(params["optimizer/lr"]) == results["optimizer"]["lr"]
    assert params["task/_target_"] == "peft_glue.training.tasks.SST2"
    assert "val/accuracy" in metrics  # what Lightning logs during training reaches MLflow too


def test_hyperparameters_are_the_resolved_config_without_hydra(tmp_path):
    from peft_glue.training.tracking import hyperparameters

    cfg = compose_cfg(["method=lora", "optimizer.lr=0.002"], tmp_path / "run")
    params = hyperparameters(cfg)  # composed in-process, the config still holds Hydra's own node
    assert "hydra" not in params and "hydra" in cfg
    assert params["optimizer"]["lr"] == 0.002
    assert params["checkpoint"]["dirpath"] == str(tmp_path / "run" / "checkpoints")  # resolved
    assert type(params["scheduler"]["name"]) is str and params["scheduler"]["name"] == "linear"  # not an Enum
    assert yaml.safe_load(yaml.safe_dump(params))["scheduler"] == {"name": "linear", "warmup_ratio": 0.0}
