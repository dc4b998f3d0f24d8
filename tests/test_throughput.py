"""The training throughput a run records: whole, and steady (after the warm-up steps)."""

from types import SimpleNamespace

import pytest
import torch

from peft_glue.training import callbacks
from peft_glue.training.callbacks import TrainThroughput


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def single_process() -> tuple[SimpleNamespace, SimpleNamespace]:
    strategy = SimpleNamespace(reduce=lambda tensor, reduce_op: tensor)
    return SimpleNamespace(strategy=strategy), SimpleNamespace(device=torch.device("cpu"))


def test_steady_throughput_leaves_out_the_warm_up_steps_and_validation(monkeypatch):
    """12 steps of 32 examples but the last of 8; the first step takes 5 s (compiling), the others 0.5 s,
    and a 2 s validation falls after step 11: steady = the 2 steps after the 10 warm-up ones, 40 examples
    in 1 s of training."""
    clock = FakeClock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    trainer, module = single_process()
    throughput = TrainThroughput()
    throughput.on_train_start(trainer, module)
    for step in range(12):
        clock.now += 5.0 if step == 0 else 0.5
        throughput.on_train_batch_end(
            trainer, module, None, {"labels": [0] * (8 if step == 11 else 32)}, step
        )
        if step == 10:
            throughput.on_validation_start(trainer, module)
            clock.now += 2.0
            throughput.on_validation_end(trainer, module)
    throughput.on_train_end(trainer, module)
    assert throughput.seconds == pytest.approx(5.0 + 11 * 0.5)
    assert throughput.samples == 11 * 32 + 8
    assert (throughput.steady_samples, throughput.steady_seconds) == (40, pytest.approx(1.0))
    assert throughput.steady_samples_per_second == 40.0


def test_a_run_no_longer_than_its_warm_up_has_no_steady_throughput(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    trainer, module = single_process()
    throughput = TrainThroughput()
    throughput.on_train_start(trainer, module)
    for step in range(TrainThroughput.WARM_UP_STEPS):
        clock.now += 1.0
        throughput.on_train_batch_end(trainer, module, None, {"labels": [0] * 4}, step)
    throughput.on_train_end(trainer, module)
    assert throughput.samples_per_second == 4.0
    assert throughput.steady_samples_per_second is None
