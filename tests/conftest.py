"""Shared fixtures: a tiny random BERT with its own vocabulary, a tiny GLUE folder, Hydra config helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Keep the user's Hugging Face caches out of the tests, and never wait on the network.
_CACHE = tempfile.mkdtemp(prefix="peft-glue-test-hf-")
os.environ["HF_HOME"] = _CACHE
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("GLUE_DIR", None)

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from peft_glue.training.config import CONFIG_DIR, register_resolvers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"
BOM = "\ufeff"

POSITIVE = ["good", "great", "fine", "lovely", "superb", "warm", "bright", "happy"]
NEGATIVE = ["bad", "awful", "poor", "dull", "grim", "cold", "dark", "sad"]
FILLER = ["the", "film", "is", "a", "story", "very", "and", "movie", "plot", "it", "was", "quite", '"', "'s"]


def _sentence(rng, words: list[str], length: int) -> str:
    return " ".join(rng.choice(words if i % 3 == 0 else FILLER) for i in range(length))


def write_tiny_glue(root: Path, n_train: int = 64, n_dev: int = 32, n_test: int = 24, seed: int = 0) -> Path:
    """GLUE-layout SST-2 and MRPC files with a learnable signal, BOMs and unbalanced quotes."""
    import random

    rng = random.Random(seed)
    sst, mrpc = root / "SST-2", root / "MRPC"
    sst.mkdir(parents=True, exist_ok=True)
    mrpc.mkdir(parents=True, exist_ok=True)

    def sst_rows(n: int) -> list[tuple[str, int]]:
        rows = []
        for i in range(n):
            label = i % 2
            rows.append((_sentence(rng, POSITIVE if label else NEGATIVE, 3 + rng.randrange(12)) + " ", label))
        return rows

    for name, n in (("train", n_train), ("dev", n_dev)):
        lines = ["sentence\tlabel", *(f"{s}\t{y}" for s, y in sst_rows(n))]
        (sst / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = ["index\tsentence", *(f"{i}\t{s.strip()}" for i, (s, _) in enumerate(sst_rows(n_test)))]
    (sst / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def mrpc_rows(n: int) -> list[tuple[int, str, str]]:
        rows = []
        for i in range(n):
            first = _sentence(rng, POSITIVE + NEGATIVE, 4 + rng.randrange(10))
            label = i % 2
            second = first if label else _sentence(rng, POSITIVE + NEGATIVE, 4 + rng.randrange(10))
            rows.append((label, first, second))
        return rows

    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    for name, n in (("train", n_train), ("dev", n_dev)):
        lines = [header, *(f"{y}\t{10 + i}\t{20 + i}\t{a}\t{b}" for i, (y, a, b) in enumerate(mrpc_rows(n)))]
        (mrpc / f"{name}.tsv").write_text(BOM + "\n".join(lines) + "\n", encoding="utf-8")
    test_header = "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
    lines = [test_header, *(f"{i}\t{i}\t{i}\t{a}\t{b}" for i, (_, a, b) in enumerate(mrpc_rows(n_test)))]
    (mrpc / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_tiny_bert(folder: Path) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) and a word-level vocabulary covering the fixtures."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + sorted(set(POSITIVE + NEGATIVE + FILLER + ["s", "'"]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 builds the tokenizer from `vocab` and ignores `vocab_file` (all words became [UNK])
    tokenizer = BertTokenizerFast(
        vocab_file=str(folder / "vocab.txt"), vocab={w: i for i, w in enumerate(vocab)}
    )
    words = POSITIVE + NEGATIVE + FILLER
    assert tokenizer.unk_token_id not in tokenizer(" ".join(words))["input_ids"], (
        "the fixtures' words are unknown"
    )
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,  # data.max_length (128) must fit its positions
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    return write_tiny_glue(tmp_path_factory.mktemp("glue"))


def shared_glue(task_folder: str = "") -> Path:
    """The real GLUE files beside the repository (``../shared``): skip the test where they are missing, but
    fail under CI (``CI=true``), where they are always placed, so a missing copy never passes silently."""
    path = SHARED_GLUE / task_folder
    if not path.is_dir():
        message = f"the real GLUE files are not at {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: ../shared must be there)")
        pytest.skip(message)
    return path


def tiny_overrides(tiny_bert: Path, tiny_glue: Path) -> list[str]:
    """A fast run: the tiny model, the tiny data, 2 short epochs, no progress bar."""
    return [
        f"model.name_or_path={tiny_bert}",
        f"data.data_dir={tiny_glue}",
        "data.batch_size=8",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
    ]


def compose_cfg(overrides: list[str], run_dir: Path) -> DictConfig:
    """The config that `python -m peft_glue.train <overrides>` runs, with Hydra's runtime set in-process."""
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run `python -m peft_glue.train ARGS` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "peft_glue.train", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
