"""Masked-LM warm-up of a document encoder on the target corpus, before sparse distillation.

The inference-free sparse model (Geng et al., 2024) starts from an encoder pre-trained with a masked-LM head:
SPLADE pooling reads that head's logits as term weights. A sentence encoder such as all-MiniLM-L6-v2 never had
one; the head ``stillhouse.retrievers.sparse_student.masked_lm_folder`` ties to its word embeddings starts with an
untrained transform layer and predicts nothing. Distilled straight away (SciFact, 102 steps) it expanded every
document into punctuation and stop words and retrieved nothing (NDCG@10 0.000, ``docs/sparse-student.md``).

This runs BERT's pre-training objective (Devlin et al., 2019, §3.1: 15% of the tokens chosen, of those 80%
masked, 10% random, 10% kept; cross-entropy on the chosen ones) over the corpus's own documents, through
transformers' ``Trainer`` and ``DataCollatorForLanguageModeling``. No labels are used. A few hundred steps are
not a pre-training: on SciFact 200 steps took the loss from 8.91 to 6.13 only (the head learns which tokens are
frequent, not the context), and the student still retrieved nothing (NDCG@10 0.001).
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MLM_PROBABILITY = 0.15  # BERT's masking rate


def warm_up_mlm(model_dir: Path, texts: list[str], steps: int, *, batch_size: int = 16, max_length: int = 128,
                learning_rate: float = 1e-4, seed: int = 13) -> dict:
    """Train the ``*ForMaskedLM`` checkpoint in ``model_dir`` for ``steps`` masked-LM steps on ``texts`` and save
    it back in place; return the loss before and after (mean over the first and last logged steps)."""
    from datasets import Dataset
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("masked-LM warm-up: no non-empty documents")
    # Only the documents the steps will see are tokenized: a seeded sample, the whole corpus when it is smaller.
    wanted = min(len(texts), steps * batch_size)
    texts = [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), wanted))]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    data = Dataset.from_dict(dict(encoded))
    on_gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="mlm-warmup-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, warmup_steps=0.1, weight_decay=0.01, logging_steps=max(1, steps // 10),
            save_strategy="no", report_to=[], seed=seed, use_cpu=not on_gpu,
            bf16=on_gpu and torch.cuda.is_bf16_supported(), disable_tqdm=False)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY, seed=seed)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.save_pretrained(model_dir)
    stats = {"steps": steps, "documents": len(texts), "seconds": seconds,
             "loss_first": losses[0] if losses else math.nan, "loss_last": losses[-1] if losses else math.nan}
    log.info("masked-LM warm-up: %d steps over %d documents in %.0fs, loss %.2f -> %.2f", steps, len(texts),
             seconds, stats["loss_first"], stats["loss_last"])
    return stats
