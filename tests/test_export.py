"""What a finished run hands to others: exports that name the task's labels, a model card in each export
folder, `predict` with train's overrides, and `python -m peft_glue.export` (card, labels, Hub push)."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForSequenceClassification

from peft_glue.export import export
from peft_glue.export import main as export_main
from peft_glue.predict import main as predict_main
from peft_glue.record import RunResults
from peft_glue.results.card import training_lines, write_cards
from peft_glue.training.components import assemble

from .conftest import FILLER, NEGATIVE, POSITIVE, compose_cfg, run_cli

RTE_LABELS = {0: "entailment", 1: "not_entailment"}


def write_tiny_rte(root: Path, n_train: int = 32, n_dev: int = 16, n_test: int = 12) -> Path:
    """RTE in GLUE's layout (index, sentence1, sentence2, label as a word; test without label)."""
    rng = random.Random(0)
    folder = root / "RTE"
    folder.mkdir(parents=True, exist_ok=True)

    def sentence(words: list[str], n: int) -> str:
        return " ".join(rng.choice(words if i % 2 == 0 else FILLER) for i in range(n))

    for name, n in (("train", n_train), ("dev", n_dev)):
        rows = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            label = RTE_LABELS[i % 2]
            second = sentence(POSITIVE if label == "entailment" else NEGATIVE, 4)
            rows.append(f"{i}\t{sentence(POSITIVE + NEGATIVE, 6)}\t{second}\t{label}")
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    rows = ["index\tsentence1\tsentence2"]
    rows += [f"{i}\t{sentence(POSITIVE + NEGATIVE, 6)}\t{sentence(POSITIVE, 4)}" for i in range(n_test)]
    (folder / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """Two finished RTE runs, as a user starts them: full fine-tuning and LoRA, both with merge=true."""
    root = tmp_path_factory.mktemp("export")
    glue = write_tiny_rte(root / "glue")
    sweep = root / "sweep"
    result = run_cli(
        "-m",
        "method=full,lora",
        "task=rte",
        "merge=true",
        f"model.name_or_path={tiny_bert}",
        f"data.data_dir={glue}",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"full": sweep / "0", "lora": sweep / "1", "glue": glue}


def results_of(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


# ------------------------------------------------------------------------------------------ id2label
def test_full_and_merged_exports_name_the_task_labels(runs):
    from transformers import pipeline

    for folder in (runs["full"] / "model", runs["full"] / "merged", runs["lora"] / "merged"):
        config = AutoModelForSequenceClassification.from_pretrained(folder).config
        assert config.id2label == RTE_LABELS, folder
        assert config.label2id == {"entailment": 0, "not_entailment": 1}
    classify = pipeline("text-classification", model=str(runs["full"] / "model"), device="cpu")
    assert classify("the film is good")[0]["label"] in RTE_LABELS.values()


def test_regression_head_is_named_score(tiny_bert, tmp_path):
    cfg = compose_cfg(["task=stsb", "method=lora", f"model.name_or_path={tiny_bert}"], tmp_path)
    model = assemble(cfg).model
    assert model.config.id2label == {0: "score"} and model.config.label2id == {"score": 0}
    model.merge_and_unload().save_pretrained(tmp_path / "merged")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").config.id2label == {
        0: "score"
    }


# ------------------------------------------------------------------------------------------ model card
def test_every_export_folder_has_a_model_card_with_the_run_results(runs):
    for method, folders in (("full", ("model", "merged")), ("lora", ("adapter", "merged"))):
        results = results_of(runs[method])
        wanted = {k: v for k, v in results["val"]["best"].items() if k in results["task_info"]["metrics"]}
        assert wanted
        for folder in folders:
            card = runs[method] / folder / "README.md"
            meta = front_matter(card)
            assert meta["library_name"] == ("peft" if folder == "adapter" else "transformers")
            assert {"peft_glue", method, "glue", "rte"} <= set(meta["tags"])
            assert meta["datasets"] == ["nyu-mll/glue"] and meta["metrics"] == ["accuracy"]
            (result,) = meta["model-index"][0]["results"]
            assert result["dataset"] == {
                "name": "GLUE RTE",
                "type": "nyu-mll/glue",
                "config": "rte",
                "split": "validation",
            }
            assert {m["name"]: m["value"] for m in result["metrics"]} == wanted
            body = card.read_text().split("---\n", 2)[2]
            command = " ".join(["python -m peft_glue.train", *map(shlex.quote, results["overrides"])])
            assert f"```bash\n{command}\n```" in body and f"method={method} task=rte merge=" in command
            assert "entailment" in body and str(runs["glue"]) in body
            loader = (
                "PeftModel.from_pretrained" if folder == "adapter" else "AutoModelForSequenceClassification"
            )
            assert loader in body

    # the card's own loading code loads the adapter, its head named as the task's labels
    code = re.search(
        r"## Load\n\n```python\n(.*?)```", (runs["lora"] / "adapter" / "README.md").read_text(), re.S
    )
    namespace: dict = {}
    exec(code.group(1), namespace)
    assert namespace["model"].config.id2label == RTE_LABELS

    ModelCard = pytest.importorskip("huggingface_hub").ModelCard
    card = ModelCard.load(runs["lora"] / "adapter" / "README.md")
    (evaluation,) = card.data.eval_results
    assert evaluation.dataset_type == "nyu-mll/glue" and evaluation.metric_type == "accuracy"
    assert evaluation.metric_value == results_of(runs["lora"])["val"]["best"]["accuracy"]


def test_card_of_a_bitfit_run_with_a_carved_validation_split(tmp_path):
    (tmp_path / "bitfit").mkdir()
    results = {
        "status": "completed",
        "task": "mrpc",
        "method": {"name": "bitfit", "lr": 1e-3},
        "model_name_or_path": "bert-base-uncased",
        "seed": 1,
        "overrides": ["method=bitfit", "data.validation_size=0.1"],
        "task_info": {"metrics": ["accuracy", "f1", "acc_and_f1"], "labels": ["0", "1"], "monitor": "f1"},
        "splits": {"validation_from": "train", "test_from": "glue_dev", "validation_size": 0.1},
        "val": {"best": {"epoch": 2, "step": 9, "accuracy": 0.75, "f1": 0.8, "acc_and_f1": 0.775}},
        "test": {"loss": 0.5, "accuracy": 0.7, "f1": 0.78, "acc_and_f1": 0.74},
        "exports": {"weights": "/moved/elsewhere/bitfit"},
    }
    (card,) = write_cards(tmp_path, RunResults.from_dict(results))
    meta = front_matter(card)
    assert meta["base_model"] == "bert-base-uncased" and meta["library_name"] == "transformers"
    assert meta["metrics"] == ["accuracy", "f1"]
    validation, test = meta["model-index"][0]["results"]
    assert validation["dataset"]["split"] == "train" and test["dataset"]["split"] == "validation"
    assert {m["name"]: m["value"] for m in validation["metrics"]} == {
        "accuracy": 0.75,
        "f1": 0.8,
        "acc_and_f1": 0.775,
    }
    assert {m["name"]: m["value"] for m in test["metrics"]} == {
        "accuracy": 0.7,
        "f1": 0.78,
        "acc_and_f1": 0.74,
    }
    assert (
        "apply_bitfit" in card.read_text() and "python -m peft_glue.train method=bitfit" in card.read_text()
    )


def test_the_card_names_the_heads_own_learning_rate():
    """VeRA's recipe trains the head at optimizer.head_lr: the card says so beside optimizer.lr."""
    vera = RunResults.from_dict({"optimizer": {"lr": 4e-3, "head_lr": 1e-2, "weight_decay": 0.01}})
    assert "- Optimizer: AdamW, lr 0.004 (the task head: 0.01), weight decay 0.01" in training_lines(vera)
    plain = RunResults.from_dict({"optimizer": {"lr": 4e-3, "head_lr": None, "weight_decay": 0.01}})
    assert "- Optimizer: AdamW, lr 0.004, weight decay 0.01" in training_lines(plain)


# ------------------------------------------------------------------------------------------ predict
def test_predict_merges_train_style_overrides_into_the_saved_config(runs, tmp_path):
    moved = write_tiny_rte(tmp_path / "moved", n_test=5)  # the data elsewhere, another test set
    predict_main(
        [
            f"run={runs['full']}",
            f"out={tmp_path / 'out'}",
            f"data.data_dir={moved}",
            "data.eval_batch_size=64",
            "trainer.devices=1",
            "trainer.precision=32-true",
            "trainer.accelerator=cpu",
        ]
    )
    lines = (tmp_path / "out" / "RTE.tsv").read_text().splitlines()
    assert len(lines) == 1 + 5 and {line.split("\t")[1] for line in lines[1:]} <= set(RTE_LABELS.values())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "optimizer.lr=1e-3",
            "predict takes no setting 'optimizer.lr'; it accepts run=, input=, out=, data.",
        ),
        ("+data.extra=1", "predict takes no setting '+data.extra'"),
        ("data.eval_batch_size=abc", "data.eval_batch_size=abc is not valid: expected a whole number"),
        ("data.eval_batch_size=0", "data.eval_batch_size=0 is not valid: expected a whole number >= 1"),
        ("trainer.precision=31", "trainer.precision=31 is not valid: expected one of"),
        ("trainer.devices=1,2", "trainer.devices: predict takes one value"),
    ],
)
def test_predict_refuses_a_key_or_value_in_one_line(override, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict_main([f"run={tmp_path}", override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------ export command
def test_export_offline_says_so_in_one_line_and_keeps_the_export(runs, tmp_path):
    run = runs["full"]
    (run / "model" / "README.md").unlink()
    config_file = run / "model" / "config.json"
    config = json.loads(config_file.read_text())
    config.pop("id2label"), config.pop("label2id")  # an export written before the labels were named
    config_file.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "peft_glue.export", f"run={run}", "push_to_hub=someone/tiny-rte"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith(
        f"error: cannot reach the Hugging Face Hub to push {run / 'model'} (offline?)"
    )
    assert errors[0].endswith(f"the export is in {run / 'model'}")
    # the card and the labels were rewritten before the push, and nothing was lost
    assert front_matter(run / "model" / "README.md")["library_name"] == "transformers"
    assert AutoModelForSequenceClassification.from_pretrained(run / "model").config.id2label == RTE_LABELS
    assert (run / "model" / "model.safetensors").is_file()


class FakeHfApi:
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_export_pushes_the_export_folder_with_huggingface_hub(runs, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    run = runs["lora"]
    export_main([f"run={run}", "push_to_hub=someone/tiny-rte-lora", "private=true"])
    (create, created), (upload, uploaded) = FakeHfApi.calls
    assert create == "create_repo" and created["repo_id"] == "someone/tiny-rte-lora"
    assert created["private"] is True and created["exist_ok"] is True
    assert upload == "upload_folder" and uploaded["repo_id"] == "someone/tiny-rte-lora"
    assert Path(uploaded["folder_path"]) == run / "adapter"
    assert (
        'PeftModel.from_pretrained(base, "someone/tiny-rte-lora")'
        in (run / "adapter" / "README.md").read_text()
    )
    assert "pushed" in capsys.readouterr().out

    FakeHfApi.calls = []
    assert (
        export(run, "someone/tiny-rte-merged", folder="merged")[-1]
        == "https://huggingface.co/someone/tiny-rte-merged"
    )
    assert Path(FakeHfApi.calls[-1][1]["folder_path"]) == run / "merged"
