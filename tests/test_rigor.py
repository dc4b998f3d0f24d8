"""Comparisons a reviewer would accept: a validation split carved from train (GLUE dev as the test set), the
monitored best checkpoint as the one exported and tested, early stopping, and the report's statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from peft_glue.record import RunRecord
from peft_glue.report import write_report
from peft_glue.results.comparison import pick_learning_rates
from peft_glue.results.stats import almost_stochastic_order, false_discovery_adjusted, paired_test, summarize
from peft_glue.train import train
from peft_glue.training.data import GlueDataModule, load_glue
from peft_glue.training.models import load_tokenizer
from peft_glue.training.module import GlueClassifier
from peft_glue.training.splits import carve_validation, validation_count
from peft_glue.training.tasks import MRPC, SST2

from .conftest import compose_cfg, tiny_overrides, write_tiny_glue


# ---------------------------------------------------------------------------------------------- the split
@pytest.fixture(scope="module")
def glue_100(tmp_path_factory) -> Path:
    return write_tiny_glue(tmp_path_factory.mktemp("glue100"), n_train=100, n_dev=32, n_test=24)


def datamodule(tiny_bert: Path, glue: Path, **kwargs) -> GlueDataModule:
    data = GlueDataModule(SST2(), load_tokenizer(str(tiny_bert)), data_dir=str(glue), batch_size=8, **kwargs)
    data.setup()
    return data


def idx_set(data: GlueDataModule, split: str) -> set[int]:
    return set(data.splits[split]["idx"])


def test_carved_validation_is_disjoint_stratified_and_fixed_by_split_seed(tiny_bert, glue_100):
    a = datamodule(tiny_bert, glue_100, validation_size=0.2, split_seed=0, seed=1)
    b = datamodule(tiny_bert, glue_100, validation_size=0.2, split_seed=0, seed=2)  # another run seed
    c = datamodule(tiny_bert, glue_100, validation_size=0.2, split_seed=5, seed=1)  # another split seed
    train, val = idx_set(a, "train"), idx_set(a, "validation")
    assert len(val) == 20 and len(train) == 80 and not train & val
    assert train | val == set(range(100))  # nothing lost
    assert idx_set(b, "validation") == val and idx_set(b, "train") == train
    assert idx_set(c, "validation") != val
    labels = a.splits["validation"]["labels"]
    assert sum(labels) == 10  # stratified: the training set is balanced, so is its validation part
    # GLUE dev is now the (labelled) test set, GLUE test the split that submissions are written for
    raw = load_glue(SST2(), glue_100)
    assert a.splits["test"]["idx"] == raw["validation"]["idx"] and a.test_labelled
    assert a.submission_splits() == ["predict"] and len(a.splits["predict"]) == 24
    # null keeps the old layout: GLUE dev validates
    old = datamodule(tiny_bert, glue_100)
    assert idx_set(old, "train") == set(range(100)) and old.submission_splits() == ["test"]


def test_same_validation_split_for_every_method_and_seed(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    seen = []
    original = GlueDataModule.setup

    def spy(self, stage=None):
        original(self, stage)
        seen.append((idx_set(self, "train"), idx_set(self, "validation")))

    monkeypatch.setattr(GlueDataModule, "setup", spy)
    for i, (method, seed) in enumerate([("bitfit", 1), ("lora", 2)]):
        overrides = [f"method={method}", f"seed={seed}", "data.validation_size=16", "trainer.max_epochs=1"]
        cfg = compose_cfg([*overrides, *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / str(i))
        record = RunRecord(tmp_path / str(i))
        train(cfg, record)
        assert (
            record.results.splits.validation_from == "train"
            and record.results.splits.sizes["validation"] == 16
        )
        assert set(record.results.test) >= {"accuracy", "loss"}  # GLUE dev, evaluated at the end
    assert seen[0] == seen[-1] and not seen[0][0] & seen[0][1]


def test_train_subset_is_taken_after_carving(tiny_bert, glue_100):
    data = datamodule(tiny_bert, glue_100, validation_size=30, split_seed=0, train_subset=40)
    full = datamodule(tiny_bert, glue_100, validation_size=30, split_seed=0)
    assert len(idx_set(data, "validation")) == 30
    assert idx_set(data, "validation") == idx_set(full, "validation")
    assert len(idx_set(data, "train")) == 40 and idx_set(data, "train") <= idx_set(full, "train")


def test_regression_targets_are_stratified_by_score_bins():
    from datasets import Dataset, DatasetDict

    class Scores(SST2):
        label_names = ()

    scores = np.linspace(0, 5, 200).astype("float32")
    rows = {"idx": list(range(200)), "sentence1": ["x"] * 200, "label": scores.tolist()}
    raw = DatasetDict(train=Dataset.from_dict(rows), validation=Dataset.from_dict(rows))
    carved = carve_validation(raw, Scores(), 50, split_seed=0)
    counts = np.histogram(carved["validation"]["label"], bins=5, range=(0, 5))[0]
    assert counts.tolist() == [10, 10, 10, 10, 10]


def test_validation_size_count_or_fraction():
    assert validation_count(0.1, 3668) == 367 and validation_count(500, 3668) == 500
    for bad in (0, 3668, 1.5, -0.2, "x"):
        with pytest.raises(Exception, match="validation_size"):
            validation_count(bad, 3668)


# ---------------------------------------------------------------------------------------------- best epoch
MONITOR_BY_EPOCH = {0: 0.2, 1: 0.9, 2: 0.4}  # the monitor peaks at epoch 1; the last epoch is worse


def fake_validation_end(self) -> None:
    """The module's validation end with a made-up monitor curve that peaks before the last epoch."""
    self._compute("validation")  # computes and resets the real metrics; the monitor below is made up
    value = MONITOR_BY_EPOCH[self.current_epoch]
    self._log_computed({"val/accuracy": torch.tensor(value)}, prog_bar=True)
    self.val_history.append({"epoch": self.current_epoch, "step": self.global_step, "accuracy": value})


def test_exported_and_tested_weights_are_the_monitored_best_epoch(
    tiny_bert, tiny_glue, tmp_path, monkeypatch
):
    monkeypatch.setattr(GlueClassifier, "on_validation_epoch_end", fake_validation_end)
    overrides = ["method=bitfit", "optimizer.lr=3e-2", "trainer.max_epochs=3", "task=sst2"]
    cfg = compose_cfg([*overrides, *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)
    cfg.trainer.max_epochs = 3
    record = RunRecord(tmp_path)
    train(cfg, record)
    best = record.results.best_checkpoint
    assert best["epoch"] == 1 and best["value"] == pytest.approx(0.9) and best["monitor"] == "val/accuracy"
    assert record.results.val["best"]["epoch"] == 1 and record.results.val["last"]["epoch"] == 2
    best_state = torch.load(best["path"], weights_only=True)["state_dict"]
    last_state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    exported = load_file(tmp_path / "bitfit" / "bitfit.safetensors")
    assert exported.keys() and {f"model.{name}" for name in exported} == best_state.keys()
    for name, tensor in exported.items():
        assert torch.equal(tensor, best_state[f"model.{name}"]), name
    assert any(not torch.equal(tensor, last_state[f"model.{name}"]) for name, tensor in exported.items())


def test_early_stopping_stops_after_patience(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    monkeypatch.setattr(GlueClassifier, "on_validation_epoch_end", fake_validation_end)
    monkeypatch.setitem(MONITOR_BY_EPOCH, 2, 0.3)
    monkeypatch.setitem(MONITOR_BY_EPOCH, 3, 0.3)
    overrides = [
        "method=bitfit",
        "task=sst2",
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1",
    ]
    cfg = compose_cfg([*overrides, *tiny_overrides(tiny_bert, tiny_glue)], tmp_path)
    cfg.trainer.max_epochs = 5
    record = RunRecord(tmp_path)
    train(cfg, record)
    assert [m["epoch"] for m in record.results.val_history] == [0, 1, 2]  # epoch 2 did not improve: stop
    assert record.results.best_checkpoint["epoch"] == 1


# ---------------------------------------------------------------------------------------------- statistics
# Two-sided 95% quantiles of Student's t, from a printed table: t(0.975; 4) and t(0.975; 5).
T_975 = {4: 2.776445, 5: 2.570582}


def sample_sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def t_two_sided_p(t: float, df: int, steps: int = 20_000) -> float:
    """1 - 2 * integral_0^|t| of Student's t density, by Simpson's rule (no scipy)."""
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def pdf(x: float) -> float:
        return const * (1 + x * x / df) ** (-(df + 1) / 2)

    h = abs(t) / steps
    area = pdf(0) + pdf(abs(t)) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, steps))
    return 1 - 2 * area * h / 3


def test_confidence_interval_against_hand_computation():
    values = [0.80, 0.82, 0.85, 0.79, 0.84]
    summary = summarize(values)
    mean, sd = sum(values) / 5, sample_sd(values)
    half = T_975[4] * sd / math.sqrt(5)
    assert summary.n == 5 and summary.mean == pytest.approx(mean) and summary.std == pytest.approx(sd)
    assert summary.low == pytest.approx(mean - half, abs=1e-6)
    assert summary.high == pytest.approx(mean + half, abs=1e-6)
    single = summarize([0.7, None, float("nan")])
    assert single.n == 1 and math.isnan(single.low)


def test_paired_test_against_hand_computation():
    b = [0.78, 0.80, 0.84, 0.79, 0.81, 0.80]
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.07]  # all positive, all different
    a = [x + d for x, d in zip(b, diffs, strict=True)]
    result = paired_test(a, b)
    mean, sd = sum(diffs) / 6, sample_sd(diffs)
    t = mean / (sd / math.sqrt(6))
    assert result.n == 6 and result.mean_diff == pytest.approx(mean)
    assert result.t == pytest.approx(t, rel=1e-6)
    assert result.p_t == pytest.approx(t_two_sided_p(t, 5), abs=1e-6)
    assert result.diff_low == pytest.approx(mean - T_975[5] * sd / math.sqrt(6), abs=1e-6)
    assert result.cohens_d == pytest.approx(mean / sd)
    # exact signed-rank test: every difference positive is 1 of 2^6 sign patterns, times 2 sides
    assert result.p_wilcoxon == pytest.approx(2 / 2**6)
    assert paired_test(a[:5], b[:5]).p_wilcoxon is None  # too few pairs for Wilcoxon


def test_false_discovery_adjustment_against_hand_computation():
    """Benjamini-Hochberg: sorted p_(i) times m/i, then the running minimum from the largest down."""
    adjusted = false_discovery_adjusted([0.01, 0.04, 0.03, None, 0.2])
    # m=4 finite: 0.01*4/1=0.04, 0.03*4/2=0.06 -> min with 0.04*4/3=0.0533, 0.2*4/4=0.2
    assert adjusted[0] == pytest.approx(0.04) and adjusted[4] == pytest.approx(0.2)
    assert adjusted[1] == pytest.approx(0.16 / 3) and adjusted[2] == pytest.approx(0.16 / 3)
    assert math.isnan(adjusted[3])


# ---------------------------------------------------------------------------------------------- the report
def write_record(root: Path, name: str, method: str, lr: float, seed: int, val: float, test: float, **extra):
    folder = root / name
    folder.mkdir(parents=True)
    record = {
        "status": "completed", "task": "mrpc", "method": {"name": method, "lr": 1.0}, "model": "minilm",
        "seed": seed, "task_info": MRPC(monitor="accuracy").info(),
        "method_info": {"order": {"full": 0, "bitfit": 1}[method]},
        "optimizer": {"lr": lr}, "batch_size": 16, "max_epochs": 3, "train_subset": None,
        "validation_size": 0.1, "val": {"best": {"accuracy": val}, "last": {"accuracy": val}},
        "test": {"accuracy": test, "loss": 0.5}, **extra,
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(record))


def test_almost_stochastic_order_is_zero_for_dominance_and_one_against_it():
    """Every score of ``high`` above every score of ``low``: its quantile function lies above everywhere, the
    violation ratio is 0 and so is deepsig's ε_min; the other way round it is 1 (less the bound's margin).
    Interleaved scores let neither direction pass the 0.2 threshold."""
    high, low = [0.84, 0.86, 0.85, 0.87, 0.83], [0.80, 0.79, 0.81, 0.78, 0.82]
    assert almost_stochastic_order(high, low) == 0.0
    assert almost_stochastic_order(low, high) > 0.99  # 1 less the bootstrap's lower-bound margin
    mixed = [0.80, 0.88, 0.79, 0.89, 0.84]  # wider: below high's scores at the bottom, above at the top
    assert almost_stochastic_order(mixed, high) > 0.2 and almost_stochastic_order(high, mixed) > 0.2
    assert math.isnan(almost_stochastic_order([0.8], low))  # one score is no distribution


def test_report_picks_lr_on_validation_and_tests_pairs_with_a_missing_seed(tmp_path):
    root = tmp_path / "sweep"
    job = 0
    for method, lrs in {"full": (1e-5, 1e-4), "bitfit": (1e-4, 1e-3)}.items():
        for i, lr in enumerate(lrs):
            for seed in (1, 2, 3):
                good = i == 1 if method == "full" else i == 0  # full picks 1e-4, bitfit 1e-4
                val = (0.80 if good else 0.70) + seed / 100
                test = (0.77 if good else 0.99) + seed / 1000  # a bad lr's test value must never show
                if method == "bitfit" and good and seed == 3:
                    folder = root / f"{job}"
                    folder.mkdir(parents=True)
                    failed = {"status": "failed", "task": "mrpc", "seed": 3, "error": "boom",
                              "method": {"name": "bitfit", "lr": 1.0}, "optimizer": {"lr": lr}}  # fmt: skip
                    (folder / "results.json").write_text(json.dumps(failed))
                else:
                    write_record(
                        root, f"{job}", method, lr, seed, val, test - (0.05 if method == "bitfit" else 0)
                    )
                job += 1
    text = write_report([root], tmp_path / "report").read_text()
    section = text.split("## Comparisons")[1].split("## Training curves")[0]
    assert "**0.0001** of 1e-05, 0.0001" in section  # full's pick
    assert "**0.0001** of 0.0001, 0.001" in section  # bitfit's pick
    assert "99." not in section  # the test values of the rates not picked are not shown
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "| 2 | 3 |" in rows["bitfit"]  # n=2, seed 3 missing
    assert "| 3 | – |" in rows["full"]
    # full: 77.1, 77.2, 77.3 -> mean 77.2; the pair is over seeds 1 and 2 only
    assert "77.2 ± 0.1" in rows["full"]
    pair = rows["full vs bitfit"]
    assert "2 (without 3)" in pair and "| 5.0 |" in pair
    assert "| Cohen's d | paired t p (BH) | ASO ε A>B | ASO ε B>A |" in section  # BH over the table's pairs
    assert pair.endswith("| 0.00 | 1.00 |")  # full's 77.1, 77.2 lie above bitfit's 72.1, 72.2
    assert (tmp_path / "report" / "lr_selection_mrpc.png").is_file()
    assert "boom" in text  # the failed job is listed with its error


def test_picked_configurations_list_ranks_in_numeric_order():
    """A rank sweep's rows and pairs read r=1, 4, 16 (as text, "r=16" came before "r=4")."""
    configs = [
        {"family": label, "context": "sst2", "order": 2, "label": label, "lr": 3e-3, "val": {1: 0.8}}
        for label in ("lora r=16", "lora r=4", "lora r=1")
    ]
    picked = pick_learning_rates(configs)
    assert [c["label"] for c in picked] == ["lora r=1", "lora r=4", "lora r=16"]


def test_lr_comparison_gives_each_method_its_own_grid(tmp_path):
    lrs = {}
    for method in ("full", "bitfit", "lora"):
        for step in range(5):
            cfg = compose_cfg(["experiment=lr_comparison", f"method={method}", f"lr_step={step}"], tmp_path)
            lrs.setdefault(method, []).append(cfg.optimizer.lr)
            assert cfg.data.validation_size == 0.1
    assert lrs["full"][0] == 1e-5 and lrs["full"][-1] == 1e-4
    assert lrs["bitfit"] == lrs["lora"] and lrs["bitfit"][0] == 1e-4 and lrs["bitfit"][-1] == 1e-2
    assert cfg.hydra.sweeper.params.seed == "1,2,3,4,5"
    with pytest.raises(Exception, match="outside the grid"):
        compose_cfg(["experiment=lr_comparison", "lr_step=5"], tmp_path).optimizer.lr  # noqa: B018
