"""The project's Hydra config (conf/), composed for a benchmark, and the hyperparameters read from it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from peft_glue.training.config import CONFIG_DIR, register_resolvers


def config_options(group: str) -> list[str]:
    """The options of a config group, e.g. ``task`` -> ["mrpc", "sst2"]."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def override_value(text: str) -> str:
    """A path or other text as a Hydra override value, quoted if it holds characters Hydra parses (=,)."""
    if re.fullmatch(r"[\w/.+@~-]+", text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """conf/config.yaml with ``overrides`` (e.g. ``model=minilm task=sst2 method=lora``), as
    `python -m peft_glue.train <overrides>` composes it."""
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@dataclass(frozen=True)
class Hyperparameters:
    """What the framework trains with, from the composed config; the baselines use the same values."""

    learning_rate: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    warmup_ratio: float
    max_length: int
    lora: dict[str, Any] | None  # r, alpha, dropout, target_modules; None for the other methods

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Hyperparameters:
        method = instantiate(cfg.method, _convert_="all")
        lora = None
        if method.name == "lora":
            lora = {
                "r": method.r,
                "alpha": method.alpha,
                "dropout": method.dropout,
                "target_modules": list(method.target_modules),
            }
        optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
        beta1, beta2 = optimizer["betas"]
        return cls(
            learning_rate=float(optimizer["lr"]),
            weight_decay=float(optimizer["weight_decay"]),
            betas=(float(beta1), float(beta2)),
            eps=float(optimizer["eps"]),
            warmup_ratio=float(cfg.scheduler.warmup_ratio),
            max_length=int(cfg.data.max_length),
            lora=lora,
        )
