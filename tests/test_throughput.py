"""The training throughput a run records, whole and per epoch, and bench_train's use of it."""

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


@pytest.fixture
def timed(monkeypatch) -> tuple[FakeClock, SimpleNamespace, SimpleNamespace]:
    """TrainThroughput's clock, faked; a single-process trainer (its reduce a no-op) and a CPU module."""
    clock = FakeClock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor))
    return clock, trainer, SimpleNamespace(device=torch.device("cpu"))


def test_each_epochs_throughput_leaves_out_validation_and_the_others_epochs(timed):
    """Two epochs of 3 batches (32, 32, 8 examples): the first step takes 5 s (compiling), the others 0.5 s,
    and each epoch ends with 2 s of validation: epoch speeds 72 / 6 s and 72 / 1.5 s."""
    clock, trainer, module = timed
    throughput = TrainThroughput()
    throughput.on_train_start(trainer, module)
    for epoch in range(2):
        throughput.on_train_epoch_start(trainer, module)
        for step, size in enumerate((32, 32, 8)):
            clock.now += 5.0 if (epoch, step) == (0, 0) else 0.5
            throughput.on_train_batch_end(trainer, module, None, {"labels": [0] * size}, step)
        throughput.on_validation_start(trainer, module)
        clock.now += 2.0
        throughput.on_validation_end(trainer, module)
        throughput.on_train_epoch_end(trainer, module)
    throughput.on_train_end(trainer, module)
    assert (throughput.samples, throughput.seconds) == (144, pytest.approx(7.5))
    assert throughput.epoch_samples == [72, 72]
    assert throughput.epoch_seconds == pytest.approx([6.0, 1.5])
    assert throughput.epoch_samples_per_second == [12.0, 48.0]


def test_a_run_resumed_mid_epoch_times_the_rest_of_that_epoch(timed):
    """Lightning calls no on_train_epoch_start for the epoch a run resumes in: the rest of it (2 batches,
    1 s) is the run's first epoch, and the next one starts afresh."""
    clock, trainer, module = timed
    throughput = TrainThroughput()
    throughput.on_train_start(trainer, module)
    for epoch, sizes in enumerate(((32, 8), (32, 32, 8))):
        if epoch:
            throughput.on_train_epoch_start(trainer, module)
        for step, size in enumerate(sizes):
            clock.now += 0.5
            throughput.on_train_batch_end(trainer, module, None, {"labels": [0] * size}, step)
        throughput.on_train_epoch_end(trainer, module)
    throughput.on_train_end(trainer, module)
    assert throughput.epoch_samples == [40, 72]
    assert throughput.epoch_samples_per_second == [40.0, 48.0]


def test_bench_compares_steady_states_and_counts_a_compiles_whole_one_off_cost():
    """bench_train's report: eager 400 samples/s in its last epoch (80 ms a step of 32) and 0.5 s of
    one-off costs; compiled 512 samples/s (62.5 ms) with 40.5 s cold and 10.5 s / 12.5 s warm: 40 s and 11 s
    more than eager, paid back after 40 / 0.0175 and 11 / 0.0175 steps. Two epochs of 2048 examples."""
    from benchmarks.report import compile_break_even, ratios

    eager_seconds = [4096 / 400 + 0.5] * 3
    compiled_seconds = [8.0 + 40.5, 8.0 + 10.5, 8.0 + 12.5]
    summary = {
        "framework": {
            "seconds": eager_seconds,
            "samples_per_second": [4096 / seconds for seconds in eager_seconds],
            "median_samples_per_second": 4096 / eager_seconds[0],
            "steady_samples_per_second": [400.0] * 3,
        },
        "framework_compiled": {
            "seconds": compiled_seconds,
            "samples_per_second": [4096 / seconds for seconds in compiled_seconds],
            "compile_seconds": [39.0, 9.0, 9.0],
            "uncompiled_samples_per_second": [4096 / 9.5, 4096 / 9.5, 4096 / 11.5],
            "steady_samples_per_second": [512.0] * 3,
        },
        "hf_dynamic": {"median_samples_per_second": 180.0, "steady_samples_per_second": [200.0] * 3},
    }
    even = compile_break_even(summary, batch_size=32)
    assert even["compiled_seconds_per_step"] == pytest.approx(0.0625)
    assert (even["one_off_seconds_cold"], even["one_off_seconds_warm"]) == pytest.approx((40.0, 11.0))
    assert even["steps_cold"] == pytest.approx(40 / 0.0175)
    assert even["steps_warm"] == pytest.approx(11 / 0.0175)
    steady, whole = ratios(summary, steady=True), ratios(summary)
    assert steady["framework_compiled/hf_dynamic"] == pytest.approx(2.56)
    assert whole["framework_compiled/hf_dynamic"] == pytest.approx(4096 / 9.5 / 180)
    assert whole["framework/hf_dynamic"] == pytest.approx(4096 / 10.74 / 180)


def test_one_repeat_tells_no_warm_break_even():
    """With a single repeat there is no warm run: the report says so instead of "never"."""
    from benchmarks.report import compile_break_even, key_ratios

    summary = {
        "framework": {
            "seconds": [10.74],
            "samples_per_second": [4096 / 10.74],
            "steady_samples_per_second": [400.0],
        },
        "framework_compiled": {
            "seconds": [48.5],
            "samples_per_second": [4096 / 48.5],
            "compile_seconds": [39.0],
            "steady_samples_per_second": [512.0],
        },
    }
    even = compile_break_even(summary, batch_size=32)
    assert even["steps_warm"] is None and even["steps_cold"] == pytest.approx(40 / 0.0175)
    text = "\n".join(key_ratios({"ratios": {}, "compile_break_even": even}))
    assert "pays back after 2,286 steps (– with a warm cache)" in text
