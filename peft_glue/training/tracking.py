"""Experiment trackers (the ``logger`` group): metrics.csv that survives resumes, W&B and MLflow; a run's
hyperparameters and final results go to every Lightning logger of the run.

``logger=wandb`` (Weights & Biases, offline by default, files under the run folder) and ``logger=mlflow``
(MLflow, a local store under ``outputs/mlruns`` by default) are Lightning's own ``WandbLogger`` and
``MLFlowLogger`` (extras ``peft_glue[wandb]``, ``peft_glue[mlflow]``). During training they get what every
logger gets (loss, learning rate, validation metrics per epoch); at the end of a completed run ``log_run``
gives each logger the resolved config as hyperparameters and the numeric results of results.json as metrics.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.loggers import MLFlowLogger as LightningMLFlowLogger
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from peft_glue.record import RunResults

# numeric fields of results.json that are settings, not results: already in the hyperparameters
NUMERIC_SETTINGS = frozenset({"seed", "batch_size", "max_epochs", "train_subset"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def final_metrics(results: RunResults) -> dict[str, float]:
    """The numeric results of a run record (results.json), flat: ``val/best/<metric>``,
    ``val/last/<metric>``, ``test/<metric>``, and top-level numbers such as ``trainable_params``,
    ``train_samples_per_second`` or ``peak_memory_mb``."""
    metrics: dict[str, float] = {}
    for key, value in results.to_dict().items():
        if _is_number(value) and key not in NUMERIC_SETTINGS:
            metrics[key] = value
    for which, values in (results.val or {}).items():
        for name, value in (values or {}).items():
            if _is_number(value):
                metrics[f"val/{which}/{name}"] = value
    for name, value in (results.test or {}).items():
        if _is_number(value):
            metrics[f"test/{name}"] = value
    return metrics


def hyperparameters(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The run's config, resolved, without Hydra's own node (which a composed config may still hold); an
    Enum value (``scheduler.name``) as its text, as Hydra's config.yaml writes it, so that every tracker
    and hparams.yaml hold plain values."""

    def resolved(value: Any) -> Any:
        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
        return value

    return {key: resolved(config[key]) for key in config if key != "hydra"}


def log_run(loggers: Iterable[Logger], config: DictConfig | Mapping[str, Any], results: RunResults) -> None:
    """Log the resolved config as hyperparameters and the record's ``final_metrics`` to every logger, at the
    run's last step, then close the loggers (a W&B run is finished, so the next job of a multirun starts
    its own). Loggers write on global rank 0 only."""
    params = hyperparameters(config)
    metrics = final_metrics(results)
    last = ((results.val or {}).get("last") or {}).get("step")
    for logger in loggers:
        logger.log_hyperparams(params)
        logger.log_metrics(metrics, step=last)
        logger.save()
        logger.finalize("success")
        if isinstance(logger, LightningWandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger, one W&B run per job. Lightning reuses a W&B run that is still open in the
    process; a job that failed in a multirun leaves its run open (``log_run`` finishes completed ones), so
    this marks that run failed and finishes it before the next job starts its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1)
        super().__init__(*args, **kwargs)


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger. MLflow 3 refuses its file store (a folder such as outputs/mlruns) unless
    ``MLFLOW_ALLOW_FILE_STORE=true``: the file store needs only the light ``mlflow-skinny`` (a database
    store needs the full ``mlflow`` and SQLAlchemy 2), so a ``file:`` tracking URI turns it on (unless the
    variable is set already)."""

    def __init__(self, *args: Any, tracking_uri: str | None = None, **kwargs: Any) -> None:
        if tracking_uri is None or tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().__init__(*args, tracking_uri=tracking_uri, **kwargs)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv (and warns on any non-empty folder, which a
    Hydra run folder always is). A resumed run appends to it instead, so the curves from before the
    interruption are kept; rows the killed attempt logged after its last checkpoint stay too, and readers
    keep the last row of each step (``peft_glue.results.runs.read_metrics``)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger that keeps the metrics of earlier attempts of the same run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
