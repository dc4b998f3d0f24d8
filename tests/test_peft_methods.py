"""Every peft method that conf/method/ names, and any other through ``method=peft``, on a tiny BERT: it
trains, counts its parameters as peft does, keeps adapter-only checkpoints, exports what
``PeftModel.from_pretrained`` loads to the same predictions, and merges where peft can."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from peft_glue.errors import UserError
from peft_glue.record import RunRecord
from peft_glue.train import train
from peft_glue.training.config import CONFIG_DIR, build
from peft_glue.training.data import GlueDataModule
from peft_glue.training.methods import AdaLoRA, LoraPlus, Peft, accept_past_key_values
from peft_glue.training.models import load_tokenizer, parameter_summary
from peft_glue.training.module import GlueClassifier
from peft_glue.training.tasks import MRPC

from .conftest import compose_cfg, tiny_overrides

PEFT_METHODS = sorted(
    path.stem
    for path in CONFIG_DIR.glob("method/*.yaml")
    if "peft_glue.training.methods.Peft" in path.read_text() or path.stem not in ("full", "bitfit", "lora")
)
PROMPT_LEARNING = {"prompt_tuning", "p_tuning", "prefix_tuning"}


def method_from_yaml(name: str, **config):
    node = OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml").method  # a _global_ yaml: method and its lr
    node.config = {**node.config, **config}
    return build(node, _convert_="all")


def base(tiny_bert, seed: int = 0):
    torch.manual_seed(seed)  # the classifier head is new: its weights depend on the seed
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)


def batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 30, (8, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::2, 8:] = 0  # padded rows too
    labels = torch.arange(8) % 2
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
    }, labels


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


# small models differ from bert-base: the yaml defaults that assume 768 hidden units are scaled down
TINY = {"vera": {"r": 16}, "fourierft": {"n_frequency": 200, "scaling": 10.0}, "oft": {"oft_block_size": 8}}


def test_every_named_peft_method_has_a_yaml():
    named = {"ia3", "adalora", "dora", "rslora", "pissa", "loha", "lokr", "vera", "oft", "fourierft"}
    named |= {"ln_tuning", "prefix_tuning", "prompt_tuning", "p_tuning", "loraplus", "peft"}
    assert named <= set(PEFT_METHODS)


@pytest.mark.parametrize("name", PEFT_METHODS)
def test_peft_method_trains_counts_checkpoints_exports_and_merges(name, tiny_bert, tmp_path):
    method = method_from_yaml(name, **TINY.get(name, {}))
    model = method.apply(base(tiny_bert))
    assert isinstance(model, PeftModel)
    # the count peft_glue records is peft's own
    assert parameter_summary(model)["trainable_params"] == model.get_nb_trainable_parameters()[0]
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any("classifier" in n for n in trainable)  # SEQ_CLS: the head trains

    # a handful of optimizer steps on one fixed batch, through the method's own hooks
    inputs, labels = batch()
    if name in PROMPT_LEARNING:
        # BERT pools the first position, which is now a virtual token: in a random tiny BERT it barely sees
        # the input, so the loss can fall only on unbalanced labels (the prompt still learns: checked below)
        labels = torch.tensor([1, 1, 1, 1, 1, 1, 0, 1])
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]
    optimizer = method.configure_optimizer(model, groups, lr=1e-2, weight_decay=0.0)
    steps = 12
    method.start_training(model, steps)
    model.eval()  # no dropout: the loss of one batch must fall
    losses = []
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
        loss.backward()
        optimizer.step()
        method.after_optimizer_step(model, step)
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.97 * losses[0], losses
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert any("classifier" not in n for n in changed), "only the head learned"
    ours = logits(model, inputs)

    # adapter-only checkpoint: the trainable tensors restore the model onto a freshly applied method
    module = GlueClassifier(model, MRPC(), lr=1e-3)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == module.trainable_state_keys()
    again = method_from_yaml(name, **TINY.get(name, {}))
    restored = GlueClassifier(again.apply(base(tiny_bert, seed=1)), MRPC(), lr=1e-3)
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"], strict=False)
    torch.testing.assert_close(logits(restored.model, inputs), ours, atol=1e-5, rtol=1e-5)

    # export: peft's save_pretrained format, loaded by PeftModel.from_pretrained on a fresh base
    method.save(model, tmp_path / "adapter")
    if name == "pissa":  # a plain LoRA adapter of the unchanged base: no loader has to redo PiSSA's SVD
        saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
        assert saved["init_lora_weights"] is True and saved["r"] == 2 * method.config["r"]
    fresh = base(tiny_bert, seed=2)
    if name == "prefix_tuning":
        accept_past_key_values(fresh)  # transformers 5's BERT calls past_key_values `cache`
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, inputs), ours, atol=1e-5, rtol=1e-5)

    if name in PROMPT_LEARNING:
        with pytest.raises(UserError, match=f"merge=true: {name} "):
            method.check_mergeable()
    else:
        merged = method.merged(model)
        assert not isinstance(merged, PeftModel)
        torch.testing.assert_close(logits(merged, inputs), ours, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config_class", ["HRAConfig", "BOFT"])
def test_generic_method_runs_a_peft_config_it_never_heard_of(config_class, tiny_bert, tmp_path):
    overrides = [
        "method=peft",
        f"method.config_class={config_class}",
        "+method.config.target_modules=[query]",
    ]
    overrides.append(
        "+method.config.r=4" if config_class == "HRAConfig" else "+method.config.boft_block_size=4"
    )
    method = build(compose_cfg(overrides, tmp_path).method, _convert_="all")
    model = method.apply(base(tiny_bert))
    assert type(model.peft_config["default"]).__name__.upper().startswith(config_class.upper()[:3])
    assert parameter_summary(model)["trainable_params"] == model.get_nb_trainable_parameters()[0]
    method.save(model, tmp_path / "adapter")
    inputs, _ = batch()
    loaded = PeftModel.from_pretrained(base(tiny_bert, seed=3), tmp_path / "adapter")
    assert torch.equal(logits(loaded, inputs), logits(model, inputs))


def test_unknown_config_argument_lists_the_valid_ones():
    with pytest.raises(
        UserError, match=r"IA3Config has no argument rank .*its arguments: .*feedforward_modules"
    ):
        Peft(config_class="IA3Config", config={"rank": 4})
    with pytest.raises(UserError, match="is not a peft config class; one of .*HRAConfig"):
        Peft(config_class="NoSuchConfig")


@pytest.mark.parametrize("target_modules", [["query", "value"], r".*\.(query|value)$", "all-linear"])
def test_target_modules_take_a_list_a_regex_and_all_linear(target_modules, tiny_bert):
    from peft_glue.training.methods import LoRA

    for method in (
        LoRA(target_modules=target_modules),
        method_from_yaml("dora", target_modules=target_modules),
    ):
        names = [n for n, p in method.apply(base(tiny_bert)).named_parameters() if "lora_A" in n]
        assert any(".value." in n for n in names) and any(".query." in n for n in names)
        assert any(".intermediate." in n for n in names) == (target_modules == "all-linear")


def test_adalora_reallocates_ranks_during_training(tiny_bert, tiny_glue, tmp_path):
    overrides = ["method=adalora", "method.config.deltaT=1", *tiny_overrides(tiny_bert, tiny_glue)]
    module = train(compose_cfg(overrides, tmp_path), RunRecord(tmp_path))
    config = module.model.peft_config["default"]
    assert config.total_step == module.trainer.estimated_stepping_batches == 16
    assert config.rank_pattern  # peft's allocator pruned the ranks: its budget moved from init_r
    kept = sum(sum(mask) for mask in config.rank_pattern.values())
    assert kept < config.init_r * len(config.rank_pattern)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["rank_pattern"] and saved["total_step"] == 16


def test_loraplus_optimizer_gives_b_matrices_the_ratio(tiny_bert):
    method = LoraPlus(lr_ratio=16.0, config_class="LoraConfig", config={"target_modules": ["query"]})
    model = method.apply(base(tiny_bert))
    module = GlueClassifier(model, MRPC(), lr=2e-3, weight_decay=0.05, method=method)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        if "lora_B" in name:
            assert by_param[id(param)]["lr"] == pytest.approx(2e-3 * 16)
            assert by_param[id(param)]["weight_decay"] == 0.05
        elif "lora_A" in name or name.endswith("classifier.modules_to_save.default.weight"):
            assert by_param[id(param)]["lr"] == pytest.approx(2e-3)
            assert by_param[id(param)]["weight_decay"] == 0.05
        elif name.endswith(".bias") and param.requires_grad:
            assert by_param[id(param)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(module.trainable_state_keys())


def test_prompt_tuning_counts_its_virtual_tokens_in_max_length(tiny_bert, tiny_glue, tmp_path):
    method = method_from_yaml("prompt_tuning", num_virtual_tokens=8)
    assert method.virtual_tokens == 8
    data = GlueDataModule(
        MRPC(), load_tokenizer(str(tiny_bert)), data_dir=str(tiny_glue), max_length=16, virtual_tokens=8
    )
    data.setup()
    assert max(data.splits["train"]["length"]) == 16 - 8
    with pytest.raises(UserError, match="max_length must be >= 2 plus the method's 20 virtual tokens"):
        GlueDataModule(MRPC(), None, max_length=21, virtual_tokens=20)

    # end to end: 8 virtual + 16 text positions fit the tiny model's 64; without the count 8 + 60 would not
    overrides = ["method=prompt_tuning", "method.config.num_virtual_tokens=8", "data.max_length=60"]
    module = train(
        compose_cfg([*overrides, *tiny_overrides(tiny_bert, tiny_glue), "trainer.max_epochs=1"], tmp_path),
        RunRecord(tmp_path),
    )
    assert module.trainer.datamodule.max_length == 52
    with pytest.raises(UserError, match="merge=true: prompt_tuning"):
        train(
            compose_cfg([*overrides, "merge=true", *tiny_overrides(tiny_bert, tiny_glue)], tmp_path / "m"),
            RunRecord(tmp_path / "m"),
        )


def test_adalora_schedule_that_leaves_no_budgeting_is_refused():
    with pytest.raises(UserError, match="tinit \\+ method.tfinal must be < 1"):
        AdaLoRA(tinit=0.5, tfinal=0.5, config_class="AdaLoraConfig", config={"target_modules": ["query"]})


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_adalora_adds_its_orthogonal_regularisation_to_the_training_loss(tiny_bert, weight):
    """AdaLoRA's loss is the task's plus peft's orth_reg_weight x ||PP^T - I|| + ||Q^TQ - I|| (peft adds it
    when the model computes the loss); every other method trains on the task's loss alone."""
    method = AdaLoRA(
        config_class="AdaLoraConfig", config={"target_modules": ["query"], "orth_reg_weight": weight}
    )
    model = method.apply(base(tiny_bert)).train()
    inputs, labels = batch()
    torch.manual_seed(0)
    with_penalty = method.training_loss(model, inputs, labels, MRPC())
    torch.manual_seed(0)
    plain = MRPC().loss(model(**inputs).logits, labels)
    penalty = []
    for name, param in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and "default" in name:
            cov = param @ param.T if "lora_A" in name else param.T @ param
            penalty.append(torch.linalg.matrix_norm(cov - torch.eye(*cov.shape)))
    expected = plain + weight * torch.stack(penalty).mean()
    assert torch.allclose(with_penalty, expected, atol=1e-6)
    assert (with_penalty > plain) if weight else torch.allclose(with_penalty, plain, atol=1e-6)


IN_STEPS = {"tinit_steps": 3, "tfinal_steps": 5}


@pytest.mark.parametrize(("steps", "expected"), [({}, (2, 4)), (IN_STEPS, (3, 5))])
def test_adalora_schedule_in_steps_as_the_paper_gives_it(tiny_bert, steps, expected):
    """tinit/tfinal are fractions of the run's steps (0.1, 0.2 of 20: 2, 4); tinit_steps/tfinal_steps, as
    AdaLoRA's Table 8 gives t_i and t_f, are taken as they are."""
    method = AdaLoRA(config_class="AdaLoraConfig", config={"target_modules": ["query"]}, **steps)
    model = method.apply(base(tiny_bert))
    method.start_training(model, total_steps=20)
    config = model.peft_config["default"]
    assert (config.tinit, config.tfinal, config.total_step) == (*expected, 20)


def test_head_lr_gives_the_task_head_its_own_learning_rate(tiny_bert):
    """VeRA's recipe: the scaling vectors at optimizer.lr, the classifier at optimizer.head_lr."""
    method = method_from_yaml("vera", **TINY["vera"])
    model = method.apply(base(tiny_bert))
    module = GlueClassifier(model, MRPC(), lr=1e-2, head_lr=4e-3, weight_decay=0.1, method=method)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    trained = {name: param for name, param in model.named_parameters() if param.requires_grad}
    head = {name for name in trained if ".classifier.modules_to_save." in name}
    vectors = {name for name in trained if "vera_lambda" in name}
    assert head and vectors and head | vectors == set(trained)
    assert {by_param[id(trained[name])]["initial_lr"] for name in head} == {4e-3}
    assert {by_param[id(trained[name])]["initial_lr"] for name in vectors} == {1e-2}
    decay = {name: by_param[id(param)]["weight_decay"] for name, param in trained.items()}
    assert {decay[name] for name in head if name.endswith(".bias")} == {0.0}
    assert {decay[name] for name in head if name.endswith(".weight")} == {0.1}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trained)

    plus = LoraPlus(config_class="LoraConfig", config={"target_modules": ["query"]})
    module = GlueClassifier(plus.apply(base(tiny_bert)), MRPC(), lr=1e-3, head_lr=1e-2, method=plus)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    with pytest.raises(UserError, match="leave optimizer.head_lr null"):
        module.configure_optimizers()
