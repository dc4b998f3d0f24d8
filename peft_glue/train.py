"""Fine-tune an encoder on a GLUE task with a (parameter-efficient) method: ``train`` is the whole flow of
a run, ``run`` the Hydra job around it (the crash-safe run record), ``main`` the command line.

python -m peft_glue.train method=bitfit task=sst2
python -m peft_glue.train -m method=lora method.r=1,4,16
python -m peft_glue.train trainer=ddp                                 # Lightning DDP on all GPUs
python -m peft_glue.train -m hydra/launcher=joblib hydra.launcher.n_jobs=2 method.r=1,4
python -m peft_glue.train -m hparams_search=lora_optuna               # Optuna: lr and r on validation
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, TQDMProgressBar
from torch import nn

from peft_glue.errors import UserError, exit_with
from peft_glue.record import COMPLETED, DRY_RUN, FAILED, Provenance, RunRecord, RunResults, read_results
from peft_glue.results.card import write_cards
from peft_glue.training.artifacts import export_trained, per_split, write_submissions
from peft_glue.training.best_checkpoint import restore_best
from peft_glue.training.callbacks import TrainThroughput
from peft_glue.training.compiled_step import CompileClock
from peft_glue.training.components import Components, assemble
from peft_glue.training.config import check_command_line, register_resolvers
from peft_glue.training.config_paths import CONFIG_PATH
from peft_glue.training.cpu_dropout import use_cpu_dropout
from peft_glue.training.data import GlueDataModule
from peft_glue.training.devices import asked_devices, device_of, place_job, reserved_cpus
from peft_glue.training.distributed import (
    check_strategy,
    gather_predictions,
    job_scope,
    launch_ranks_as_this_job,
    share_cores,
)
from peft_glue.training.frozen_bf16 import restore_fp32, store_frozen_in_bf16, wants_frozen_bf16
from peft_glue.training.hardware import peak_memory_mb, reset_peak_memory
from peft_glue.training.init_from import SWEEP, in_this_sweep, initialise_from
from peft_glue.training.methods import Method
from peft_glue.training.models import check_max_length, parameter_summary
from peft_glue.training.module import GlueClassifier
from peft_glue.training.provenance import provenance
from peft_glue.training.resume import (
    RestoreRandomState,
    RunIdentity,
    check_checkpoint,
    checkpoint_to_resume,
    expand_resume,
    resume_source,
)
from peft_glue.training.schema import check_ranges
from peft_glue.training.splits import split_summary
from peft_glue.training.tracking import log_run

log = logging.getLogger("peft_glue")

KNOWN_NOISE = [  # warnings of our dependencies that say nothing to a user of peft_glue
    r"`is_gradient_checkpointing` is deprecated",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"You are using a custom batch sampler `SortedBatchSampler`",  # it does return every index
    r"Metric `SpearmanCorrcoef` will save all targets",  # GLUE validation sets are small
    r"\s*'hydra/launcher/ray' is validated against ConfigStore schema",  # conf/hydra/launcher/ray.yaml: meant
]


def train(cfg: DictConfig, record: RunRecord) -> GlueClassifier | None:
    """One run: build, (resume and) fit, pick the best epoch, test it once, export, predict, record."""
    record.save(**settings_of(cfg))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    reset_peak_memory()  # this job's peak, not that of an earlier job in the same worker process
    check_ranges(cfg)  # done before any job by the pre-flight check too; here for train() called directly
    checkpoint = checkpoint_to_resume(cfg.resume, record.folder, Path(cfg.checkpoint.dirpath))
    identity = RunIdentity(record.results.method_name, record.results.model)
    if checkpoint:  # before anything loads: a wrong file is one line, not a model download
        check_checkpoint(checkpoint, **identity.identity)
    parts = assemble(cfg)
    task, method, model = parts.task, parts.method, parts.model
    if cfg.merge:
        method.check_mergeable()
    method.check_precision(model, str(cfg.trainer.precision))
    if cfg.cpu_dropout:
        use_cpu_dropout(model)
    check_max_length(model, cfg.data.max_length)
    if cfg.init_from and cfg.dry_run:  # a dry run builds the model only: no source run is needed yet
        record.save(init_from={"requested": str(cfg.init_from), "head": "not loaded (dry run)"})
    elif source := source_path(cfg, record):
        record.save(init_from=initialise_from(source, method, model, task))
    summary = parameter_summary(model)
    log.info("%s on %s: %s", method.name, task.name, summary)
    record.save(
        provenance=run_provenance(cfg, parts),
        task_info=task.info(),
        method_info=method.info(),
        **summary,
        adapted_modules=method.adapted_modules(model),
        adaptation_notes=method.notes,
    )
    if cfg.dry_run:
        return record.save(status=DRY_RUN)  # None: nothing trained

    fp32_originals = store_frozen_weights(cfg, model, method, record)  # put back after training
    datamodule, module = data_and_module(cfg, parts)
    throughput = TrainThroughput()
    trainer = build_trainer(cfg, [*callbacks(cfg, throughput), identity])
    record.writes = trainer.is_global_zero  # results, exports and submission files: written once, by rank 0
    record.save(resumed_from=str(checkpoint) if checkpoint else None)
    with CompileClock() as compiling:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    compiled = module.compiled_model is not None
    restore_fp32(model, fp32_originals)  # exports, merges, test and predict: the fp32 model, as without it
    history = module.val_history
    record.save(
        val={"best": best_epoch(history, task.monitor), "last": history[-1]} if history else None,
        val_history=history,
        best_checkpoint=restore_best(trainer, module),  # export, test and predict with the picked epoch
        splits=split_summary(
            datamodule.splits,
            cfg.data.validation_size,
            cfg.data.split_seed,
            cfg.data.test_size,
            task.given_splits,
        ),
        train_seconds=round(throughput.seconds, 2),
        train_samples=throughput.samples,  # all ranks together
        train_samples_per_second=throughput.samples_per_second,
        train_epoch_samples_per_second=throughput.epoch_samples_per_second,
        compile=compiled,  # set, or chosen by the run's length (compiled_step.py)
        compile_seconds=round(compiling.seconds, 2) if compiled else None,
        exports=export_trained(method, model, parts.tokenizer, record.folder, cfg.merge)
        if record.writes
        else None,
    )
    record.save(test=score_test_split(trainer, module, datamodule))
    if cfg.submission:
        record.save(predictions=predict_test_sets(trainer, module, datamodule, record))
    record.save(
        status=COMPLETED,
        peak_memory_mb=peak_memory_mb(),
        threads=torch.get_num_threads(),
        **device_of(module.device),  # device, visible_devices: which GPU a job of a sweep took
    )
    if record.writes:  # the results are final: each export folder's model card (README.md)
        write_cards(record.folder, record.results)
    log_run(trainer.loggers, cfg, record.results)  # the config and the final results to every logger
    return module


def source_path(cfg: DictConfig, record: RunRecord) -> str | None:
    """``init_from`` as a folder: ``sweep:<task>`` is the run of that task in this job's sweep, and None for
    that task's own job (it starts from the pretrained model)."""
    if not cfg.init_from:
        return None
    if str(cfg.init_from).startswith(SWEEP):
        if cfg.init_from.removeprefix(SWEEP) == record.results.task:
            return None
        return str(in_this_sweep(cfg.init_from, record.folder, cfg.seed, record.results.model))
    return str(cfg.init_from)


def run_provenance(cfg: DictConfig, parts: Components) -> Provenance:
    """Code, libraries, hardware, precision, base model and (unless a dry run, which reads none) data."""
    return provenance(
        parts.model_config,
        getattr(parts.model, "config", None),
        cfg.trainer.precision,
        None if cfg.dry_run else parts.task,
        cfg.data.data_dir,
    )


def store_frozen_weights(cfg: DictConfig, model: nn.Module, method: Method, record: RunRecord) -> dict:
    """Under bf16-mixed, the frozen linear weights stored in bf16 once instead of cast at every step (the
    same training, bit for bit); returns their fp32 originals, which ``restore_fp32`` puts back."""
    frozen_bf16 = wants_frozen_bf16(cfg.frozen_bf16, cfg.trainer.precision, model, method.frozen_bf16_exact())
    record.save(frozen_bf16=frozen_bf16)
    return store_frozen_in_bf16(model) if frozen_bf16 else {}


def data_and_module(cfg: DictConfig, parts: Components) -> tuple[GlueDataModule, GlueClassifier]:
    """The run's data and its LightningModule."""
    datamodule = GlueDataModule(
        parts.task,
        parts.tokenizer,
        seed=cfg.seed,
        virtual_tokens=parts.method.virtual_tokens,
        **cfg.data,
    )
    module = GlueClassifier(
        parts.model,
        parts.task,
        **cfg.optimizer,
        warmup_ratio=cfg.scheduler.warmup_ratio,
        schedule=cfg.scheduler.name,
        method=parts.method,
        compile=cfg.compile,
    )
    return datamodule, module


def settings_of(cfg: DictConfig) -> dict:
    """What results.json records of the config besides the run's identity (task, method, model, seed)."""
    return {
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "batch_size": cfg.data.batch_size,
        "train_subset": cfg.data.train_subset,
        "validation_size": cfg.data.validation_size,
        "test_size": cfg.data.test_size,
        "max_epochs": cfg.trainer.max_epochs,
        "precision": cfg.trainer.precision,
        "devices": asked_devices(cfg.trainer),  # [N]: the GPU a sweep gave the job
        "model_name_or_path": cfg.model.name_or_path,
        "data_dir": cfg.data.data_dir,
    }


def build_trainer(cfg: DictConfig, chosen_callbacks: list[pl.Callback]) -> pl.Trainer:
    """Lightning's Trainer of ``cfg.trainer`` with the run's loggers; with trainer=ddp, the other ranks
    are launched here and run this same job, in its folder."""
    launch_ranks_as_this_job()
    trainer = pl.Trainer(
        **cfg.trainer,
        logger=[instantiate(logger) for logger in cfg.logger.values()] if cfg.logger else False,
        callbacks=chosen_callbacks,
    )
    check_strategy(str(cfg.trainer.strategy), cfg.trainer.use_distributed_sampler, trainer.world_size)
    return trainer


def score_test_split(trainer: pl.Trainer, module: GlueClassifier, datamodule: GlueDataModule) -> dict | None:
    """The test split's metrics (GLUE dev when validation was carved from train), evaluated once, here;
    None when the test split has no labels."""
    if not datamodule.test_labelled:
        return None
    per_loader = trainer.test(module, datamodule=datamodule, verbose=False)  # MNLI: matched, mismatched
    test = {key: value for results in per_loader for key, value in results.items()}
    return {key.removeprefix("test/"): value for key, value in test.items()}


def predict_test_sets(
    trainer: pl.Trainer, module: GlueClassifier, datamodule: GlueDataModule, record: RunRecord
) -> list[str] | None:
    """GLUE's unlabelled test sets predicted into submission files (written by rank 0); their paths."""
    splits = datamodule.submission_splits()
    if not splits:
        return None
    predicted = per_split(trainer.predict(module, datamodule=datamodule), splits)
    predictions = {split: gather_predictions(batches) for split, batches in predicted.items()}
    task = datamodule.task
    if record.writes:
        write_submissions(record.folder, task, predictions, datamodule.raw)
    return [str(record.folder / task.submission_file_of(split)) for split in splits]


def best_epoch(history: list[dict[str, float]], monitor: str) -> dict[str, float]:
    """The epoch with the highest ``monitor`` (every GLUE metric grows with quality); a NaN one (e.g. a
    correlation of constant predictions) never wins over a number."""
    return max(history, key=lambda m: (not math.isnan(m[monitor]), m[monitor]))


def callbacks(cfg: DictConfig, throughput: TrainThroughput) -> list[pl.Callback]:
    chosen = [LearningRateMonitor(logging_interval="step"), throughput, RestoreRandomState()]
    if cfg.trainer.enable_checkpointing:
        chosen += [instantiate(cfg.checkpoint), instantiate(cfg.best_checkpoint)]  # last (resume), best
    chosen += [instantiate(callback) for callback in (cfg.get("callbacks") or {}).values()]  # e.g. early stop
    if cfg.trainer.enable_progress_bar is not False:
        # the bar reads the logged loss from the device when it redraws: every N steps, not at every step
        chosen.append(TQDMProgressBar(refresh_rate=cfg.trainer.log_every_n_steps))
    return chosen


def objective(results: RunResults | None) -> float:
    """What a job returns to Hydra, for hyperparameter search (the Optuna sweeper maximises it): the best
    validation value of the task's monitor metric; NaN when the job failed or never validated, which the
    Optuna sweeper records as a failed trial."""
    return results.monitor_value if results is not None else math.nan


def setup_process() -> None:
    """Per process: quiet known warnings and register our resolvers, also in a launcher's worker processes
    (joblib), which run ``run`` without ``main``."""
    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)
    register_resolvers()


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> float:
    """One job: train, record the outcome in results.json whatever happens, return the ``objective``."""
    setup_process()
    hydra_cfg = HydraConfig.get()
    method_hparams = OmegaConf.to_container(cfg.method, resolve=True)
    method_hparams.pop("_target_")
    record = RunRecord(
        hydra_cfg.runtime.output_dir,
        task=hydra_cfg.runtime.choices.task,
        method={"name": hydra_cfg.runtime.choices.method, **method_hparams},  # as asked, before building
        model=hydra_cfg.runtime.choices.model,
        seed=cfg.seed,
        overrides=list(hydra_cfg.overrides.task),
    )
    in_multirun = hydra_cfg.mode == RunMode.MULTIRUN
    previous = read_results(record.folder)
    if resume_source(cfg.resume) is not None and previous is not None and previous.status == COMPLETED:
        log.info("%s already completed; nothing to resume", record.folder)
        return objective(previous)
    with job_scope():
        try:
            # parallel jobs of a launcher (joblib's n_jobs) share the cores instead of oversubscribing them;
            # a job that asked for cores (resources.num_cpus, Ray's reservation) uses as many threads
            launcher = hydra_cfg.launcher if in_multirun else None
            cpus = reserved_cpus(cfg.get("resources"), launcher)
            share_cores(cfg.threads, launcher.get("n_jobs") if launcher else None, cpus)
            place_job(cfg, hydra_cfg.job.num if in_multirun else None)  # parallel jobs: a GPU each
            train(cfg, record)
        except UserError as error:
            record.save(status=FAILED, error=str(error))
            if not in_multirun:
                exit_with(str(error))
            log.error("job failed: %s", error)
        except Exception as error:
            record.save(status=FAILED, error=f"{type(error).__name__}: {error}")
            if not in_multirun:
                raise
            log.exception("job failed")
    return objective(record.results)


def main() -> None:
    setup_process()
    sys.argv[1:] = expand_resume(sys.argv[1:])
    check_command_line(sys.argv[1:])
    run()


if __name__ == "__main__":
    main()
