"""The two speed levers of issue 32: frozen weights stored in bf16 under bf16-mixed (``frozen_bf16``), and a
compiled training step (``compile``). Values are compared, never timings."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from peft_glue.record import RunRecord
from peft_glue.train import train
from peft_glue.training import compiled_step
from peft_glue.training.compiled_step import compile_model, wants_compile
from peft_glue.training.components import assemble
from peft_glue.training.cpu_dropout import use_cpu_dropout
from peft_glue.training.data import GlueDataModule
from peft_glue.training.models import load_tokenizer
from peft_glue.training.module import GlueClassifier
from peft_glue.training.tasks import SST2

from .conftest import compose_cfg, tiny_overrides
from .test_resume import ADAPTER, step_losses

BF16_LORA = [
    "method=lora", "method.dropout=0.1", "method.target_modules=[query,value]", "task=sst2",
    "trainer.precision=bf16-mixed", "trainer.log_every_n_steps=1", "optimizer.lr=1e-2", "seed=5",
]  # fmt: skip


def trained(args: list[str], folder: Path) -> GlueClassifier:
    module = train(compose_cfg(args, folder), RunRecord(folder))
    assert json.loads((folder / "results.json").read_text())["status"] == "completed"
    return module


def base_model(tiny_bert: Path) -> torch.nn.Module:
    """The plain fp32 model a user loads: the pretrained weights with SST-2's two labels."""
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).eval()


def base_model_of(module: GlueClassifier) -> torch.nn.Module:
    """The pretrained model the run started from (its config's path), in fp32."""
    return AutoModelForSequenceClassification.from_pretrained(module.model.config.name_or_path, num_labels=2)


def dev_batch(tiny_bert: Path, tiny_glue: Path) -> dict:
    data = GlueDataModule(SST2(), load_tokenizer(str(tiny_bert)), data_dir=str(tiny_glue), batch_size=32)
    data.setup()
    batch = next(iter(data.val_dataloader()))
    return {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}


def run_logits(module: GlueClassifier, batch: dict) -> torch.Tensor:
    """The run's own predictions: its model as it trained, under bf16 autocast as Lightning evaluates it."""
    module.model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return module.model(**batch).logits.float()


def fp32_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # a plain fp32 model
    with torch.no_grad():
        return model(**batch).logits


def bf16_tolerance(run: torch.Tensor) -> float:
    """bf16 keeps 8 significant bits (a relative step of 2^-8); the tiny model's logits stay within a few
    steps of their fp32 values: 8 steps of the largest logit."""
    return 8 * 2**-8 * run.abs().max().item()


def assert_within_bf16_rounding(ours: torch.Tensor, run: torch.Tensor) -> None:
    assert (ours - run).abs().max().item() <= bf16_tolerance(run), (ours - run).abs().max()


SEEN_AT_FIRST_STEP: dict[str, dict[str, torch.dtype]] = {}  # run -> parameter name -> dtype


@pytest.fixture(scope="module")
def bf16_runs(tiny_bert, tiny_glue, tmp_path_factory) -> dict[str, tuple[Path, GlueClassifier]]:
    """The same bf16-mixed LoRA run with frozen weights in bf16 (and merge=true) and with them in fp32;
    the dtypes of the model's tensors at the first training step go to SEEN_AT_FIRST_STEP."""
    runs = {}
    for name, extra in {"on": ["frozen_bf16=true", "merge=true"], "off": ["frozen_bf16=false"]}.items():
        folder = tmp_path_factory.mktemp(f"bf16_{name}")

        def spy(module: GlueClassifier, batch: dict, batch_idx: int, run: str = name) -> None:
            if batch_idx == 0 and module.current_epoch == 0:
                SEEN_AT_FIRST_STEP[run] = {n: p.dtype for n, p in module.model.named_parameters()}

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(GlueClassifier, "on_train_batch_start", spy, raising=False)
            runs[name] = folder, trained([*BF16_LORA, *extra, *tiny_overrides(tiny_bert, tiny_glue)], folder)
    return runs


def test_frozen_linear_weights_bf16_trainable_tensors_and_optimizer_state_fp32(bf16_runs):
    folder, module = bf16_runs["on"]
    params = dict(module.model.named_parameters())
    seen = SEEN_AT_FIRST_STEP["on"]
    frozen_linear = [n for n in params if ".base_layer." in n or n.endswith(("key.weight", "dense.weight"))]
    assert frozen_linear and all(seen[n] == torch.bfloat16 for n in frozen_linear)
    # autocast keeps embeddings and LayerNorms in fp32: so do we
    assert all(seen[n] == torch.float32 for n in params if "embeddings" in n or "LayerNorm" in n)
    trainable = [n for n, p in params.items() if p.requires_grad]
    assert trainable and all(seen[n] == torch.float32 for n in trainable)
    state = module.trainer.optimizers[0].state
    moments = [t for s in state.values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert len(moments) == 2 * len(trainable) and all(t.dtype == torch.float32 for t in moments)
    record = json.loads((folder / "results.json").read_text())
    assert record["frozen_bf16"] is True
    # compile unset: a 16-step run is too short to pay back a compilation, on any CPU
    assert record["compile"] is False and record["compile_seconds"] is None
    # after training the fp32 originals are back, bit for bit; off: nothing was ever cast
    base = dict(base_model_of(module).named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    assert all(torch.equal(base[n.replace("base_model.model.", "").replace(".base_layer", "")], params[n])
               for n in frozen_linear)  # fmt: skip
    assert set(SEEN_AT_FIRST_STEP["off"].values()) == {torch.float32}


def test_frozen_bf16_trains_bit_identically_to_todays_bf16_mixed(bf16_runs):
    """autocast would cast the same weights to the same bf16 values at every step: on and off give the same
    adapter tensors and the same loss at every step."""
    (on, _), (off, _) = bf16_runs["on"], bf16_runs["off"]
    ours, theirs = load_file(on / ADAPTER), load_file(off / ADAPTER)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert any(t.dtype == torch.float32 and t.abs().sum() > 0 for k, t in ours.items() if "lora_B" in k)
    assert step_losses(on) == step_losses(off) and len(step_losses(on)) == 16


def test_checkpoint_and_exports_of_a_bf16_base_run_load_into_a_plain_fp32_model(
    bf16_runs, tiny_bert, tiny_glue
):
    folder, module = bf16_runs["on"]
    batch = dev_batch(tiny_bert, tiny_glue)
    run = run_logits(module, batch)
    # training moved the logits far more than the tolerance: the comparisons below can tell
    assert (fp32_logits(base_model(tiny_bert), batch) - run).abs().max() > 10 * bf16_tolerance(run)
    # the adapter export on the fp32 base
    adapter = PeftModel.from_pretrained(base_model(tiny_bert), folder / "adapter")
    assert_within_bf16_rounding(fp32_logits(adapter, batch), run)
    # the merged export: the fp32 base weights plus the fp32 delta, bit for bit as merging the adapter gives
    merged = AutoModelForSequenceClassification.from_pretrained(folder / "merged")
    expected = PeftModel.from_pretrained(base_model(tiny_bert), folder / "adapter").merge_and_unload()
    expected_state = expected.state_dict()
    assert all(torch.equal(t, expected_state[k]) for k, t in merged.state_dict().items())
    assert_within_bf16_rounding(fp32_logits(merged, batch), run)
    # the checkpoint the run restored (trainable tensors only) on a fresh fp32 model
    checkpoint = torch.load(folder / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert checkpoint and all(t.dtype == torch.float32 for t in checkpoint.values())
    trained_tensors = {k.removeprefix("model."): v for k, v in checkpoint.items()}
    fresh = PeftModel.from_pretrained(base_model(tiny_bert), folder / "adapter")
    fresh_state = fresh.state_dict()
    assert trained_tensors.keys() <= fresh_state.keys()
    for key in trained_tensors:  # only the checkpoint may set them
        fresh_state[key].zero_()
    fresh.load_state_dict(trained_tensors, strict=False)
    assert_within_bf16_rounding(fp32_logits(fresh, batch), run)


# --------------------------------------------------------------------------------------------- compile
def test_compile_unset_compiles_only_long_bf16_runs_on_an_amx_cpu(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(compiled_step, "cpu_has_amx", lambda: True)
    long, short = compiled_step.PAYS_BACK_AFTER_STEPS, compiled_step.PAYS_BACK_AFTER_STEPS - 1
    assert wants_compile(None, long, "bf16-mixed", cpu)
    assert wants_compile(None, float("inf"), "bf16-mixed", cpu)  # no step limit: as long as it gets
    assert not wants_compile(None, short, "bf16-mixed", cpu)
    assert not wants_compile(None, long, "32-true", cpu)  # fp32: not measured to pay
    assert not wants_compile(None, long, "bf16-mixed", gpu)  # GPUs: not measured here
    assert wants_compile(True, 1, "32-true", gpu) and not wants_compile(False, long, "bf16-mixed", cpu)
    monkeypatch.setattr(compiled_step, "cpu_has_amx", lambda: False)
    assert not wants_compile(None, long, "bf16-mixed", cpu)  # without AMX: 0.97x measured


def test_a_compilation_nobody_asked_for_runs_eagerly_where_it_fails(monkeypatch):
    """compile unset: a model Inductor fails on trains eagerly; compile=true: the failure stops the run."""

    def broken_backend(*args, **kwargs):
        raise RuntimeError("Inductor failed")

    monkeypatch.setattr("torch._inductor.compile_fx.compile_fx", broken_backend)
    torch.manual_seed(0)
    model, x = torch.nn.Linear(4, 2), torch.randn(3, 4)
    # torch's own patch restores the flag compile_model sets (monkeypatch's undo deletes it from the config)
    with torch._dynamo.config.patch(suppress_errors=False):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="Inductor failed"):
            compile_model(model)(x)
        torch._dynamo.reset()
        assert torch.equal(compile_model(model, eager_on_error=True)(x), model(x))
    torch._dynamo.reset()
    assert torch._dynamo.config.suppress_errors is False


def batches(tiny_bert: Path, tiny_glue: Path) -> list[dict]:
    data = GlueDataModule(
        SST2(), load_tokenizer(str(tiny_bert)), data_dir=str(tiny_glue), batch_size=8, seed=3
    )
    data.setup()
    return list(data.train_dataloader())


def training_steps(model: torch.nn.Module, run: torch.nn.Module, steps: list[dict]) -> list[float]:
    """fp32 SGD steps of ``run`` (``model`` or its compiled form) from the same seed; the step losses.
    SGD, not AdamW: Adam scales each update to about lr whatever the gradient's size, so float noise in a
    near-zero gradient (which differs between a compiled and an eager kernel) becomes a full step; with
    SGD a parameter's difference stays the learning rate times its gradients' difference."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    torch.manual_seed(7)
    losses = []
    for batch in steps:
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
        loss = torch.nn.functional.cross_entropy(run(**inputs).logits, batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_compiled_step_trains_like_the_eager_one(tiny_bert, tiny_glue, tmp_path):
    """On the same batches of several lengths, with dropout on, the compiled step (one graph for dynamic
    shapes) draws the same masks (cpu_dropout's custom op) and gives the eager losses and tensors within
    fp32 noise. A compile=true run records its compile time."""
    # first, while the process has compiled nothing: the run records its compile time in its train time
    args = [*BF16_LORA, "trainer.precision=32-true", *tiny_overrides(tiny_bert, tiny_glue)]
    trained([*args, "compile=true", "trainer.max_epochs=1"], tmp_path / "compiled")
    record = json.loads((tmp_path / "compiled" / "results.json").read_text())
    assert record["compile"] is True and 0 < record["compile_seconds"] <= record["train_seconds"]
    cfg = compose_cfg([*BF16_LORA, f"model.name_or_path={tiny_bert}"], tmp_path / "steps")
    model = use_cpu_dropout(assemble(cfg).model).train()
    steps = batches(tiny_bert, tiny_glue)
    assert len({batch["input_ids"].shape for batch in steps}) >= 3
    eager, compiled = copy.deepcopy(model), copy.deepcopy(model)
    eager_losses = training_steps(eager, eager, steps)
    compiled_losses = training_steps(compiled, compile_model(compiled), steps)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    ours, theirs = dict(compiled.named_parameters()), dict(eager.named_parameters())
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-4, atol=1e-6) for k in ours)
    assert any(not torch.equal(ours[k], model.state_dict()[k]) for k in ours if "lora_B" in k)  # trained
