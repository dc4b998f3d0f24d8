"""Trainable parameter counts on the bert-base-uncased architecture (no weights needed)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from transformers import BertConfig, BertForSequenceClassification

from peft_glue.errors import UserError
from peft_glue.training.config import CONFIG_DIR
from peft_glue.training.methods import BitFit, Full, LoRA
from peft_glue.training.models import parameter_summary


@pytest.fixture(scope="module")
def bert_base_state():
    return BertForSequenceClassification(BertConfig(num_labels=2)).state_dict()


def bert_base(state) -> BertForSequenceClassification:
    model = BertForSequenceClassification(BertConfig(num_labels=2))
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize(
    ("method", "trainable"),
    [
        (Full(), 109_483_778),
        (BitFit(), 104_450),
        (LoRA(r=1), 19_970),
        (LoRA(r=4), 75_266),
        (LoRA(r=16), 296_450),
    ],
    ids=["full", "bitfit", "lora-r1", "lora-r4", "lora-r16"],
)
def test_trainable_parameters_match_the_reference(bert_base_state, method, trainable):
    model = method.apply(bert_base(bert_base_state))
    assert parameter_summary(model)["trainable_params"] == trainable


def test_bitfit_trains_only_biases_and_the_head(bert_base_state):
    model = BitFit().apply(bert_base(bert_base_state))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.bias"} <= trainable
    assert "bert.embeddings.LayerNorm.bias" in trainable
    assert all(name.endswith(".bias") or name.startswith("classifier.") for name in trainable)


def test_lora_comes_from_peft_and_trains_the_head(bert_base_state):
    from peft import PeftModel

    model = LoRA(r=2).apply(bert_base(bert_base_state))
    assert isinstance(model, PeftModel)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("query.lora_A" in name for name in trainable)
    assert not any("key.lora" in name or "value.lora" in name for name in trainable)
    assert any("classifier" in name for name in trainable)


def test_model_config_carries_bert_base_architecture():
    architecture = OmegaConf.load(CONFIG_DIR / "model" / "bert_base_uncased.yaml").architecture
    defaults = BertConfig()
    for key, value in architecture.items():
        if key != "model_type":
            assert getattr(defaults, key) == value, key


@pytest.mark.parametrize("r", [0, -3])
def test_lora_rank_below_one_is_refused(r):
    with pytest.raises(UserError, match="is not valid: expected a number >= 1, e.g. method.r=8"):
        LoRA(r=r)


def test_lora_unknown_target_module_is_a_user_error(bert_base_state):
    with pytest.raises(UserError, match="target_modules"):
        LoRA(target_modules=["no_such_layer"]).apply(bert_base(bert_base_state))
