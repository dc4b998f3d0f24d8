"""Tiny random models of every encoder family peft_glue supports, built offline from transformers' config
classes (the Hub is out of reach here), each with a tokenizer of its family's kind (WordPiece, byte-level
BPE or SentencePiece-style Unigram) and special tokens, so that a saved folder runs as ``model.name_or_path``.

Used by ``python -m benchmarks.compat_matrix``, ``python -m benchmarks.bench_train --model <family>`` (at
MiniLM's size) and by the tests. ``DECODERS``: Llama and Qwen2 as sequence classifiers.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable
from pathlib import Path

import transformers as tf

WORDS = sorted(
    {"good", "great", "fine", "lovely", "superb", "warm", "bright", "happy", "bad", "awful", "poor", "dull"}
    | {"grim", "cold", "dark", "sad", "the", "film", "is", "a", "story", "very", "and", "movie", "plot", "it"}
    | {"was", "quite", "s", "'", '"', "'s"}
)
SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
# all-MiniLM-L6-v2's size, for timings of another family at the size of the one pretrained model here
MINILM_SIZE = {
    "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536
}  # fmt: skip
POSITIONS = 64
CHARACTERS = list(string.ascii_lowercase + string.punctuation)


def wordpiece(cls: type, specials: list[str], **kwargs) -> Callable[[], tf.PreTrainedTokenizerBase]:
    vocab = specials + WORDS + [f"##{c}" for c in string.ascii_lowercase]
    return lambda: cls(vocab={w: i for i, w in enumerate(vocab)}, **kwargs)


def spelled_merges(space: str, specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A BPE vocabulary and merges that spell out every fixture word after the word-start marker ``space``."""
    vocab = {w: i for i, w in enumerate(specials + [space, *CHARACTERS])}
    merges = []
    for word in WORDS:
        merged = space
        for char in word:
            merges.append((merged, char))
            vocab.setdefault(merged + char, len(vocab))
            merged += char
    return vocab, list(dict.fromkeys(merges))


def byte_bpe(cls: type, specials: list[str]) -> Callable[[], tf.PreTrainedTokenizerBase]:
    """Byte-level BPE whose merges spell out every fixture word (RoBERTa's kind, ``Ġ`` marks a space)."""

    def build() -> tf.PreTrainedTokenizerBase:
        vocab, merges = spelled_merges("Ġ", specials)
        return cls(vocab=vocab, merges=merges)

    return build


def metaspace_bpe(cls: type, specials: list[str]) -> Callable[[], tf.PreTrainedTokenizerBase]:
    """SentencePiece-style BPE (``▁`` marks a word start) whose merges spell out every fixture word, as
    Llama's tokenizer is; the specials are unknown, begin and end of sequence, and no padding token."""

    def build() -> tf.PreTrainedTokenizerBase:
        vocab, merges = spelled_merges("▁", specials)
        unknown, begin, end = specials
        return cls(vocab=vocab, merges=merges, unk_token=unknown, bos_token=begin, eos_token=end)

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

# a config builder: (vocabulary size, size (SIZE's keys), positions) -> the family's config
ConfigOf = Callable[[int, dict[str, int], int], tf.PretrainedConfig]
# family (transformers model_type) -> (config builder, tokenizer builder)
FAMILIES: dict[str, tuple[ConfigOf, Callable[[], tf.PreTrainedTokenizerBase]]] = {
    "bert": (
        lambda v, size, positions: tf.BertConfig(vocab_size=v, max_position_embeddings=positions, **size),
        wordpiece(tf.BertTokenizer, BERT_SPECIALS),
    ),
    "roberta": (  # positions start after the padding index: two more rows
        lambda v, size, positions: tf.RobertaConfig(
            vocab_size=v, max_position_embeddings=positions + 2, pad_token_id=1, type_vocab_size=1, **size
        ),
        byte_bpe(tf.RobertaTokenizer, ROBERTA_SPECIALS),
    ),
    "xlm-roberta": (
        lambda v, size, positions: tf.XLMRobertaConfig(
            vocab_size=v, max_position_embeddings=positions + 2, pad_token_id=1, type_vocab_size=1, **size
        ),
        unigram(tf.XLMRobertaTokenizer, SPM_SPECIALS),
    ),
    "deberta-v2": (  # DeBERTa-v3's architecture: relative attention, no absolute positions, no token types
        lambda v, size, positions: tf.DebertaV2Config(
            vocab_size=v,
            max_position_embeddings=positions,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
            **size,
        ),
        unigram(tf.DebertaV2Tokenizer, DEBERTA_SPECIALS, unk_id=3),
    ),
    "electra": (  # word embeddings narrower than the layers, projected up (half the width here)
        lambda v, size, positions: tf.ElectraConfig(
            vocab_size=v, max_position_embeddings=positions, embedding_size=size["hidden_size"] // 2, **size
        ),
        wordpiece(tf.ElectraTokenizer, BERT_SPECIALS),
    ),
    "albert": (
        lambda v, size, positions: tf.AlbertConfig(
            vocab_size=v, max_position_embeddings=positions, embedding_size=size["hidden_size"] // 2, **size
        ),
        unigram(tf.AlbertTokenizer, ALBERT_SPECIALS),
    ),
    "distilbert": (  # its own names for the sizes
        lambda v, size, positions: tf.DistilBertConfig(
            vocab_size=v,
            max_position_embeddings=positions,
            dim=size["hidden_size"],
            n_layers=size["num_hidden_layers"],
            n_heads=size["num_attention_heads"],
            hidden_dim=size["intermediate_size"],
        ),
        wordpiece(tf.DistilBertTokenizer, BERT_SPECIALS),
    ),
    "modernbert": (
        lambda v, size, positions: tf.ModernBertConfig(
            vocab_size=v,
            max_position_embeddings=positions,
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
            global_attn_every_n_layers=1,
            **size,
        ),
        wordpiece(tf.BertTokenizer, BERT_SPECIALS, model_input_names=["input_ids", "attention_mask"]),
    ),
}


# decoders as sequence classifiers (the last token pooled), beyond the encoder anchors: Llama (grouped-query
# attention, no biases, no padding token) and Qwen2 (biases on query/key/value, <|endoftext|> ends and pads)
DECODERS: dict[str, tuple[ConfigOf, Callable[[], tf.PreTrainedTokenizerBase]]] = {
    "llama": (
        lambda v, size, positions: tf.LlamaConfig(
            vocab_size=v,
            max_position_embeddings=positions,
            num_key_value_heads=1,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=None,
            tie_word_embeddings=False,
            **size,
        ),
        metaspace_bpe(tf.LlamaTokenizer, ["<unk>", "<s>", "</s>"]),
    ),
    "qwen2": (
        lambda v, size, positions: tf.Qwen2Config(
            vocab_size=v,
            max_position_embeddings=positions,
            num_key_value_heads=1,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=None,
            **size,
        ),
        byte_bpe(tf.Qwen2Tokenizer, ["<|endoftext|>"]),
    ),
}
FAMILIES_AND_DECODERS = {**FAMILIES, **DECODERS}


def tiny_model(
    family: str,
    num_labels: int = 2,
    size: dict[str, int] = SIZE,
    positions: int = POSITIONS,
    vocab_size: int | None = None,
) -> tf.PreTrainedModel:
    """A randomly initialised sequence classifier of ``family`` (seeded by the caller), tiny unless
    ``size`` says otherwise."""
    config_of, tokenizer_of = FAMILIES_AND_DECODERS[family]
    config = config_of(vocab_size or len(tokenizer_of()), size, positions)
    config.num_labels = num_labels
    return tf.AutoModelForSequenceClassification.from_config(config)


def write_tiny_family(
    family: str,
    folder: Path,
    size: dict[str, int] = SIZE,
    positions: int = POSITIONS,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 8000,
) -> Path:
    """Save a ``family`` model (tiny unless ``size`` says otherwise) with its tokenizer into ``folder`` (a
    ``model.name_or_path``). With ``corpus`` the tokenizer is retrained on it (transformers'
    ``train_new_from_iterator``: the family's own algorithm and special tokens, up to ``vocab_size``
    entries), so real sentences split into as many tokens as a pretrained vocabulary would split them."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = FAMILIES_AND_DECODERS[family][1]()
    if corpus is not None:
        tokenizer = tokenizer.train_new_from_iterator(corpus, vocab_size)
    tokenizer.save_pretrained(folder)
    tiny_model(family, size=size, positions=positions, vocab_size=len(tokenizer)).save_pretrained(folder)
    return folder
