"""The framework's model, method and training batches for the step benchmarks (profile_step, compile_step),
built from the composed config as `python -m peft_glue.train model=minilm` builds them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmarks.hydra_config import Hyperparameters, compose_config, override_value
from benchmarks.options import add_training_options
from peft_glue.training.components import assemble
from peft_glue.training.cpu_dropout import use_cpu_dropout
from peft_glue.training.data import GlueDataModule
from peft_glue.training.frozen_bf16 import BF16_MIXED, store_frozen_in_bf16, wants_frozen_bf16
from peft_glue.training.models import load_tokenizer
from peft_glue.training.module import GlueClassifier
from peft_glue.training.tasks import GlueTask


def step_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """The options of the step benchmarks."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_training_options(parser)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--torch-dropout", action="store_true", help="torch's dropout (cpu_dropout=false)")
    parser.add_argument(
        "--precision",
        default=None,
        help="trainer.precision: bf16-mixed or 32-true (default: the framework's)",
    )
    parser.add_argument(
        "--no-frozen-bf16",
        action="store_true",
        help="frozen weights in fp32, cast every step (frozen_bf16=false)",
    )
    return parser


@dataclass
class FrameworkStep:
    """The composed config, its task and hyperparameters, and the framework's data module (set up)."""

    cfg: DictConfig
    task: GlueTask
    hparams: Hyperparameters
    data: GlueDataModule

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FrameworkStep:
        cfg = compose_config(
            [
                "model=minilm",
                f"task={args.task}",
                f"method={args.method}",
                f"data.batch_size={args.batch_size}",
                f"data.data_dir={override_value(str(args.glue_dir))}",
                f"cpu_dropout={'false' if args.torch_dropout else 'true'}",
                f"frozen_bf16={'false' if args.no_frozen_bf16 else 'true'}",
                *([f"trainer.precision={args.precision}"] if args.precision else []),
            ]
        )
        task = instantiate(cfg.task)
        tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
        data = GlueDataModule(task, tokenizer, seed=cfg.seed, **cfg.data)
        data.setup()
        return cls(cfg, task, Hyperparameters.from_config(cfg), data)

    @property
    def bf16(self) -> bool:
        """Whether the step runs under bf16 autocast (``trainer.precision=bf16-mixed``)."""
        return str(self.cfg.trainer.precision) in BF16_MIXED

    def new_module(self, frozen_bf16: bool | None = None) -> GlueClassifier:
        """A fresh classifier with the method applied, the configured dropout (`cpu_dropout`) and, under
        bf16-mixed, the frozen weights in bf16 (`frozen_bf16`, or the argument), in the framework's
        LightningModule: ``module(batch)`` gives the logits."""
        parts = assemble(self.cfg)  # as training builds it
        model = parts.model
        if self.cfg.cpu_dropout:
            use_cpu_dropout(model)
        exact = parts.method.frozen_bf16_exact()
        wanted = self.cfg.frozen_bf16 if frozen_bf16 is None else frozen_bf16
        if wants_frozen_bf16(wanted, self.cfg.trainer.precision, model, exact):
            store_frozen_in_bf16(model)
        return GlueClassifier(model, self.task, **self.cfg.optimizer, warmup_ratio=self.hparams.warmup_ratio)

    def new_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters, with the configured learning rate, betas and eps."""
        hp = self.hparams
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            trainable, lr=hp.learning_rate, betas=hp.betas, eps=hp.eps, weight_decay=hp.weight_decay
        )


def train_step(
    module: GlueClassifier,
    run: torch.nn.Module,
    batch: dict,
    bf16: bool,
    optimizer: torch.optim.Optimizer | None,
) -> None:
    """One training step of ``run`` (``module.model`` or its compiled form) on ``batch``: forward under bf16
    autocast or not, cross-entropy, backward and, given an ``optimizer``, its step."""
    inputs = {key: batch[key] for key in module.model_inputs if key in batch}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = run(**inputs).logits
    torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
