"""Every encoder family, not only BERT (issue 25): methods place themselves by role on each family's own
modules, train a few steps with the loss going down or refuse in one line, exports reload with the family's
own loader, inputs and lengths follow the family, and the method x family matrix of docs/how-to/model.md is
current."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from benchmarks.compat_matrix import PAGE, matrix_markdown, method_names, page_block
from benchmarks.tiny_families import DECODERS, FAMILIES, POSITIONS, tiny_model, write_tiny_family
from peft_glue.errors import UserError
from peft_glue.predict import predict
from peft_glue.record import ADAPTER_DIR, BITFIT_DIR, MODEL_DIR, SAVED_CONFIG, RunRecord
from peft_glue.report import write_report
from peft_glue.results.runs import read_metrics
from peft_glue.train import train
from peft_glue.training.config_paths import CONFIG_DIR
from peft_glue.training.data import MODEL_INPUTS, tokenizer_fingerprint
from peft_glue.training.methods import Method, accept_past_key_values, apply_bitfit, is_head_parameter
from peft_glue.training.models import accepted_inputs, check_max_length, ensure_padding, position_limit
from peft_glue.training.module import GlueClassifier
from peft_glue.training.roles import resolve, role_modules
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
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    ensure_padding(tokenizer, model)  # a decoder's missing padding token: its end-of-sequence token
    encoded = tokenizer(first, second, padding=True, return_tensors="pt")
    taken = accepted_inputs(model, MODEL_INPUTS)
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
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    ensure_padding(AutoTokenizer.from_pretrained(folder), base)
    model = method.apply(base)
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
def test_compat_matrix_of_the_model_page_is_current():
    """Regenerate `python -m benchmarks.compat_matrix`; refresh with its --write when this fails."""
    table = matrix_markdown()
    assert "fails" not in table, table
    assert page_block(PAGE.read_text()) == table


# ------------------------------------------------------------------ a LoRA run of every family, and decoders
MODELS = [*FAMILIES, *DECODERS]  # the encoder families and the decoders as sequence classifiers
# three runs per case for resume, one for predict: the default tier keeps one decoder, the slow tier has all
FAST_MODEL = "llama"


def slow_but(*fast: str) -> list:
    return [m if m in fast else pytest.param(m, marks=pytest.mark.slow) for m in MODELS]


# a decoder's own names for the roles (Llama's and Qwen2's alike)
DECODER_NAMES = {
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "attention_output": "self_attn.o_proj",
    "ffn_out": "mlp.down_proj",
}


@pytest.fixture(scope="session")
def model_folders(family_folders, tmp_path_factory) -> dict[str, Path]:
    """The family folders and a tiny Llama and Qwen2 (no padding token in either config)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("decoders")
    return {**family_folders, **{d: write_tiny_family(d, root / d) for d in DECODERS}}


@pytest.fixture(scope="module")
def small_glue(tmp_path_factory) -> Path:
    return write_tiny_glue(tmp_path_factory.mktemp("glue"), n_train=16, n_dev=8, n_test=8)


def lora_overrides(folder: Path, glue: Path) -> list[str]:
    """LoRA with dropout (the random generators matter), merged at the end, the loss logged at every step, a
    checkpoint every 3 steps; 4 steps per epoch, 2 epochs."""
    return [
        f"model.name_or_path={folder}", f"data.data_dir={glue}", "task=sst2", "method=lora",
        "method.target_modules=[query,value]", "method.dropout=0.1", "optimizer.lr=1e-2", "seed=11",
        "merge=true", "data.max_length=64", "data.batch_size=4", "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1", "checkpoint.every_n_train_steps=3",
        "trainer.enable_progress_bar=false",
    ]  # fmt: skip


def train_in_process(overrides: list[str], folder: Path) -> RunRecord:
    """`python -m peft_glue.train <overrides>` in this process, the config saved where Hydra saves it."""
    cfg = compose_cfg(overrides, folder)
    (folder / SAVED_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save({k: v for k, v in cfg.items() if k != "hydra"}, folder / SAVED_CONFIG)
    record = RunRecord(folder)
    train(cfg, record)
    return record


@pytest.fixture(scope="module")
def lora_run(model_folders, small_glue, tmp_path_factory) -> Callable[[str], Path]:
    """Each family's LoRA run folder, trained on first use."""
    runs: dict[str, Path] = {}

    def run(family: str) -> Path:
        if family not in runs:
            runs[family] = tmp_path_factory.mktemp(f"lora-{family}")
            train_in_process(lora_overrides(model_folders[family], small_glue), runs[family])
        return runs[family]

    return run


def step_losses(folder: Path) -> list[tuple[int, float]]:
    metrics = read_metrics(folder).dropna(subset=["train/loss"])
    return list(zip(metrics["step"].astype(int), metrics["train/loss"], strict=True))


class Interrupted(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("family", MODELS)
def test_lora_resumes_exactly_on_every_family(
    family, lora_run, model_folders, small_glue, tmp_path, monkeypatch
):
    """Interrupted at step 7 (the last checkpoint is step 6), resumed: the same adapter, tensor for tensor,
    and the same loss at every step as the uninterrupted run."""
    reference, overrides = lora_run(family), lora_overrides(model_folders[family], small_glue)
    original = GlueClassifier.training_step

    def crash_at_step_7(self, batch, batch_idx):
        if self.global_step == 7:
            raise Interrupted
        return original(self, batch, batch_idx)

    monkeypatch.setattr(GlueClassifier, "training_step", crash_at_step_7)
    with pytest.raises(Interrupted):
        train_in_process(overrides, tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    monkeypatch.setattr(GlueClassifier, "training_step", original)
    assert train_in_process([*overrides, "resume=auto"], tmp_path).results.resumed_from.endswith("last.ckpt")

    ours, theirs = (
        load_file(folder / "adapter" / "adapter_model.safetensors") for folder in (tmp_path, reference)
    )
    assert ours.keys() == theirs.keys() and any("lora_B" in key for key in ours)
    assert [key for key in ours if not torch.equal(ours[key], theirs[key])] == []
    losses = step_losses(tmp_path)
    assert [step for step, _ in losses] == list(range(8)) and losses == step_losses(reference)


def submitted(file: Path) -> list[int]:
    return [int(line.split("\t")[1]) for line in file.read_text().splitlines()[1:]]


def reloaded_logits(base_folder: Path, run: Path, glue: Path) -> tuple[torch.Tensor, ...]:
    """The SST-2 test set's logits of the base model, of the run's adapter on it (peft's loader) and of its
    merged model (transformers'), tokenized by the tokenizer the run exported (a decoder's padding token)."""
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    lines = (glue / "SST-2" / "test.tsv").read_text().splitlines()[1:]
    encoded = tokenizer([line.split("\t", 1)[1] for line in lines], padding=True, return_tensors="pt")

    def base() -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(
            base_folder, num_labels=2, pad_token_id=tokenizer.pad_token_id
        )

    adapter = PeftModel.from_pretrained(base(), run / "adapter")
    merged = AutoModelForSequenceClassification.from_pretrained(run / "merged")
    inputs = {k: encoded[k] for k in accepted_inputs(merged, MODEL_INPUTS) if k in encoded}
    with torch.no_grad():
        return tuple(model.eval()(**inputs).logits for model in (base(), adapter, merged))


@pytest.mark.parametrize("family", slow_but(FAST_MODEL))
def test_lora_run_of_every_family_predicts_and_reloads(family, lora_run, model_folders, small_glue, tmp_path):
    """`predict` rebuilds the run and writes the submission the run wrote; peft's and transformers' own
    loaders reload the adapter and the merged model (merge=true) with the same predictions."""
    run = lora_run(family)
    [written] = predict(run, out_dir=tmp_path)
    assert written.name == "SST-2.tsv" and submitted(written) == submitted(run / "SST-2.tsv")
    untrained, adapter, merged = reloaded_logits(model_folders[family], run, small_glue)
    assert not torch.allclose(untrained, adapter)  # the adapter is in the reloaded model
    assert torch.allclose(adapter, merged, atol=1e-5)
    assert adapter.argmax(-1).tolist() == submitted(written)


@pytest.mark.parametrize("decoder", DECODERS)
def test_roles_of_a_decoder_are_its_own_projections(decoder):
    found = role_modules(tiny_model(decoder))
    for role, own in DECODER_NAMES.items():
        assert [name.removesuffix("." + own) for name in found[role]] == [
            f"model.layers.{i}" for i in range(2)
        ]
    assert {name.rsplit(".", 1)[1] for name in found["ffn_in"]} == {"gate_proj", "up_proj"}
    assert len(found["layernorm"]) == 2 * 2 + 1  # RMSNorm before attention and MLP, and the final one
    assert not any(name.startswith("score") for name in found["linear"])  # the head is no role's place


@pytest.mark.parametrize("decoder", DECODERS)
def test_lora_trains_a_decoder_classifier_without_a_padding_token(decoder, model_folders):
    assert AutoTokenizer.from_pretrained(model_folders[decoder]).pad_token is None or decoder == "qwen2"
    assert (
        AutoModelForSequenceClassification.from_pretrained(model_folders[decoder]).config.pad_token_id is None
    )
    check_trains_or_refuses("lora", decoder, model_folders[decoder])


@pytest.mark.parametrize("option", ["qwen2_5_0_5b", "smollm2_135m"])
def test_decoder_options_map_roles_to_their_projections(option):
    """The conf/model options' architectures (built on the meta device: no memory, no weights): LoRA's
    query and value roles become q_proj and v_proj of every layer."""
    architecture = OmegaConf.to_container(
        OmegaConf.load(CONFIG_DIR / "model" / f"{option}.yaml").architecture
    )
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(
            AutoConfig.for_model(**architecture, num_labels=2)
        )
    found = role_modules(model)
    assert len(found["query"]) == architecture["num_hidden_layers"]
    assert resolve(model, ["query", "value"], "method.target_modules").names == ["q_proj", "v_proj"]


def exported_logits(method_name: str, base_folder: Path, run: Path, glue: Path) -> tuple[torch.Tensor, ...]:
    """The SST-2 test set's logits of the base model and of a run's export, loaded by the library that
    owns its format: peft's ``PeftModel.from_pretrained``, transformers' ``from_pretrained`` (full),
    ``apply_bitfit``."""
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    lines = (glue / "SST-2" / "test.tsv").read_text().splitlines()[1:]
    encoded = tokenizer([line.split("\t", 1)[1] for line in lines], padding=True, return_tensors="pt")
    export_dir = build_method(method_name).export_dir
    base = AutoModelForSequenceClassification.from_pretrained(base_folder, num_labels=2)
    if export_dir == MODEL_DIR:
        model = AutoModelForSequenceClassification.from_pretrained(run / MODEL_DIR)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base_folder, num_labels=2)
        if export_dir == BITFIT_DIR:
            model = apply_bitfit(model, run / BITFIT_DIR)
        else:  # prefix tuning: transformers 5 renamed the cache argument (docs/how-to/method.md)
            model = PeftModel.from_pretrained(accept_past_key_values(model), run / ADAPTER_DIR)
    inputs = {k: encoded[k] for k in GlueClassifier(model, MRPC(), lr=1e-3).model_inputs if k in encoded}
    with torch.no_grad():
        return base.eval()(**inputs).logits, model.eval()(**inputs).logits


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method_name", method_names())
def test_every_method_exports_what_its_loader_reloads_on_every_family(
    method_name, family, family_folders, small_glue, tmp_path
):
    """A run of each method on each family (or its one-line refusal): the export, reloaded with its
    library's loader, predicts the test set as the run's submission file says."""
    overrides = [
        f"model.name_or_path={family_folders[family]}", f"data.data_dir={small_glue}", "task=sst2",
        f"method={method_name}", "data.max_length=64", "data.batch_size=4", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        # fp32 on every machine: under bf16-mixed DeBERTa-v2 overflows with LoHa, LoKr, OFT, VeRA, FourierFT
        "trainer.precision=32-true",
    ]  # fmt: skip
    if (method_name, family) in REFUSED:
        with pytest.raises(UserError, match=f"method={method_name} cannot run on {family}: "):
            train_in_process(overrides, tmp_path)
        return
    train_in_process(overrides, tmp_path)
    untrained, logits = exported_logits(method_name, family_folders[family], tmp_path, small_glue)
    assert not torch.allclose(untrained, logits)  # what training changed is in the reloaded model
    assert logits.argmax(-1).tolist() == submitted(tmp_path / "SST-2.tsv")


@pytest.mark.slow
def test_report_lists_each_familys_run(model_folders, small_glue, tmp_path):
    """`report` over LoRA runs of an encoder and a decoder: each run's row names its checkpoint and holds
    the metrics and adapted modules of its results.json."""
    runs = {}
    for family in ("deberta-v2", FAST_MODEL):
        runs[family] = tmp_path / family
        overrides = lora_overrides(model_folders[family], small_glue)
        result = run_cli(*overrides, "trainer.max_epochs=1", f"hydra.run.dir={runs[family]}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    write_report(list(runs.values()), tmp_path / "report", aso_iterations=0)
    table = pd.read_csv(tmp_path / "report" / "results.csv")
    assert sorted(table["model_name_or_path"]) == sorted(str(model_folders[family]) for family in runs)
    for family, run in runs.items():
        row = table[table["model_name_or_path"] == str(model_folders[family])].iloc[0]
        results = json.loads((run / "results.json").read_text())
        assert row["val.best.accuracy"] == pytest.approx(results["val"]["best"]["accuracy"])
        assert json.loads(row["adapted_modules"]) == results["adapted_modules"]


@pytest.mark.parametrize("name", ["loha", "lokr", "oft", "vera", "fourierft"])
def test_methods_that_overflow_deberta_in_bf16_are_refused_in_one_line(name):
    """These peft layers stop transformers' DeBERTa-v2 attention under bf16 autocast (an overflow deep in
    its attention): a one-line refusal naming the fix, before anything trains; fp32 and LoRA still run."""
    method = build_method(name)
    model = tiny_model("deberta-v2")
    refusal = f"method={name} cannot run on deberta-v2: .*; use trainer.precision=32-true"
    with pytest.raises(UserError, match=refusal):
        method.check_precision(model, "bf16-mixed")
    method.check_precision(model, "32-true")
    build_method("lora").check_precision(model, "bf16-mixed")
    method.check_precision(tiny_model("roberta"), "bf16-mixed")
