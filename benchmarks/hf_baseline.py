"""The transformers.Trainer + peft baselines (b), (c), (c'): a hand-built classifier and one timed run."""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.glue_slice import Slice
from benchmarks.hydra_config import Hyperparameters
from benchmarks.variants import Variant
from peft_glue.training.callbacks import wait_for_gpu


def build_baseline_model(path: str, method: str, num_labels: int, lora: dict[str, Any] | None) -> Any:
    """The same classifier and method as the framework, built with transformers and peft directly."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from peft_glue.training.roles import resolve

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    if method == "lora":
        assert lora is not None
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            # the config's roles (query, value, ...) as this family's module names, as the framework does
            target_modules=resolve(model, lora["target_modules"], "target_modules").names,
        )
        return get_peft_model(model, config)
    if method == "bitfit":
        backbone = f"{model.base_model_prefix}."
        for name, param in model.named_parameters():
            param.requires_grad = name.endswith(".bias") or not name.startswith(backbone)
    return model


class ShapeRecorder:
    """Wraps a collator and records (batch size, padded length) of every batch: the work actually done."""

    def __init__(self, collate: Callable[[list[dict]], dict]):
        self.collate = collate
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collate(features)
        count, length = batch["input_ids"].shape
        self.shapes.append((int(count), int(length)))
        return batch


def train_baseline(
    variant: Variant,
    data: Slice,
    model_path: str,
    method: str,
    num_labels: int,
    hparams: Hyperparameters,
    batch_size: int,
    seed: int,
    epochs: int = 1,
) -> dict:
    """One timed transformers.Trainer run over ``data``; the timer spans on_train_begin..on_train_end, as the
    framework's callback spans on_train_start..on_train_end (dataloader and optimizer setup outside, first
    steps in)."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    padding = "max_length" if variant.padded else False
    encoded = tokenizer(*data.texts, truncation=True, max_length=hparams.max_length, padding=padding)
    train_set = Dataset.from_dict({**encoded, "labels": data.labels})
    model = build_baseline_model(model_path, method, num_labels, hparams.lora)
    collator = ShapeRecorder(default_data_collator if variant.padded else DataCollatorWithPadding(tokenizer))

    class Timer(TrainerCallback):
        """The training loop's seconds, and the last epoch's."""

        start = end = epoch_start = epoch_seconds = 0.0

        def on_train_begin(self, *_: Any, **__: Any) -> None:
            self.start = time.perf_counter()

        def on_epoch_begin(self, *_: Any, **__: Any) -> None:
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, *_: Any, **__: Any) -> None:
            wait_for_gpu()
            self.epoch_seconds = time.perf_counter() - self.epoch_start

        def on_train_end(self, *_: Any, **__: Any) -> None:
            wait_for_gpu()
            self.end = time.perf_counter()

    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="bench_hf_") as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=hparams.learning_rate,
            # Trainer, like the framework, spares biases and LayerNorm weights from weight decay
            weight_decay=hparams.weight_decay,
            adam_beta1=hparams.betas[0],
            adam_beta2=hparams.betas[1],
            adam_epsilon=hparams.eps,
            lr_scheduler_type="linear",
            warmup_steps=hparams.warmup_ratio,  # a float in [0, 1) is a ratio of the training steps
            optim="adamw_torch",  # torch.optim.AdamW, the framework's optimizer
            train_sampling_strategy="random" if variant.padded else "group_by_length",
            bf16=variant.bf16,
            use_cpu=not cuda,
            seed=seed,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            label_names=["labels"],
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        metrics = trainer.train().metrics
    seconds = timer.end - timer.start
    samples = sum(count for count, _ in collator.shapes)
    epoch_shapes = collator.shapes[: len(collator.shapes) // epochs]  # every epoch batches alike
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {
        "samples": samples,
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "steady_samples_per_second": len(data) / timer.epoch_seconds if epochs > 1 else None,
        "trainer_samples_per_second": metrics.get("train_samples_per_second"),
        "train_loss": metrics.get("train_loss"),
        "precision": "bf16 autocast" if variant.bf16 else "fp32",
        "peak_memory_mb": cuda_mb if cuda_mb else rss_mb,
        "peak_rss_mb": rss_mb,
        "batch_shapes": epoch_shapes,
        "slice_fingerprint": data.fingerprint(),
    }
