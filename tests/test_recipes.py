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
    assert resolved["scheduler"]["name"] == "linear"  # linear decay, as the yaml cites Appendix D.1
    method = resolved["method"]
    assert (method["r"], method["alpha"], method["target_modules"]) == (8, 8, ["query", "value"])
    assert cfg.hydra.runtime.choices.model == "roberta_base" and cfg.hydra.runtime.choices.method == "lora"
    assert resolved["init_from"] == ("sweep:mnli" if task in FROM_MNLI else None)
    assert str(cfg.hydra.sweeper.params.task).split(",")[0] == "mnli"  # MNLI first: the others start from it


# Hu et al. 2021 (LoRA), Table 9, RoBERTa large LoRA (arXiv v2): batch size, epochs, learning rate, max length
LORA_LARGE_TABLE_9 = {
    "mnli": (4, 10, 3e-4, 128),
    "sst2": (4, 10, 4e-4, 128),
    "mrpc": (4, 20, 3e-4, 512),
    "cola": (4, 20, 2e-4, 128),
    "qnli": (4, 10, 2e-4, 512),
    "qqp": (4, 20, 3e-4, 512),
    "rte": (8, 20, 4e-4, 512),
    "stsb": (8, 30, 2e-4, 512),
}


@pytest.mark.parametrize("task", sorted(LORA_LARGE_TABLE_9))
def test_the_large_lora_recipe_composes_each_task_with_table_9s_values(task, tmp_path):
    """Table 9's RoBERTa-large column: alpha 16 (not the base's 8), the length per task; same MNLI start."""
    cfg = compose_cfg(["experiment=lora_roberta_large_paper", f"task={task}"], tmp_path)
    batch_size, epochs, lr, max_length = LORA_LARGE_TABLE_9[task]
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.optimizer.lr) == (batch_size, epochs, lr)
    assert cfg.data.max_length == max_length and cfg.optimizer.weight_decay == 0.1
    assert cfg.scheduler.warmup_ratio == 0.06 and cfg.data.validation_size is None
    method = cfg.method
    assert (method.r, method.alpha, list(method.target_modules)) == (8, 16, ["query", "value"])
    assert cfg.hydra.runtime.choices.model == "roberta_large" and cfg.hydra.runtime.choices.method == "lora"
    assert cfg.model.architecture.hidden_size == 1024 and cfg.model.architecture.num_hidden_layers == 24
    assert cfg.init_from == ("sweep:mnli" if task in FROM_MNLI else None)
    sweep = cfg.hydra.sweeper.params
    assert str(sweep.task).split(",")[0] == "mnli" and str(sweep.seed) == "0,1,2,3,4"
    assert set(str(sweep.task).split(",")) == set(LORA_LARGE_TABLE_9) and cfg.recipe.aggregate == "median"


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


# Kopiczko et al. 2024 (VeRA), Table 8, RoBERTa base: epochs, head learning rate, VeRA learning rate
VERA_TABLE_8 = {
    "sst2": (60, 4e-3, 4e-3),
    "mrpc": (30, 4e-3, 1e-2),
    "cola": (80, 1e-2, 1e-2),
    "qnli": (25, 4e-3, 1e-2),
    "rte": (160, 1e-2, 4e-3),
    "stsb": (80, 1e-2, 1e-2),
}


@pytest.mark.parametrize("task", sorted(VERA_TABLE_8))
def test_the_vera_recipe_composes_each_task_with_table_8s_values(task, tmp_path):
    """Rank 1024 on query and value, d = 0.1, batch 64, length 512, warmup 0.06; no MNLI, so no MNLI start."""
    cfg = compose_cfg(["experiment=vera_roberta_base_paper", f"task={task}"], tmp_path)
    epochs, head_lr, vera_lr = VERA_TABLE_8[task]
    assert (cfg.trainer.max_epochs, cfg.optimizer.head_lr, cfg.optimizer.lr) == (epochs, head_lr, vera_lr)
    assert (cfg.data.batch_size, cfg.data.max_length, cfg.scheduler.warmup_ratio) == (64, 512, 0.06)
    config = cfg.method.config
    assert (config.r, list(config.target_modules), config.d_initial) == (1024, ["query", "value"], 0.1)
    assert cfg.hydra.runtime.choices.model == "roberta_base" and cfg.hydra.runtime.choices.method == "vera"
    assert cfg.init_from is None and cfg.recipe.aggregate == "median"
    sweep = cfg.hydra.sweeper.params
    assert set(str(sweep.task).split(",")) == set(VERA_TABLE_8) and str(sweep.seed) == "0,1,2,3,4"


BITFIT_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


@pytest.mark.parametrize("task", BITFIT_TASKS)
def test_the_bitfit_recipe_is_the_authors_code_for_each_task(task, tmp_path):
    """benzakenelad/BitFit run_glue.py: bert-base-cased, lr 1e-3, 16 epochs, batch 8, length 128, seed 0,
    transformers 4.2.1's AdamW defaults (no weight decay, eps 1e-6), gradients clipped at norm 1, fp32, and a
    constant learning rate."""
    cfg = compose_cfg(["experiment=bitfit_bert_base_paper", f"task={task}"], tmp_path)
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.method) == ("bert_base_cased", "bitfit")
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs) == (1e-3, 16)
    assert (cfg.data.batch_size, cfg.data.max_length) == (8, 128)
    assert (cfg.seed, cfg.optimizer.weight_decay, cfg.optimizer.eps) == (0, 0.0, 1e-6)
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.precision) == (1.0, "32-true")
    assert cfg.optimizer.head_lr is None and cfg.scheduler.warmup_ratio == 0.0
    assert cfg.scheduler.name == "constant"  # glue_evaluator.py's training_preparation builds no scheduler
    assert set(str(cfg.hydra.sweeper.params.task).split(",")) == set(BITFIT_TASKS)


def dry_run_sweep(experiment: str, tmp_path) -> dict[str, dict]:
    """The recipe's whole sweep (one seed) dry-run with random weights: each task's results.json."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m", f"experiment={experiment}", "seed=0", "dry_run=true", "model.pretrained=false",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r["task"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))}
    assert {r["status"] for r in runs.values()} == {"dry_run"}
    return runs


@pytest.mark.slow  # 6 random RoBERTa-base models built, about a minute
def test_the_vera_recipe_dry_runs_every_task(tmp_path):
    runs = dry_run_sweep("vera_roberta_base_paper", tmp_path)
    assert set(runs) == set(VERA_TABLE_8)
    for task, (epochs, head_lr, vera_lr) in VERA_TABLE_8.items():
        assert (runs[task]["max_epochs"], runs[task]["batch_size"]) == (epochs, 64)
        assert (runs[task]["optimizer"]["head_lr"], runs[task]["optimizer"]["lr"]) == (head_lr, vera_lr)
        labels = 1 if task == "stsb" else 2  # RoBERTa's head: a dense 768 x 768 layer, then one to the labels
        head = 768 * 768 + 768 + 768 * labels + labels
        # Table 2's 0.043M, the head left out: 12 layers x (query, value) x (768 + 1024) vector entries
        assert runs[task]["trainable_params"] - head == 12 * 2 * (768 + 1024) == 43008


@pytest.mark.slow  # 8 random BERT-base models built, about a minute
def test_the_bitfit_recipe_dry_runs_every_task(tmp_path):
    runs = dry_run_sweep("bitfit_bert_base_paper", tmp_path)
    assert set(runs) == set(BITFIT_TASKS)
    for run in runs.values():
        assert (run["max_epochs"], run["batch_size"], run["optimizer"]["lr"]) == (16, 8, 1e-3)
        assert (run["seed"], run["precision"]) == (0, "32-true")


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


@pytest.mark.slow  # 3 random RoBERTa-large models (355M parameters each) built, about 30 s
def test_the_large_lora_recipe_dry_runs_with_its_trainable_count(tmp_path):
    """MNLI, RTE, STS-B: three heads (3, 2, 1 labels), and the two kinds of start (fresh, from MNLI)."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m", "experiment=lora_roberta_large_paper", "task=mnli,rte,stsb", "seed=0", "dry_run=true",
        "model.pretrained=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r["task"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))}
    assert set(runs) == {"mnli", "rte", "stsb"} and {r["status"] for r in runs.values()} == {"dry_run"}
    # LoRA: 24 layers x 2 targets (query, value) x r=8 x (1024 in + 1024 out): A is r x 1024, B is 1024 x r
    lora = 24 * 2 * 8 * (1024 + 1024)
    assert lora == 786432  # Table 2's "0.8M" for RoBERTa large (LoRA), the head left out
    for task, labels in {"mnli": 3, "rte": 2, "stsb": 1}.items():
        head = 1024 * 1024 + 1024 + 1024 * labels + labels  # RoBERTa's head: dense 1024 x 1024, then out_proj
        assert runs[task]["trainable_params"] == lora + head
        batch_size, epochs, lr, _ = LORA_LARGE_TABLE_9[task]
        assert (runs[task]["batch_size"], runs[task]["max_epochs"]) == (batch_size, epochs)
        assert runs[task]["optimizer"]["lr"] == lr
    assert runs["rte"]["init_from"]["requested"] == "sweep:mnli" and runs["mnli"]["init_from"] is None
