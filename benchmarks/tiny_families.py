"""Tiny random models of every encoder family peft_glue supports, built offline from transformers' config
classes (the Hub is out of reach here), each with a tokenizer of its family's kind (WordPiece, byte-level
BPE or SentencePiece-style Unigram) and special tokens, so that a saved folder runs as ``model.name_or_path``.

Used by ``python -m benchmarks.compat_matrix`` and by the tests.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path

import transformers as tf

WORDS = sorted(
    {"good", "great", "fine", "lovely", "superb", "warm", "bright", "happy", "bad", "awful", "poor", "dull"}
    | {"grim", "cold", "dark", "sad", "the", "film", "is", "a", "story", "very", "and", "movie", "plot", "it"}
    | {"was", "quite", "s", "'", '"', "'s"}
)
SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
POSITIONS = 64
CHARACTERS = list(string.ascii_lowercase + string.punctuation)


def wordpiece(cls: type, specials: list[str], **kwargs) -> Callable[[], tf.PreTrainedTokenizerBase]:
    vocab = specials + WORDS + [f"##{c}" for c in string.ascii_lowercase]
    return lambda: cls(vocab={w: i for i, w in enumerate(vocab)}, **kwargs)


def byte_bpe(cls: type, specials: list[str]) -> Callable[[], tf.PreTrainedTokenizerBase]:
    """Byte-level BPE whose merges spell out every fixture word (RoBERTa's kind, ``Ġ`` marks a space)."""

    def build() -> tf.PreTrainedTokenizerBase:
        vocab = {w: i for i, w in enumerate(specials + ["Ġ", *CHARACTERS])}
        merges = []
        for word in WORDS:
            merged = "Ġ"
            for char in word:
                merges.append((merged, char))
                vocab.setdefault(merged + char, len(vocab))
                merged += char
        return cls(vocab=vocab, merges=list(dict.fromkeys(merges)))

    return build


def unigram(cls: type, specials: list[str], **kwargs) -> Callable[[], tf.PreTrainedTokenizerBase]:
    """SentencePiece-style Unigram (``▁`` marks a word start), as XLM-R, DeBERTa-v3 and ALBERT use."""
    pieces = [(s, 0.0) for s in specials] + [(f"▁{w}", -1.0) for w in WORDS]
    pieces += [(c, -5.0) for c in CHARACTERS] + [("▁", -3.0)]
    return lambda: cls(vocab=pieces, **kwargs)


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SPM_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
ALBERT_SPECIALS = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]

# family (transformers model_type) -> (config builder, tokenizer builder)
FAMILIES: dict[str, tuple[Callable[[int], tf.PretrainedConfig], Callable[[], tf.PreTrainedTokenizerBase]]] = {
    "bert": (
        lambda v: tf.BertConfig(vocab_size=v, max_position_embeddings=POSITIONS, **SIZE),
        wordpiece(tf.BertTokenizer, BERT_SPECIALS),
    ),
    "roberta": (
        lambda v: tf.RobertaConfig(
            vocab_size=v, max_position_embeddings=POSITIONS + 2, pad_token_id=1, type_vocab_size=1, **SIZE
        ),
        byte_bpe(tf.RobertaTokenizer, ROBERTA_SPECIALS),
    ),
    "xlm-roberta": (
        lambda v: tf.XLMRobertaConfig(
            vocab_size=v, max_position_embeddings=POSITIONS + 2, pad_token_id=1, type_vocab_size=1, **SIZE
        ),
        unigram(tf.XLMRobertaTokenizer, SPM_SPECIALS),
    ),
    "deberta-v2": (  # DeBERTa-v3's architecture: relative attention, no absolute positions, no token types
        lambda v: tf.DebertaV2Config(
            vocab_size=v,
            max_position_embeddings=POSITIONS,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
            **SIZE,
        ),
        unigram(tf.DebertaV2Tokenizer, DEBERTA_SPECIALS, unk_id=3),
    ),
    "electra": (
        lambda v: tf.ElectraConfig(
            vocab_size=v, max_position_embeddings=POSITIONS, embedding_size=16, **SIZE
        ),
        wordpiece(tf.ElectraTokenizer, BERT_SPECIALS),
    ),
    "albert": (
        lambda v: tf.AlbertConfig(vocab_size=v, max_position_embeddings=POSITIONS, embedding_size=16, **SIZE),
        unigram(tf.AlbertTokenizer, ALBERT_SPECIALS),
    ),
    "distilbert": (
        lambda v: tf.DistilBertConfig(
            vocab_size=v, max_position_embeddings=POSITIONS, dim=32, n_layers=2, n_heads=2, hidden_dim=64
        ),
        wordpiece(tf.DistilBertTokenizer, BERT_SPECIALS),
    ),
    "modernbert": (
        lambda v: tf.ModernBertConfig(
            vocab_size=v,
            max_position_embeddings=POSITIONS,
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
            global_attn_every_n_layers=1,
            **SIZE,
        ),
        wordpiece(tf.BertTokenizer, BERT_SPECIALS, model_input_names=["input_ids", "attention_mask"]),
    ),
}


def tiny_model(family: str, num_labels: int = 2) -> tf.PreTrainedModel:
    """A randomly initialised sequence classifier of ``family`` (seeded by the caller)."""
    config_of, tokenizer_of = FAMILIES[family]
    config = config_of(len(tokenizer_of()))
    config.num_labels = num_labels
    return tf.AutoModelForSequenceClassification.from_config(config)


def write_tiny_family(family: str, folder: Path) -> Path:
    """Save a tiny ``family`` model with its tokenizer into ``folder`` (a ``model.name_or_path``)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = FAMILIES[family][1]()
    tokenizer.save_pretrained(folder)
    tiny_model(family).save_pretrained(folder)
    return folder
