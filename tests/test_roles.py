"""Every encoder family, not only BERT (issue 25): methods place themselves by role on each family's own
modules, train a few steps with the loss going down or refuse in one line, exports reload with the family's
own loader, inputs and lengths follow the family, and the README's method x family matrix is current."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks.compat_matrix import README, matrix_markdown, method_names, readme_block
from benchmarks.tiny_families import FAMILIES, POSITIONS, tiny_model, write_tiny_family
from peft_glue.errors import UserError
from peft_glue.record import RunRecord
from peft_glue.train import train
from peft_glue.training.config_paths import CONFIG_DIR
from peft_glue.training.data import MODEL_INPUTS, tokenizer_fingerprint
from peft_glue.training.methods import Method, is_head_parameter
from peft_glue.training.models import accepted_inputs, check_max_length, position_limit
from peft_glue.training.module import GlueClassifier
from peft_glue.training.roles import role_modules
from peft_glue.training.tasks import MRPC

from .conftest import compose_cfg, run_cli, write_tiny_glue

# each family's own name for the module in each role (written from the architectures, not from roles.py)
OWN_NAMES = {
    "bert": {
        "query": "attention.self.query",
        "attention_output": "attention.output.dense",
        "ffn_in": "intermediate.dense",
    },
    "roberta": {"query": "attention.self.query", "ffn_out": "output.dense", "value": "attention.self.value"},
    "xlm-roberta": {"query": "attention.self.query", "key": "attention.self.key"},
    "deberta-v2": {
        "query": "query_proj",
        "key": "key_proj",
        "value": "value_proj",
        "ffn_in": "intermediate.dense",
    },
    "electra": {"query": "attention.self.query", "attention_output": "attention.output.dense"},
    "albert": {
        "query": "attention.query",
        "attention_output": "attention.dense",
        "ffn_in": "ffn",
        "ffn_out": "ffn_output",
    },
    "distilbert": {
        "query": "q_lin",
        "key": "k_lin",
        "value": "v_lin",
        "attention_output": "out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    },
    "modernbert": {
        "query": "attn.Wqkv",
        "value": "attn.Wqkv",
        "attention_output": "attn.Wo",
        "ffn_in": "mlp.Wi",
        "ffn_out": "mlp.Wo",
    },
}
LAYERS = {family: 1 if family == "albert" else 2 for family in FAMILIES}  # ALBERT shares one layer
# where a method cannot apply, and the reason its refusal names
REFUSED = {
    ("bitfit", "modernbert"): "no bias terms",
    **{
        ("prefix_tuning", f): "takes no key/value cache"
        for f in ("deberta-v2", "albert", "distilbert", "modernbert")
    },
}
CORE = ("lora", "bitfit", "prefix_tuning", "prompt_tuning")  # default tier; the rest slow


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory) -> dict[str, Path]:
    """Each family tiny, saved with its tokenizer to a folder (a ``model.name_or_path``)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("families")
    return {family: write_tiny_family(family, root / family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_roles_are_each_familys_own_modules(family):
    found = role_modules(tiny_model(family))
    for role, own in OWN_NAMES[family].items():
        assert found[role], f"{family} has no {role}"
        assert all(name.endswith("." + own) for name in found[role]), (role, found[role])
        assert len(found[role]) == LAYERS[family], (role, found[role])
    assert found["layernorm"] and found["linear"]
    assert not set(found["attention"]) & set(found["ffn_in"] + found["ffn_out"])


def build_method(name: str) -> Method:
    return instantiate(OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml").method, _convert_="all")


@functools.cache
def family_batch(folder: Path) -> tuple[dict, torch.Tensor]:
    """Four sentence pairs in the family's own input format (its special tokens, pair layout, and only the
    inputs its model takes), labels 1, 1, 1, 0."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    first = ["the film is good", "a bad movie", "it was quite lovely", "the plot is dull and grim"]
    second = ["a great story", "the film was awful", "a happy film", "very sad"]
    encoded = tokenizer(first, second, padding=True, return_tensors="pt")
    taken = accepted_inputs(AutoModelForSequenceClassification.from_pretrained(folder), MODEL_INPUTS)
    return {k: encoded[k] for k in taken if k in encoded}, torch.tensor([1, 1, 1, 0])


def own_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of the method itself, not of the task head (which every method trains)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inside = "base_model.model." if base is not model else ""  # a peft model's wrapped base

    def in_head(name: str) -> bool:
        return name.startswith(inside) and is_head_parameter(base, name.removeprefix(inside))

    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad and ".modules_to_save." not in name and not in_head(name)
    }


def train_a_few_steps(method: Method, folder: Path, steps: int = 8) -> tuple[float, float, list[str]]:
    """The loss (dropout off) before and after ``steps`` AdamW steps of the method on one batch, and the
    method's own tensors that did not change."""
    torch.manual_seed(0)
    model = method.apply(AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2))
    inputs, labels = family_batch(folder)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = method.configure_optimizer(model, [{"params": trainable}], lr=1e-3, weight_decay=0.0)
    method.start_training(model, total_steps=100)
    start = own_parameters(model)
    assert start, "the method trains nothing of its own"

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(**inputs).logits, labels)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return loss().item()

    before = eval_loss()
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        method.after_optimizer_step(model, step)
    end = own_parameters(model)
    return before, eval_loss(), [name for name in start if torch.equal(start[name], end[name])]


def check_trains_or_refuses(method_name: str, family: str, folder: Path) -> None:
    method = build_method(method_name)
    if (method_name, family) in REFUSED:
        with pytest.raises(UserError) as refusal:
            train_a_few_steps(method, folder)
        message = str(refusal.value)
        assert message.startswith(f"method={method_name} cannot run on {family}: ") and "\n" not in message
        assert REFUSED[method_name, family] in message
        return
    before, after, unchanged = train_a_few_steps(method, folder)
    assert after < before, f"{method_name} on {family}: loss {before:.4f} -> {after:.4f}"
    assert not unchanged, f"{method_name} on {family}: {unchanged[:3]} never changed"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method_name", CORE)
def test_core_methods_train_or_refuse_on_every_family(method_name, family, family_folders):
    check_trains_or_refuses(method_name, family, family_folders[family])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method_name", [m for m in method_names() if m not in CORE])
def test_every_other_method_trains_or_refuses_on_every_family(method_name, family, family_folders):
    check_trains_or_refuses(method_name, family, family_folders[family])


def test_inputs_follow_the_family(family_folders):
    """token_type_ids only to the families that take them; a tokenizer that returns other inputs never
    shares a tokenization cache entry with one that does not (DistilBERT's and BERT's vocabularies match)."""
    takes = {
        f: "token_type_ids" in GlueClassifier(tiny_model(f), MRPC(), lr=1e-3).model_inputs for f in FAMILIES
    }
    assert {f for f, yes in takes.items() if not yes} == {"distilbert", "modernbert"}
    bert, distil = (AutoTokenizer.from_pretrained(family_folders[f]) for f in ("bert", "distilbert"))
    assert bert.get_vocab() == distil.get_vocab()
    assert tokenizer_fingerprint(bert) != tokenizer_fingerprint(distil)
    assert "token_type_ids" in MODEL_INPUTS


def test_max_length_is_checked_against_the_positions():
    roberta = tiny_model("roberta")  # POSITIONS + 2 rows, the first two never a text position
    assert position_limit(roberta.config) == POSITIONS == position_limit(tiny_model("bert").config)
    assert position_limit(tiny_model("deberta-v2").config) is None  # relative positions only
    check_max_length(roberta, POSITIONS)
    with pytest.raises(
        UserError, match=rf"data.max_length={POSITIONS + 1} exceeds the {POSITIONS} positions"
    ):
        check_max_length(roberta, POSITIONS + 1)


def dry_run(folder: Path, method: str, run_dir: Path) -> RunRecord:
    cfg = compose_cfg(
        [f"model.name_or_path={folder}", f"method={method}", "dry_run=true", "data.max_length=64"], run_dir
    )
    record = RunRecord(run_dir)
    train(cfg, record)
    return json.loads((run_dir / "results.json").read_text())


def test_results_list_the_adapted_modules(family_folders, tmp_path):
    deberta = dry_run(family_folders["deberta-v2"], "lora", tmp_path / "deberta")
    queries = [f"deberta.encoder.layer.{i}.attention.self.query_proj" for i in range(2)]
    assert deberta["adapted_modules"] == [*queries, "classifier"]  # peft's SEQ_CLS head: the classifier
    assert deberta["adaptation_notes"] == []
    modern = dry_run(family_folders["modernbert"], "lora", tmp_path / "modern")
    assert modern["adapted_modules"][:2] == [f"model.layers.{i}.attn.Wqkv" for i in range(2)]
    assert "fused Wqkv" in modern["adaptation_notes"][0]
    bitfit = dry_run(family_folders["distilbert"], "bitfit", tmp_path / "distil")
    biases = [name for name in bitfit["adapted_modules"] if name.endswith(".bias")]
    assert len(biases) == 2 * 8 + 1 and "pre_classifier" in bitfit["adapted_modules"]  # 8 biases a layer


def test_refusal_is_one_line_before_anything_trains(family_folders, tmp_path):
    result = run_cli(
        f"model.name_or_path={family_folders['modernbert']}",
        "method=bitfit",
        "data.data_dir=/never/read",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith(
        "method=bitfit cannot run on modernbert: its layers have no bias terms, so "
        "BitFit would train only the head"
    ), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def run_and_reload(family: str, folder: Path, tmp_path: Path, method: str) -> None:
    """Train through the command line (merge=true), then reload the adapter with peft's loader and the
    merged model with transformers': both predict the test set as the run's submission file says."""
    glue = write_tiny_glue(tmp_path / "glue", n_train=16, n_dev=8, n_test=8)
    run = tmp_path / "run"
    result = run_cli(
        f"model.name_or_path={folder}",
        f"method={method}",
        "task=sst2",
        "merge=true",
        f"data.data_dir={glue}",
        "data.max_length=64",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model = PeftModel.from_pretrained(base, run / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lines = (glue / "SST-2" / "test.tsv").read_text().splitlines()[1:]
    sentences = [line.split("\t", 1)[1] for line in lines]
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    inputs = {k: encoded[k] for k in GlueClassifier(base, MRPC(), lr=1e-3).model_inputs if k in encoded}
    merged = AutoModelForSequenceClassification.from_pretrained(run / "merged").eval()
    with torch.no_grad():
        predicted = model(**inputs).logits.argmax(-1).tolist()
        predicted_merged = merged(**inputs).logits.argmax(-1).tolist()
    submitted = [int(line.split("\t")[1]) for line in (run / "SST-2.tsv").read_text().splitlines()[1:]]
    assert predicted == submitted == predicted_merged


def test_lora_export_of_deberta_reloads_with_peft(family_folders, tmp_path):
    run_and_reload("deberta-v2", family_folders["deberta-v2"], tmp_path, "lora")


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "deberta-v2"])
def test_lora_export_of_every_family_reloads_with_peft(family, family_folders, tmp_path):
    run_and_reload(family, family_folders[family], tmp_path, "lora")


@pytest.mark.slow
def test_readme_compat_matrix_is_current():
    """Regenerate `python -m benchmarks.compat_matrix`; refresh with its --write when this fails."""
    table = matrix_markdown()
    assert "fails" not in table, table
    assert readme_block(README.read_text()) == table
