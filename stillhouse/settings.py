"""The typed settings the library's training and decoding functions take, and the one source of their defaults.

A config section (``stillhouse.pipelines.config``) takes its defaults from these classes, so a setting has one
default whether it comes from a TOML file or from Python. The classes import nothing heavy: the config schema
reads them without loading torch. Which settings do not change an output (and stay out of fingerprints) is
marked in one place too: ``stillhouse.pipelines.config.inert_settings``.

Example::

    from stillhouse.settings import DenseStudentSettings

    settings = DenseStudentSettings(epochs=2, in_batch_loss="mnrl")  # every other field: its default
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MarginStrategy = Literal["absolute", "relative"]


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode (``stillhouse.generators.generate.generate``): ``num_queries`` per prompt, greedy when
    ``do_sample`` is false."""

    num_queries: int = 1  # [generation] queries_per_doc
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    batch_size: int = 16
    no_repeat_ngram_size: int = 0  # n-grams may not repeat within the generated query (0 = off)
    share_prefix: bool = True  # encode the prompts' common prefix once (off only to measure what it saves)
    max_copy_tokens: int = 0  # forbid copying more than this many consecutive tokens of the prompt's own part


@dataclass(frozen=True)
class SoftPromptSettings:
    """SPTAR's prompt tuning (``stillhouse.generators.soft_prompt.train_soft_prompt``)."""

    virtual_tokens: int = 20
    epochs: int = 5  # [generation] tune_epochs
    learning_rate: float = 0.1
    batch_size: int = 4  # [generation] tune_batch_size
    examples_per_prompt: int = 2  # [generation] sptar_examples
    seed: int = 13
    max_length: int = 768  # prompt + target tokens of one tuning example (not a config setting)


@dataclass(frozen=True)
class DenseStudentSettings:
    """What ``stillhouse.retrievers.distill_dense.train_dense_student`` needs besides the data (a config's
    ``[dense_student]``, and the guide margin, its strategy and the margin bins of ``[training]``)."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    train_max_seq_length: int = 256  # training truncation only: the saved model keeps the base model's window
    sampler: Literal["tas-balanced", "random"] = "tas-balanced"
    margin_mse_weight: float = 1.0
    in_batch_loss: Literal["gist", "mnrl"] = "gist"  # mnrl: in-batch InfoNCE without the guide (the ablation)
    in_batch_weight: float = 1.0
    temperature: float = 0.01
    guide_margin: float = 0.0  # [training]
    guide_margin_strategy: MarginStrategy = "absolute"  # [training]
    margin_bins: int = 10  # [training]
    checkpoint_steps: int = 50
    seed: int = 13
    # GISTEmbed's frozen guide: "in-loss" runs the guide model on every batch (GISTEmbedLoss as is, texts truncated
    # to train_max_seq_length); "index" reads the documents' vectors from the guide teacher's corpus index and
    # encodes each query once (stillhouse.retrievers.guide_lookup).
    guide_vectors: Literal["in-loss", "index"] = "in-loss"
    # 1: pair-wise, one (query, positive, negative) triple a row; n > 1: list-wise, a query, its positive and n
    # negatives a row, margin-MSE over all n margins (stillhouse.retrievers.distill_dense.list_examples).
    list_size: int = 1


@dataclass(frozen=True)
class SparseStudentSettings:
    """What ``stillhouse.retrievers.sparse_student.train_sparse_student`` needs besides the data (a config's
    ``[sparse_student]``, and the margin bins of ``[training]``)."""

    query_weights: Literal["idf", "binary"] = "idf"  # binary: the plain-FLOPS ablation (q_t = 1[t in q])
    flops_weight: float = 3e-3
    regularizer_warmup_ratio: float = 1 / 3  # share of the steps over which flops_weight ramps up (0: none)
    margin_scale: float = 0.0  # teacher margin multiplier; 0: calibrated to the untrained student (margin_scale_for)
    loss: Literal["margin-mse", "kl"] = "margin-mse"
    temperature: float = 1.0
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 256  # the document window the saved model indexes with
    train_max_seq_length: int = 0  # training truncation (0: max_seq_length); the cost is the MLM head per token
    sampler: Literal["tas-balanced", "random"] = "tas-balanced"
    margin_bins: int = 10  # [training]
    checkpoint_steps: int = 50
    seed: int = 13
    # 1: pair-wise triples; n > 1: list-wise, a query, its positive and n negatives a row, margin-MSE (or KL) over
    # the whole list (stillhouse.retrievers.distill_dense.list_examples, as the dense student's list_size).
    list_size: int = 1


def from_section(cls: type, section: dict, renamed: dict[str, str] | None = None, **given):
    """``cls`` built from a config section: every field from the section (under its config name where
    ``renamed`` maps field -> config key), or from ``given``; a field found in neither keeps its default.

    Example::

        decode = from_section(DecodeSettings, gen, {"num_queries": "queries_per_doc"})
    """
    renamed = renamed or {}
    values = {}
    for name in cls.__dataclass_fields__:
        key = renamed.get(name, name)
        if name in given:
            values[name] = given[name]
        elif key in section:
            values[name] = section[key]
    return cls(**values)
