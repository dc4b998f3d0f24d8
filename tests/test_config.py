"""The configs as shipped: the README's dry-run counts, every experiment= and hparams_search= composes, the
cores shared among parallel jobs, and the CI rule for the real GLUE files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hydra import compose, initialize_config_dir

from peft_glue.training import distributed
from peft_glue.training.config import CONFIG_DIR, register_resolvers

from .conftest import SHARED_GLUE, run_cli, shared_glue


def test_readme_dry_run_trainable_counts(tmp_path):
    """`python -m peft_glue.train -m model=bert_base_uncased model.pretrained=false dry_run=true method=lora
    method.r=1,4,16` (README): 19,970 / 75,266 / 296,450 trainable parameters."""
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "model=bert_base_uncased", "model.pretrained=false", "dry_run=true", "method=lora",
        "method.r=1,4,16", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(path.read_text()) for path in sorted(sweep.glob("*/results.json"))]
    assert [(r["method"]["r"], r["status"], r["trainable_params"]) for r in runs] == [
        (1, "dry_run", 19_970),
        (4, "dry_run", 75_266),
        (16, "dry_run", 296_450),
    ]


def config_names(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("name", config_names("experiment"))
def test_every_experiment_composes_into_a_sweep(name):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    if name.startswith("peft_method_zoo"):  # every named method on one task, the study's protocol otherwise
        named = set(config_names("method")) - {"peft"}  # the generic wrapper is not a method of its own
        assert set(str(params.method).split(",")) == named and "seed" in params
        assert cfg.data.validation_size == 0.1 and cfg.hydra.runtime.choices.task == "mrpc"
        assert cfg.submission is False  # a study scores GLUE dev; no test-set prediction per job
        if name.endswith("_cpu"):  # the 2-core budget: 1,000 examples, 1 epoch, 3 seeds
            assert cfg.data.train_subset == 1000 and cfg.trainer.max_epochs == 1
            assert str(params.seed) == "1,2,3"
        return
    if cfg.get("recipe"):  # a paper's recipe: its own tasks and per-task values (tests/test_recipes.py)
        assert "task" in params and cfg.recipe.source
        return
    assert set(params) >= {"task", "seed"} and str(params.task) == "mrpc,sst2"
    assert cfg.hydra.sweep.dir.startswith(f"outputs/{name}/")
    assert cfg.data.batch_size == 16 and cfg.optimizer.weight_decay == 0.01
    assert cfg.trainer.max_epochs == (3 if name.endswith("_cpu") else 5)
    if name.endswith("_cpu"):
        assert cfg.data.train_subset == 4000


@pytest.mark.parametrize("name", config_names("hparams_search"))
def test_every_hparams_search_composes_into_an_optuna_search(name):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={name}", "seed=5"], return_hydra_config=True)
    method = name.removesuffix("_optuna")
    assert cfg.hydra.runtime.choices.method == method and cfg.method._target_.lower().endswith(method)
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "optuna"
    assert "OptunaSweeper" in cfg.hydra.sweeper._target_
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.sampler.seed == 5
    assert str(cfg.hydra.sweeper.params["optimizer.lr"]).startswith("tag(log, interval(")


def test_share_cores_sets_torch_and_omp_threads(monkeypatch):
    """With a fake machine of 64 cores, whatever this machine and joblib set: only share_cores gives 16
    threads to each of 4 parallel jobs, and 3 to a job that asks for threads=3."""
    monkeypatch.setattr(distributed, "usable_cores", lambda: 64)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        distributed.share_cores(None, 4)
        assert (torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]) == (16, "16")
        distributed.share_cores(3, 4)
        assert (torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]) == (3, "3")
        distributed.share_cores(None, None)  # one job at a time: left as it is
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_missing_shared_glue_skips_locally_and_fails_under_ci(monkeypatch):
    missing = "no-such-task-folder"
    assert not (SHARED_GLUE / missing).exists()
    monkeypatch.delenv("CI", raising=False)
    # BaseException: a skip escaping from pytest.raises(<fail>) would skip this test instead of failing it
    with pytest.raises(BaseException) as outcome:
        shared_glue(missing)
    assert type(outcome.value) is pytest.skip.Exception
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as outcome:
        shared_glue(missing)
    assert type(outcome.value) is pytest.fail.Exception and "CI=true" in str(outcome.value)


def test_a_config_saved_before_the_wings_builds_its_task_and_method(tmp_path):
    """Run folders trained before the reshape name ``peft_glue.methods.LoRA``; predict and export still build
    them."""
    from peft_glue.training.config import build, load_saved_config

    saved = tmp_path / "config.yaml"
    saved.write_text(
        "task:\n  _target_: peft_glue.tasks.RTE\nmethod:\n  _target_: peft_glue.methods.BitFit\n  lr: 0.001\n"
        "logger:\n  csv:\n    _target_: peft_glue.callbacks.ResumableCSVLogger\n"
    )
    cfg = load_saved_config(saved)
    assert type(build(cfg.task)).__module__ == "peft_glue.training.tasks"
    assert type(build(cfg.method)).__name__ == "BitFit"
    assert cfg.logger.csv._target_ == "peft_glue.training.tracking.ResumableCSVLogger"


@pytest.mark.parametrize(("method", "lr"), [("full", 2e-5), ("bitfit", 1e-3), ("lora", 1e-3)])
def test_each_method_supplies_its_default_learning_rate_to_the_optimizer(method, lr):
    """``optimizer.lr`` is the one home of the rate: the method's yaml sets it there; the method has none."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={method}"])
        overridden = compose("config", overrides=[f"method={method}", "optimizer.lr=0.5"])
    assert cfg.optimizer.lr == lr and "lr" not in cfg.method
    assert overridden.optimizer.lr == 0.5


def test_method_lr_names_its_new_home(capsys):
    from peft_glue.training.config import check_command_line

    with pytest.raises(SystemExit):
        check_command_line(["method=lora", "method.lr=1e-3"])
    assert capsys.readouterr().err.strip() == "error: method.lr has moved: use optimizer.lr=..."


def test_an_older_saved_config_moves_the_methods_rate_to_the_optimizer(tmp_path):
    from peft_glue.training.config import build, load_saved_config

    saved = tmp_path / "config.yaml"
    saved.write_text(
        "method:\n  _target_: peft_glue.methods.LoRA\n  lr: 0.003\n  r: 2\noptimizer:\n  lr: ${method.lr}\n"
    )
    cfg = load_saved_config(saved)
    assert cfg.optimizer.lr == 0.003 and "lr" not in cfg.method and build(cfg.method).r == 2
