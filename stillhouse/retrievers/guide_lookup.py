"""A frozen GISTEmbed guide read from precomputed vectors instead of run on every training batch.

GISTEmbed (Solatorio, 2024, "GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
Fine-tuning", Eq. 2-3) masks every in-batch candidate ``c`` of a query ``q`` whose guide similarity passes the
positive's, ``cos(g(q), g(c)) > cos(g(q), g(p)) - margin``, out of the InfoNCE denominator. The guide ``g`` is
frozen, so ``g(x)`` of a training text never changes between steps; sentence-transformers' ``GISTEmbedLoss`` still
runs it on all three columns of every batch, and with all-mpnet-base-v2 guiding all-MiniLM-L6-v2 that forward
pass is about 40% of each CPU training step (docs/benchmarks.md).

``GuideLookup`` is a module that answers the guide's call, ``guide(features)["sentence_embedding"]``, from a table
of vectors keyed by the student's token ids of each training text, so ``GISTEmbedLoss`` itself computes the loss,
unchanged (its mask, margins and temperature; nothing of it is rewritten here). sentence-transformers' loss takes no
precomputed guide embeddings, hence this module. Given the guide's embeddings of the same texts, the loss equals
``GISTEmbedLoss`` with the guide model (tested).

``guide_vectors`` builds the table the DAG uses: each document's vector read back from the guide teacher's corpus
index (its full window: the vectors that scored the mined candidates for the guide filter), each query encoded once
as the teacher encodes queries (its window; fp16 on a GPU), so the loss masks with the guide scores mining used.

Usage::

    from stillhouse.retrievers.guide_lookup import GuideLookup
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

    table = dict(zip(texts, guide.encode(texts)))        # or guide_vectors(...) from a corpus index
    loss = GISTEmbedLoss(student, GuideLookup(student, table))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def _row_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[bytes]:
    """One key per row: the row's attended token ids, wherever its padding sits (a merged column batch pads the
    shorter columns on the right whatever side the tokenizer pads)."""
    ids = input_ids.cpu().numpy().astype(np.int64)
    attended = attention_mask.cpu().numpy().astype(bool)
    return [row[mask].tobytes() for row, mask in zip(ids, attended, strict=True)]


class GuideLookup(nn.Module):
    """Stands in for the guide model inside ``GISTEmbedLoss``: ``forward(features)`` returns the stored vector of
    each row's text, found by the student's token ids (which is what the loss hands its guide).

    It carries the student's tokenizer and window, so ``GISTEmbedLoss`` sees a guide with the student's vocabulary
    and passes the student's features through without re-tokenizing. Two texts whose truncated token ids agree
    share one key; the first text's vector is kept (their truncated inputs are identical to the student too).
    """

    def __init__(self, student: SentenceTransformer, vectors: Mapping[str, np.ndarray], batch_size: int = 256) -> None:
        super().__init__()
        self.tokenizer = student.tokenizer
        self.max_seq_length = student.max_seq_length
        self.preprocess = student.preprocess
        texts = list(vectors)
        self.rows: dict[bytes, int] = {}
        for start in range(0, len(texts), batch_size):
            features = student.preprocess(texts[start:start + batch_size])
            for offset, key in enumerate(_row_keys(features["input_ids"], features["attention_mask"])):
                self.rows.setdefault(key, start + offset)
        table = np.stack([np.asarray(vectors[t], dtype=np.float32) for t in texts]) if texts else np.zeros((0, 1))
        self.register_buffer("table", torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self.table.device

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = _row_keys(features["input_ids"], features["attention_mask"])
        missing = sum(key not in self.rows for key in keys)
        if missing:
            raise KeyError(f"guide lookup: {missing} of {len(keys)} texts have no precomputed guide vector")
        rows = torch.tensor([self.rows[key] for key in keys], device=self.table.device)
        return {**features, "sentence_embedding": self.table[rows]}


def guide_vectors(guide_dir: Path, index_dir: Path, triples: Mapping[str, list], batch_size: int = 64,
                  max_seq_length: int = 0) -> dict[str, np.ndarray]:
    """The guide's vector of every text of ``triples`` (``distill_dense.student_triples``: query, positive_id,
    negative_id, positive, negative): each document's read back from the guide's corpus index folder
    (``index.faiss`` + ``docids.json``), each distinct query encoded once with the guide model in ``guide_dir`` at
    the teacher's ``max_seq_length`` (0: the model's own), as ``teachers.dense_pair_scores`` encodes them."""
    from stillhouse.retrievers.dense import encode, load_sentence_encoder
    from stillhouse.retrievers.teachers import index_vectors

    documents = dict(zip(triples["positive_id"] + triples["negative_id"], triples["positive"] + triples["negative"],
                         strict=True))
    stored = index_vectors(index_dir, set(documents))
    absent = sorted(set(documents) - set(stored))
    if absent:
        raise KeyError(f"guide index {index_dir}: {len(absent)} training documents are not in it, e.g. {absent[0]}")
    table = {documents[d]: stored[d] for d in documents}
    queries = sorted(set(triples["query"]) - set(table))
    guide = load_sentence_encoder(guide_dir, max_seq_length or None)
    if guide.device.type == "cuda":
        guide = guide.half()
    table.update(zip(queries, encode(guide, queries, batch_size, desc="guide: queries"), strict=True))
    log.info("guide vectors: %d documents from %s, %d queries encoded", len(documents), index_dir, len(queries))
    return table
