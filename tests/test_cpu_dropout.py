"""The CPU dropout: the same Bernoulli masks and scaling as torch's, reproducible, and the same attention."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from peft_glue.training import cpu_dropout
from peft_glue.training.cpu_dropout import (
    ATTENTION,
    CpuDropout,
    fast_dropout,
    lane_keep,
    lane_mask,
    lane_thresholds,
    use_cpu_dropout,
)
from peft_glue.training.methods import LoRA

RESOLUTION = 2**-15  # the documented resolution of the keep probability (module docstring)


def sampling_band(keep: float, n: int) -> float:
    """5 standard errors of a keep rate over n draws, plus the documented resolution."""
    return 5 * (keep * (1 - keep) / n) ** 0.5 + RESOLUTION


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_keep_one_minus_p_and_scale_the_kept(p):
    torch.manual_seed(0)
    n = 10_000_001  # odd size: the last int32 is half used; 5 sigma at p=0.5 is 8e-4
    out = fast_dropout(torch.ones(n), p)
    kept = out != 0
    assert abs(kept.double().mean().item() - (1 - p)) < sampling_band(1 - p, n)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    assert abs(out.double().mean().item() - 1) < sampling_band(1 - p, n) / (1 - p)  # inverted dropout


@pytest.mark.parametrize("p", [0.1, 0.25, 1 / 3, 0.5, 0.7, 0.9, 0.99])
def test_lane_thresholds_give_the_keep_probability_to_the_documented_resolution(p):
    """Exactly, without sampling: P(low < t_low) = (t_low + 2^15) / 2^16, P(high < t_high) = t_high / 2^15."""
    low, high = lane_thresholds(1 - p) if sys.byteorder == "little" else lane_thresholds(1 - p)[::-1]
    assert abs((low + 2**15) / 2**16 - (1 - p)) <= RESOLUTION
    assert abs(high / 2**15 - (1 - p)) <= RESOLUTION


def test_both_halves_of_each_draw_are_used_alike():
    """The int32 draw's high half has one random bit fewer; its threshold accounts for that."""
    torch.manual_seed(1)
    n = 10_000_000
    kept = (fast_dropout(torch.ones(2 * n), 0.3) != 0).view(-1, 2).double().mean(0)
    assert torch.allclose(
        kept, torch.tensor([0.7, 0.7], dtype=torch.float64), rtol=0, atol=sampling_band(0.7, n)
    )


@pytest.mark.parametrize("n", [1, 2, 77, 4096])
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_the_compiled_steps_mask_from_parity_thresholds_is_the_eager_one(n, p):
    """lane_keep (a compiled step's mask: each element's lane threshold picked by its parity) keeps what
    lane_mask (the eager step's: per-lane strided compares) keeps, from the same draws."""
    thresholds = lane_thresholds(1 - p)
    torch.manual_seed(5)
    eager = lane_mask(torch.Size([n]), thresholds, torch.lt)
    torch.manual_seed(5)
    draws = torch.empty((n + 1) // 2, dtype=torch.int32).random_()
    assert torch.equal(lane_keep(draws, thresholds, n), eager)


def test_masks_follow_the_seed_and_the_gradient_follows_the_mask():
    x = torch.randn(4, 7, 16, requires_grad=True)
    torch.manual_seed(3)
    first = fast_dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(first, fast_dropout(x, 0.2))
    torch.manual_seed(4)
    assert not torch.equal(first, fast_dropout(x, 0.2))
    first.sum().backward()
    assert torch.allclose(x.grad, (first != 0).float() / 0.8)


def test_edge_probabilities_and_eval_mode():
    x = torch.randn(8, 8)
    assert torch.equal(fast_dropout(x, 0.0), x)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    dropout = CpuDropout(0.5).eval()
    assert torch.equal(dropout(x), x)
    assert (dropout.train()(torch.ones(1000)) == 0).any()


def tiny_classifier() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def test_swapped_model_computes_the_same_attention_over_padded_batches():
    """Training mode with a negligible dropout takes the hand-written attention path (masking, softmax,
    weighted sum) and must match transformers' SDPA attention in evaluation mode, padding included."""
    reference = tiny_classifier().eval()
    swapped = use_cpu_dropout(tiny_classifier())
    for module in swapped.modules():
        if isinstance(module, nn.Dropout):
            module.p = 1e-9  # below 2^-16: nothing is dropped, but the CPU-dropout code paths run
    swapped.train()
    ids = torch.randint(5, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    expected = reference(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(swapped(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5)


def test_lora_model_is_swapped_trains_and_exports_a_plain_config(tmp_path):
    model = use_cpu_dropout(LoRA(r=2).apply(tiny_classifier()))
    assert not any(type(module) is nn.Dropout for module in model.modules())
    assert model.config._attn_implementation == ATTENTION
    model.train()
    ids = torch.randint(5, 50, (4, 6))
    loss = nn.functional.cross_entropy(model(input_ids=ids).logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.merge_and_unload().save_pretrained(tmp_path)
    assert ATTENTION not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_attention_dropout_with_a_real_p_in_a_training_forward(monkeypatch):
    """attention_probs_dropout_prob=0.1 (hidden dropout off) through the swapped model in training mode: each
    layer's attention weights pass the CPU dropout with p=0.1, a tenth of them dropped (within 5 standard
    errors), the kept ones scaled by 1/0.9; the output differs from evaluation mode."""
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = use_cpu_dropout(BertForSequenceClassification(config))
    calls = []

    def spy(x, p):
        out = fast_dropout(x, p)
        calls.append((x.detach(), p, out.detach()))
        return out

    monkeypatch.setattr(cpu_dropout, "fast_dropout", spy)
    ids = torch.randint(5, 50, (16, 32))
    logits = model.train()(input_ids=ids).logits
    assert len(calls) == 2 and all(p == pytest.approx(0.1) for _, p, _ in calls)  # one per layer
    weights = torch.cat([x.flatten() for x, _, _ in calls])
    dropped = torch.cat([out.flatten() for _, _, out in calls])
    assert calls[0][0].shape == (16, 4, 32, 32)  # batch, heads, queries, keys: the attention weights
    n = weights.numel()
    assert abs((dropped == 0).double().mean().item() - 0.1) < 5 * (0.09 / n) ** 0.5
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], weights[kept] / 0.9)
    with torch.no_grad():
        assert not torch.allclose(logits, model.eval()(input_ids=ids).logits)


def test_importing_changes_nothing_until_use_cpu_dropout_is_called():
    """The attention function is registered with transformers only by ``use_cpu_dropout`` (in a fresh
    process: other tests here have called it already)."""
    code = (
        "from transformers import AttentionInterface\n"
        "import peft_glue.training.cpu_dropout as cpu_dropout\n"
        "assert cpu_dropout.ATTENTION not in AttentionInterface._global_mapping\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,\n"
        "                    intermediate_size=16, attn_implementation='sdpa')\n"
        "cpu_dropout.use_cpu_dropout(BertForSequenceClassification(config))\n"
        "assert cpu_dropout.ATTENTION in AttentionInterface._global_mapping\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
