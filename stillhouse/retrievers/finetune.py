"""Fine-tune a sentence-transformers bi-encoder on (query, positive document) pairs with in-batch negatives.

Promptagator's round-trip filter (Dai et al. 2022, §3.2) checks every generated query with a retriever
trained on the *unfiltered* generated queries of the corpus; this trains that retriever. The loss is
MultipleNegativesRankingLoss, i.e. InfoNCE over in-batch negatives (Henderson et al. 2017; Karpukhin et al.
2020, Eq. 2): ``-log exp(s(q, d+)/τ) / Σ_d∈batch exp(s(q, d)/τ)``, trained by the SentenceTransformerTrainer
with a no-duplicates batch sampler (a document twice in one batch would be its own false negative).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from stillhouse.retrievers.errors import UserError

log = logging.getLogger(__name__)


def finetune_on_pairs(base_dir: Path, pairs: list[tuple[str, str]], out_dir: Path, *, epochs: int = 1,
                      batch_size: int = 32, learning_rate: float = 2e-5, max_seq_length: int = 256,
                      seed: int = 13) -> dict:
    """Train a copy of the model in ``base_dir`` on ``(query, document)`` pairs; save it to ``out_dir`` as a
    plain sentence-transformers folder and return training stats."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from stillhouse.retrievers.dense import load_sentence_encoder

    pairs = list(dict.fromkeys((q, d) for q, d in pairs if q.strip() and d.strip()))
    documents = len({d for _, d in pairs})
    if documents < 2:
        raise UserError(f"fine-tuning {base_dir.name}: {len(pairs)} usable (query, document) pairs over "
                        f"{documents} documents; in-batch negatives need at least 2 documents "
                        "(generate for more documents)")
    torch.manual_seed(seed)
    model = load_sentence_encoder(base_dir, max_seq_length, half=False)  # fp32 weights; bf16 autocast on GPU
    on_gpu = model.device.type == "cuda"
    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".trainer-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=epochs, per_device_train_batch_size=min(batch_size, len(pairs)),
            learning_rate=learning_rate, warmup_steps=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no", logging_steps=10, report_to=[], seed=seed,
            bf16=on_gpu and torch.cuda.is_bf16_supported(), use_cpu=not on_gpu, disable_tqdm=False)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                             loss=MultipleNegativesRankingLoss(model))
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
    model.save(str(out_dir))
    stats = {"pairs": len(pairs), "epochs": epochs, "train_loss": float(result.training_loss),
             "seconds": seconds, "pairs_per_second": len(pairs) * epochs / max(seconds, 1e-9),
             "device": str(model.device)}
    log.info("fine-tuned on %d pairs in %.0fs (loss %.3f)", len(pairs), seconds, stats["train_loss"])
    return stats
