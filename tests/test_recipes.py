"""The papers' recipes (conf/experiment/*_paper.yaml): each task composes with the paper's own values, checked
here against the table as read in the paper, and the whole recipe dry-runs."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from .conftest import compose_cfg, run_cli

# Hu et al. 2021 (LoRA), Table 9, RoBERTa base LoRA: batch size, epochs, learning rate per task
LORA_TABLE_9 = {
    "mnli": (16, 30, 5e-4),
    "sst2": (16, 60, 5e-4),
    "mrpc": (16, 30, 4e-4),
    "cola": (32, 80, 4e-4),
    "qnli": (32, 25, 4e-4),
    "qqp": (16, 25, 5e-4),
    "rte": (32, 80, 5e-4),
    "stsb": (16, 40, 4e-4),
}
FROM_MNLI = {"mrpc", "rte", "stsb"}  # Appendix D.1: these start from the MNLI adapter


@pytest.mark.parametrize("task", sorted(LORA_TABLE_9))
def test_the_lora_recipe_composes_each_task_with_table_9s_values(task, tmp_path):
    cfg = compose_cfg(["experiment=lora_roberta_base_paper", f"task={task}"], tmp_path)
    job = [key for key in cfg if key != "hydra"]
    resolved = OmegaConf.to_container(OmegaConf.masked_copy(cfg, job), resolve=True)
    batch_size, epochs, lr = LORA_TABLE_9[task]
    assert (resolved["data"]["batch_size"], resolved["trainer"]["max_epochs"]) == (batch_size, epochs)
    assert resolved["optimizer"]["lr"] == lr and resolved["optimizer"]["weight_decay"] == 0.1
    assert resolved["scheduler"]["warmup_ratio"] == 0.06 and resolved["data"]["max_length"] == 512
    method = resolved["method"]
    assert (method["r"], method["alpha"], method["target_modules"]) == (8, 8, ["query", "value"])
    assert cfg.hydra.runtime.choices.model == "roberta_base" and cfg.hydra.runtime.choices.method == "lora"
    assert resolved["init_from"] == ("sweep:mnli" if task in FROM_MNLI else None)
    assert str(cfg.hydra.sweeper.params.task).split(",")[0] == "mnli"  # MNLI first: the others start from it


THREE_EPOCHS = ("cola", "sst2", "stsb", "qqp", "mnli", "qnli", "rte")
RUN_GLUE_EPOCHS = {task: 3 for task in THREE_EPOCHS} | {"mrpc": 5, "wnli": 5}  # MRPC, WNLI: "tiny", 5


@pytest.mark.parametrize("task", sorted(RUN_GLUE_EPOCHS))
def test_the_run_glue_recipe_is_the_readmes_command_for_each_task(task, tmp_path):
    """transformers' run_glue.py README: bert-base-cased, lr 2e-5, batch 32, length 128, 3 epochs (5 for MRPC
    and WNLI); TrainingArguments' defaults besides (seed 42, no weight decay, no warmup), fp32."""
    cfg = compose_cfg(["experiment=full_run_glue_paper", f"task={task}"], tmp_path)
    assert cfg.hydra.runtime.choices.model == "bert_base_cased" and cfg.hydra.runtime.choices.method == "full"
    assert (cfg.optimizer.lr, cfg.data.batch_size, cfg.data.max_length) == (2e-5, 32, 128)
    assert cfg.trainer.max_epochs == RUN_GLUE_EPOCHS[task] and cfg.trainer.precision == "32-true"
    assert (cfg.seed, cfg.optimizer.weight_decay, cfg.scheduler.warmup_ratio) == (42, 0.0, 0.0)
    assert cfg.model.name_or_path == "bert-base-cased" and cfg.model.architecture.vocab_size == 28996


# Zhang et al. 2023 (AdaLoRA), Table 8: learning rate, epochs, gamma, t_i, Delta_T, t_f (batch 32 throughout)
ADALORA_TABLE_8 = {
    "mnli": (5e-4, 7, 0.1, 8000, 100, 50000),
    "rte": (1.2e-3, 50, 0.3, 600, 1, 1800),
    "qnli": (1.2e-3, 5, 0.1, 2000, 100, 8000),
    "mrpc": (1e-3, 30, 0.1, 600, 1, 1800),
    "qqp": (5e-4, 5, 0.1, 8000, 100, 25000),
    "sst2": (8e-4, 24, 0.1, 6000, 100, 22000),
    "cola": (5e-4, 25, 0.5, 800, 10, 3500),
    "stsb": (2.2e-3, 25, 0.1, 800, 10, 2000),
}


@pytest.mark.parametrize("task", sorted(ADALORA_TABLE_8))
def test_the_adalora_recipe_composes_each_task_with_table_8s_values(task, tmp_path):
    cfg = compose_cfg(["experiment=adalora_deberta_v3_base_paper", f"task={task}"], tmp_path)
    lr, epochs, gamma, t_i, delta_t, t_f = ADALORA_TABLE_8[task]
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs, cfg.data.batch_size) == (lr, epochs, 32)
    method = cfg.method
    assert (method.tinit_steps, method.tfinal_steps) == (t_i, t_f)
    assert (method.config.orth_reg_weight, method.config.deltaT) == (gamma, delta_t)
    assert (method.config.init_r, method.config.target_r) == (12, 8)  # Table 7's 1.2M budget: b(T) = 576
    assert cfg.hydra.runtime.choices.model == "deberta_v3_base"


@pytest.mark.slow  # 8 random RoBERTa-base models built, about a minute
def test_the_lora_recipe_dry_runs_every_task(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m", "experiment=lora_roberta_base_paper", "seed=0", "dry_run=true", "model.pretrained=false",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r["task"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))}
    assert set(runs) == set(LORA_TABLE_9) and {r["status"] for r in runs.values()} == {"dry_run"}
    for task, (batch_size, epochs, lr) in LORA_TABLE_9.items():
        assert (runs[task]["batch_size"], runs[task]["max_epochs"]) == (batch_size, epochs)
        assert runs[task]["optimizer"]["lr"] == lr
    assert runs["rte"]["init_from"]["requested"] == "sweep:mnli" and runs["sst2"]["init_from"] is None
