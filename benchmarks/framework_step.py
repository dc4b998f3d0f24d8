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
from peft_glue.training.models import load_tokenizer
from peft_glue.training.module import GlueClassifier
from peft_glue.training.tasks import GlueTask


def step_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """The options of the step benchmarks."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_training_options(parser)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--torch-dropout", action="store_true", help="torch's dropout (cpu_dropout=false)")
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
            ]
        )
        task = instantiate(cfg.task)
        tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
        data = GlueDataModule(task, tokenizer, seed=cfg.seed, **cfg.data)
        data.setup()
        return cls(cfg, task, Hyperparameters.from_config(cfg), data)

    def new_module(self) -> GlueClassifier:
        """A fresh classifier with the method applied and the configured dropout (`cpu_dropout`), in the
        framework's LightningModule: ``module(batch)`` gives the logits."""
        model = assemble(self.cfg).model  # as training builds it
        if self.cfg.cpu_dropout:
            use_cpu_dropout(model)
        return GlueClassifier(model, self.task, **self.cfg.optimizer, warmup_ratio=self.hparams.warmup_ratio)

    def new_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters, with the configured learning rate, betas and eps."""
        hp = self.hparams
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            trainable, lr=hp.learning_rate, betas=hp.betas, eps=hp.eps, weight_decay=hp.weight_decay
        )
