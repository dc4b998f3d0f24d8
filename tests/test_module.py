"""The LightningModule's learning-rate schedule: ``scheduler.name`` picks transformers' schedule, through the
config as a run composes it (``train.data_and_module``), and each step's learning rate is that schedule's."""

from __future__ import annotations

from types import SimpleNamespace

from peft_glue.train import data_and_module
from peft_glue.training.components import assemble
from peft_glue.training.module import GlueClassifier

from .conftest import compose_cfg

PEAK, TOTAL_STEPS, WARMUP_STEPS = 1e-3, 8, 2  # scheduler.warmup_ratio=0.25 of 8 optimizer steps


def module_of(overrides: list[str], tiny_bert, run_dir) -> GlueClassifier:
    """The run's LightningModule as ``python -m peft_glue.train <overrides>`` builds it (BitFit, lr 1e-3)."""
    cfg = compose_cfg(
        [f"model.name_or_path={tiny_bert}", "method=bitfit", f"optimizer.lr={PEAK}", *overrides], run_dir
    )
    return data_and_module(cfg, assemble(cfg))[1]


def learning_rates(module: GlueClassifier, total_steps: int) -> list[float]:
    """The learning rate before each of ``total_steps`` optimizer steps and after the last, read from the
    optimizer as Lightning steps the scheduler (every step); every parameter group has the same one."""
    module._trainer = SimpleNamespace(estimated_stepping_batches=total_steps)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(total_steps + 1):
        group_rates = {group["lr"] for group in optimizer.param_groups}
        assert len(group_rates) == 1, group_rates
        rates.append(group_rates.pop())
        optimizer.step()  # no gradients: no parameter moves, the scheduler only needs the step taken
        scheduler.step()
    return rates


def test_constant_keeps_the_peak_learning_rate_after_the_warmup(tiny_bert, tmp_path):
    """The BitFit authors' code (AdamW, no scheduler): warms up over 2 steps, then optimizer.lr to the end."""
    module = module_of(["scheduler.name=constant", "scheduler.warmup_ratio=0.25"], tiny_bert, tmp_path)
    rates = learning_rates(module, TOTAL_STEPS)
    assert rates == [0.0, PEAK * 0.5] + [PEAK] * (TOTAL_STEPS + 1 - WARMUP_STEPS)


def test_linear_is_the_default_and_decays_to_zero_at_the_last_step(tiny_bert, tmp_path):
    """No scheduler.name: the linear schedule, warmup then (total - step) / (total - warmup) of the peak."""
    module = module_of(["scheduler.warmup_ratio=0.25"], tiny_bert, tmp_path)
    rates = learning_rates(module, TOTAL_STEPS)
    decay = [
        PEAK * ((TOTAL_STEPS - step) / (TOTAL_STEPS - WARMUP_STEPS))
        for step in range(WARMUP_STEPS, TOTAL_STEPS + 1)
    ]
    assert rates == [0.0, PEAK * 0.5, *decay]
    assert rates[WARMUP_STEPS] == PEAK and rates[-1] == 0.0 < min(rates[1:-1])
