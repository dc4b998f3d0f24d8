"""Every GLUE task: its reader (on the real files where /work/shared has them, else on small files in the
exact GLUE layout), its metrics against hand-computed values, its submission files, a tiny training run."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from peft_glue.errors import UserError
from peft_glue.predict import predict
from peft_glue.record import RunRecord, RunResults, read_results
from peft_glue.train import train
from peft_glue.training.artifacts import write_submission
from peft_glue.training.data import load_glue, read_glue_tsv
from peft_glue.training.tasks import MNLI, MRPC, QNLI, QQP, RTE, STSB, WNLI, CoLA

from .conftest import FILLER, NEGATIVE, POSITIVE, SHARED_GLUE, compose_cfg

needs_real_glue = pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="no real GLUE files in /work/shared")
WORDS = POSITIVE + NEGATIVE + FILLER

# exact GLUE headers (as the real files in /work/shared; QNLI, QQP, MNLI as GLUE ships them)
MNLI_HEAD = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
MNLI_HEAD += "\tsentence2_parse\tsentence1\tsentence2"
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"


def _text(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def stsb_row(i: int, rng: random.Random) -> str:
    return f"{i}\tmain-news\theadlines\t2015\t{i:04d}\tnone\tnone\t{_text(rng)}\t{_text(rng)}"


def write_task(root: Path, task: str, n_train: int = 24, n_dev: int = 12, n_test: int = 10) -> Path:
    """Small files of ``task`` in the classic GLUE layout (headers, header-less CoLA, MNLI's five files)."""
    rng = random.Random(task)
    files: dict[str, list[str]] = {}
    if task == "cola":
        for split, n in (("train", n_train), ("dev", n_dev)):
            files[split] = [f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\t{_text(rng)}" for i in range(n)]
        files["test"] = ["index\tsentence", *(f"{i}\t{_text(rng)}" for i in range(n_test))]
    elif task == "stsb":
        for split, n in (("train", n_train), ("dev", n_dev)):
            scores = ["5.000", "3.8", "0", "1.53333333333333", "4.75"]
            rows = [f"{stsb_row(i, rng)}\t{rng.choice(scores)}" for i in range(n)]
            files[split] = [f"{STSB_HEAD}\tscore", *rows]
        files["test"] = [STSB_HEAD, *(stsb_row(i, rng) for i in range(n_test))]
    elif task in ("rte", "wnli"):
        labels = ["entailment", "not_entailment"] if task == "rte" else ["0", "1"]
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = [f"{i}\t{_text(rng)}\t{_text(rng)}\t{labels[i % 2]}" for i in range(n)]
            files[split] = ["index\tsentence1\tsentence2\tlabel", *rows]
        files["test"] = [
            "index\tsentence1\tsentence2",
            *(f"{i}\t{_text(rng)}\t{_text(rng)}" for i in range(n_test)),
        ]
    elif task == "qnli":
        labels = ["entailment", "not_entailment"]
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = [f"{i}\t{_text(rng)} ?\t{_text(rng)}\t{labels[i % 2]}" for i in range(n)]
            files[split] = ["index\tquestion\tsentence\tlabel", *rows]
        files["test"] = [
            "index\tquestion\tsentence",
            *(f"{i}\t{_text(rng)}\t{_text(rng)}" for i in range(n_test)),
        ]
    elif task == "qqp":
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = [f"{100 + i}\t{2 * i}\t{2 * i + 1}\t{_text(rng)}\t{_text(rng)}\t{i % 2}" for i in range(n)]
            files[split] = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", *rows]
        files["test"] = [
            "id\tquestion1\tquestion2",
            *(f"{i}\t{_text(rng)}\t{_text(rng)}" for i in range(n_test)),
        ]
    elif task == "mnli":
        labels = ["entailment", "neutral", "contradiction"]

        def rows(n: int, gold: bool, votes: int) -> list[str]:
            out = []
            for i in range(n):
                a, b = _text(rng), _text(rng)
                parses = f"( {a} )\t( {b} )\t(ROOT {a})\t(ROOT {b})"
                row = f"{i}\t{1000 + i}\t{1000 + i}e\tfiction\t{parses}\t{a}\t{b}"
                if gold:
                    row += "".join(f"\t{labels[i % 3]}" for _ in range(votes)) + f"\t{labels[i % 3]}"
                out.append(row)
            return out

        files["train"] = [f"{MNLI_HEAD}\tlabel1\tgold_label", *rows(n_train, True, 1)]
        dev_head = f"{MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
        files["dev_matched"] = [dev_head, *rows(n_dev, True, 5)]
        files["dev_mismatched"] = [dev_head, *rows(n_dev + 2, True, 5)]
        files["test_matched"] = [MNLI_HEAD, *rows(n_test, False, 0)]
        files["test_mismatched"] = [MNLI_HEAD, *rows(n_test + 1, False, 0)]
        diagnostic = ["index\tsentence1\tsentence2", *(f"{i}\t{_text(rng)}\t{_text(rng)}" for i in range(5))]
        (root / "diagnostic").mkdir(parents=True, exist_ok=True)
        (root / "diagnostic" / "diagnostic.tsv").write_text("\n".join(diagnostic) + "\n")
    folder = root / {"cola": "CoLA", "stsb": "STS-B", "rte": "RTE", "wnli": "WNLI", "qnli": "QNLI",
                     "qqp": "QQP", "mnli": "MNLI"}[task]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------- readers
@needs_real_glue
def test_real_cola_has_no_header_in_train_and_dev_and_one_in_test():
    raw = load_glue(CoLA(), SHARED_GLUE)
    assert {split: len(data) for split, data in raw.items()} == {
        "train": 8551,
        "validation": 1043,
        "test": 1063,
    }
    assert raw["train"][0]["sentence1"].startswith("Our friends won't buy this analysis")
    assert set(raw["validation"]["label"]) == {0, 1} and raw["test"]["label"][0] == -1
    assert raw["test"]["idx"][:3] == [0, 1, 2]


@needs_real_glue
def test_real_stsb_scores_are_floats_and_quotes_are_verbatim():
    raw = load_glue(STSB(), SHARED_GLUE)
    assert {split: len(data) for split, data in raw.items()} == {
        "train": 5749,
        "validation": 1500,
        "test": 1379,
    }
    scores = np.array(raw["validation"]["label"])
    assert scores.min() == 0 and scores.max() == 5 and abs(scores.mean() - 2.364) < 1e-3
    assert raw["validation"][764]["sentence1"].startswith('"')
    assert raw["train"][0]["label"] == 5.0


@needs_real_glue
@pytest.mark.parametrize(("task", "sizes", "dev_labels"), [
    (RTE(), (2490, 277, 3000), {0: 146, 1: 131}),  # 0 = entailment
    (WNLI(), (635, 71, 146), {0: 40, 1: 31}),
])  # fmt: skip
def test_real_rte_and_wnli(task, sizes, dev_labels):
    raw = load_glue(task, SHARED_GLUE)
    assert tuple(len(raw[split]) for split in ("train", "validation", "test")) == sizes
    labels = raw["validation"]["label"]
    assert {label: labels.count(label) for label in set(labels)} == dev_labels


def test_qnli_qqp_mnli_in_their_glue_layout(tmp_path):
    for name in ("qnli", "qqp", "mnli"):
        write_task(tmp_path, name)
    qnli = load_glue(QNLI(), tmp_path)
    assert qnli["train"]["label"][:2] == [0, 1] and qnli["train"][0]["sentence1"].endswith("?")
    qqp = load_glue(QQP(), tmp_path)
    assert qqp["train"]["idx"][:2] == [100, 101] and qqp["test"]["idx"][:2] == [0, 1]  # the id column
    assert qqp["train"]["label"][:2] == [0, 1]
    mnli = load_glue(MNLI(), tmp_path)
    assert {split: len(data) for split, data in mnli.items()} == {
        "train": 24, "validation": 12, "validation_mm": 14, "test": 10, "test_mm": 11, "test_ax": 5,
    }  # fmt: skip
    assert mnli["train"]["label"][:3] == [0, 1, 2]  # entailment, neutral, contradiction: the Hub's order
    assert mnli["validation"][0]["sentence1"] == mnli["validation"][0]["sentence1"].strip()


def test_labels_as_words_or_hub_indices(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n1\ta\tb\t0\n")
    assert read_glue_tsv(path, RTE())["label"] == [1, 0]


@pytest.mark.parametrize(("task", "text", "message"), [
    (STSB(), f"{STSB_HEAD}\tscore\n0\tg\tf\t2012\t1\tn\tn\ta\tb\t4.0\n1\tg\tf\t2012\t1\tn\tn\ta\tb\thigh\n",
     r"dev.tsv line 3: score 'high' is not a number"),
    (RTE(), "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tneutral\n",
     r"dev.tsv line 3: label 'neutral' is not entailment or not_entailment"),
    (CoLA(), "gj04\t1\t\tfine\ngj04\t7\t*\tbad\n", r"dev.tsv line 2: label '7' is not 0 or 1"),
    (MNLI(), f"{MNLI_HEAD}\tgold_label\n0\t1\t1e\tg\ta\tb\ta\tb\ta\tb\tyes\n",
     r"dev.tsv line 2: label 'yes' is not entailment, neutral or contradiction"),
])  # fmt: skip
def test_bad_labels_name_the_file_and_line(tmp_path, task, text, message):
    path = tmp_path / "dev.tsv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        read_glue_tsv(path, task)
    assert "\n" not in str(error.value)


def test_cola_folder_without_its_train_file(tmp_path):
    write_task(tmp_path, "cola")
    (tmp_path / "CoLA" / "train.tsv").unlink()
    with pytest.raises(UserError, match=r"CoLA lacks train.tsv; .*CoLA/\{train,dev,test\}.tsv") as error:
        load_glue(CoLA(), tmp_path)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------- metrics
def computed(task, preds, labels) -> dict[str, float]:
    metrics = task.metric_collection()
    metrics.update(torch.as_tensor(preds), torch.as_tensor(labels))
    values = {key: float(value) for key, value in metrics.compute().items()}
    return {**values, **{key: float(value) for key, value in task.derive(values).items()}}


def test_cola_matthews_correlation_by_hand():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    preds[:120] = labels[:120]
    tp, tn = np.sum((preds == 1) & (labels == 1)), np.sum((preds == 0) & (labels == 0))
    fp, fn = np.sum((preds == 1) & (labels == 0)), np.sum((preds == 0) & (labels == 1))
    mcc = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert computed(CoLA(), preds, labels)["mcc"] == pytest.approx(mcc, abs=1e-6)


def test_stsb_pearson_spearman_and_their_mean_by_hand():
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 300).astype(np.float32)
    preds = (labels + rng.normal(0, 1.5, 300)).astype(np.float32)
    values = computed(STSB(), preds, labels)
    pearson, spearman = stats.pearsonr(preds, labels)[0], stats.spearmanr(preds, labels)[0]
    assert values["pearson"] == pytest.approx(pearson, abs=1e-5)
    assert values["spearman"] == pytest.approx(spearman, abs=1e-5)
    assert values["pearson_and_spearman"] == pytest.approx((pearson + spearman) / 2, abs=1e-5)
    assert STSB().monitor == "pearson_and_spearman"


@pytest.mark.parametrize("task", [MRPC(), QQP()])
def test_paired_f1_and_accuracy_by_hand(task):
    labels = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 0])
    preds = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 0])
    tp, fp, fn = 4, 1, 2
    f1, accuracy = 2 * tp / (2 * tp + fp + fn), 7 / 10
    values = computed(task, preds, labels)
    assert values["f1"] == pytest.approx(f1) and values["accuracy"] == pytest.approx(accuracy)
    assert values["acc_and_f1"] == pytest.approx((f1 + accuracy) / 2)
    assert task.monitor == "acc_and_f1"


def test_monitor_must_be_a_metric_of_the_task():
    assert MNLI(monitor="accuracy_mm").monitor == "accuracy_mm"
    with pytest.raises(UserError, match="choose one of: pearson, spearman, pearson_and_spearman"):
        STSB(monitor="accuracy")


# ---------------------------------------------------------------------------------------------- submissions
def test_submission_formats(tmp_path):
    batch = [(torch.tensor([2, 0, 1]), torch.tensor([5.7, -0.3, 2.51234]))]
    lines = write_submission(tmp_path / "STS-B.tsv", STSB(), batch).read_text().splitlines()
    assert lines == ["index\tprediction", "0\t0.000", "1\t2.512", "2\t5.000"]  # clipped to [0, 5]
    classes = [(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 2]))]
    mnli = write_submission(tmp_path / "MNLI-m.tsv", MNLI(), classes).read_text().splitlines()
    assert mnli == ["index\tprediction", "0\tneutral", "1\tentailment", "2\tcontradiction"]
    binary = [(torch.tensor([0, 1]), torch.tensor([1, 0]))]
    rte = write_submission(tmp_path / "RTE.tsv", RTE(), binary).read_text().splitlines()
    assert rte == ["index\tprediction", "0\tnot_entailment", "1\tentailment"]
    for task in (CoLA(), WNLI(), QQP()):
        assert write_submission(tmp_path / task.submission_file, task, binary).read_text() == (
            "index\tprediction\n0\t1\n1\t0\n"
        )
    assert QNLI().format_prediction(0) == "entailment"
    assert MNLI().all_submission_files == ("MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv")


# ---------------------------------------------------------------------------------------------- training
def tiny_run(tiny_bert: Path, glue: Path, run_dir: Path, task: str, method: str, *extra: str) -> dict:
    overrides = [
        f"task={task}",
        f"method={method}",
        f"model.name_or_path={tiny_bert}",
        f"data.data_dir={glue}",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_checkpointing=false",
        *extra,
    ]
    return completed_run(overrides, run_dir, task, method, "tiny").to_dict()


def completed_run(overrides: list[str], run_dir: Path, task: str, method: str, model: str) -> RunResults:
    """Train in this process with ``overrides``; the run must complete."""
    record = RunRecord(run_dir, task=task, method={"name": method}, model=model, seed=42)
    train(compose_cfg(overrides, run_dir), record)
    results = read_results(run_dir)
    assert results.status == "completed", results.error
    return results


@pytest.mark.parametrize(("task", "method", "files", "monitor"), [
    ("cola", "full", ["CoLA.tsv"], "mcc"),
    ("stsb", "lora", ["STS-B.tsv"], "pearson_and_spearman"),
    ("rte", "bitfit", ["RTE.tsv"], "accuracy"),
    ("wnli", "lora", ["WNLI.tsv"], "accuracy"),
    ("qnli", "full", ["QNLI.tsv"], "accuracy"),
    ("qqp", "bitfit", ["QQP.tsv"], "acc_and_f1"),
    ("mnli", "lora", ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"], "accuracy"),
])  # fmt: skip
def test_each_task_trains_and_writes_its_submission_files(tiny_bert, tmp_path, task, method, files, monitor):
    glue = write_task(tmp_path / "glue", task)
    results = tiny_run(tiny_bert, glue, tmp_path / "run", task, method)
    assert results["task_info"]["monitor"] == monitor and monitor in results["val"]["best"]
    if task == "mnli":  # both validation sets, the mismatched one under its own keys
        assert {"accuracy", "accuracy_mm"} <= results["val"]["best"].keys()
    for name in files:
        lines = (tmp_path / "run" / name).read_text().splitlines()
        assert lines[0] == "index\tprediction"
        indices = [int(line.split("\t")[0]) for line in lines[1:]]
        assert indices == sorted(indices) and len(indices) == {"MNLI-mm.tsv": 11, "AX.tsv": 5}.get(name, 10)


@pytest.mark.parametrize("method", ["full", "bitfit", "lora"])
def test_stsb_regression_head_trains_exports_and_predicts_again(tiny_bert, tmp_path, method):
    glue = write_task(tmp_path / "glue", "stsb")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    # full precision: predict runs in 32-bit, so the same weights give the same scores to the last digit
    results = tiny_run(tiny_bert, glue, run, "stsb", method, "optimizer.lr=1e-2", "trainer.precision=32-true")
    assert results["task_info"]["regression"] is True
    cfg = compose_cfg(
        ["task=stsb", f"method={method}", f"model.name_or_path={tiny_bert}", f"data.data_dir={glue}"], run
    )
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml", resolve=False)
    written = (run / "STS-B.tsv").read_text()
    again = predict(run, out_dir=tmp_path / "again")
    assert [p.name for p in again] == ["STS-B.tsv"]
    assert again[0].read_text() == written  # the trained head (and LoRA/BitFit tensors) came back
    values = [float(line.split("\t")[1]) for line in written.splitlines()[1:]]
    assert len(values) == 10 and all(0 <= v <= 5 for v in values)


def test_predict_input_of_mnli_mismatched_gives_the_runs_mismatched_predictions(tiny_bert, tmp_path):
    """``input=`` names its output after the input file: MNLI's mismatched test set predicted on its own
    is the run's MNLI-mm.tsv, not a file called MNLI-m.tsv."""
    glue = write_task(tmp_path / "glue", "mnli")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    tiny_run(tiny_bert, glue, run, "mnli", "lora", "trainer.precision=32-true")
    cfg = compose_cfg(
        ["task=mnli", "method=lora", f"model.name_or_path={tiny_bert}", f"data.data_dir={glue}"], run
    )
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml", resolve=False)
    written = predict(run, input_tsv=glue / "MNLI" / "test_mismatched.tsv", out_dir=tmp_path / "preds")
    assert [p.name for p in written] == ["test_mismatched.predictions.tsv"]
    assert written[0].read_text() == (run / "MNLI-mm.tsv").read_text()


def rte_majority() -> tuple[int, int]:
    """RTE dev: how many pairs carry its most frequent label, and how many there are (146 of 277)."""
    dev = read_glue_tsv(SHARED_GLUE / "RTE" / "dev.tsv", RTE())
    return int(max(np.bincount(dev["label"]))), len(dev)


@pytest.mark.slow  # MiniLM, one epoch on real RTE / STS-B: about 2 minutes each on 2 cores (`make test-slow`)
@needs_real_glue
@pytest.mark.parametrize(("task", "method", "lr", "batch_size", "metric"), [
    # measured 2026-11-29 (bf16 and fp32 alike at seed 42: 57.0%; seeds 1, 2: 56.7%, 55.6%)
    ("rte", "full", 5e-5, 8, "accuracy"),
    ("stsb", "lora", 2e-3, 16, "pearson"),  # measured: Pearson 0.565; the test asks for > 0.3
])  # fmt: skip
def test_minilm_learns_real_rte_and_stsb_in_one_epoch(tmp_path, task, method, lr, batch_size, metric):
    """One epoch of MiniLM beats RTE's majority class on its dev set (more pairs right than the 146 of 277
    that always answering `entailment` gets), and a Pearson correlation above 0.3 on STS-B's."""
    overrides = [
        f"task={task}",
        "model=minilm",
        f"method={method}",
        f"optimizer.lr={lr}",
        f"data.batch_size={batch_size}",
        f"data.data_dir={SHARED_GLUE}",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_checkpointing=false",
        "submission=false",
    ]
    results = completed_run(overrides, tmp_path, task, method, "minilm")
    value = results.best[metric]
    if task == "rte":  # in counts: a float32 accuracy of exactly the majority share can exceed its float64
        majority, pairs = rte_majority()
        assert round(value * pairs) > majority
    else:
        assert value > 0.3
