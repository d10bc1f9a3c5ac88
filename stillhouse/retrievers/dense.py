"""Dense bi-encoders (Sentence-BERT, Reimers & Gurevych 2019) through sentence-transformers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from stillhouse.retrievers.runs import Run

log = logging.getLogger(__name__)


def pick_device() -> str:
    """The device every stage runs on: the first visible GPU, else the CPU (``stillhouse run --device`` narrows
    what is visible through ``CUDA_VISIBLE_DEVICES``, so trainers follow it too)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_record() -> dict[str, str]:
    """What a stage ran on, for its provenance (asked once it has run): the device (with the GPU's name) and the
    precision policy (bf16 on a GPU that supports it, fp32 otherwise). A process that never imported torch ran
    nothing on a GPU, so torch is not imported to say so (BM25, data and report stages stay light)."""
    import sys

    if "torch" not in sys.modules:
        return {"device": "cpu", "precision": "fp32"}
    import torch

    if pick_device() == "cpu":
        return {"device": "cpu", "precision": "fp32"}
    return {"device": f"cuda ({torch.cuda.get_device_name(0)})",
            "precision": "bf16" if torch.cuda.is_bf16_supported() else "fp32"}


Quantize = Literal["none", "int8"]  # a dense retriever's encoding: fp32/bf16 as loaded, or int8 (quantize_int8)
QUANTIZE_CHOICES: tuple[str, ...] = get_args(Quantize)
# What quantize_int8 does, as a service re-creates it to encode queries like the index (export READMEs, manifest).
INT8_RECIPE = ("torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: "
               "torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8)")


def quantize_int8(model):
    """An encoder for CPU inference with int8 linear layers: torch's dynamic quantization, one scale per output
    channel.

    The idea: a transformer encoder's CPU time is its ``nn.Linear`` products. Dynamic quantization stores each
    weight row ``w_j`` as int8 with its own scale, ``w_j = s_j q_j``, quantizes each batch's activations on the
    fly, ``x = s_x q_x``, and computes ``y_j = s_x s_j (q_x . q_j) + b_j`` in int8 (Jacob et al., "Quantization and
    Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018). One scale per row
    rather than per tensor is what keeps the score: on SciFact's train split all-MiniLM-L6-v2 encodes the corpus
    1.8x faster on 2 cores and scores level with fp32 (-0.17 NDCG@10, p 0.68), where one scale per tensor loses 2.5
    points (``benchmarks/encode_int8.py``, ``docs/benchmarks.md``). Quantized kernels run on the CPU only.

    Example::

        model = quantize_int8(load_sentence_encoder(Path("work/FetchModel/<fp>/model"), device="cpu"))
        vectors = encode(model, ["vitamin d and infections"], batch_size=64)
    """
    import torch

    quantization = torch.ao.quantization
    return quantization.quantize_dynamic(model, {torch.nn.Linear: quantization.per_channel_dynamic_qconfig},
                                         dtype=torch.qint8)


def load_sentence_encoder(model_dir: Path, max_seq_length: int | None = None, device: str | None = None,
                          half: bool = True, quantize: str = "none"):
    """Load a local sentence-transformers folder (never reaching the hub); bf16 on GPU unless ``half`` is off.

    With ``half`` off the weights are fp32 whatever the folder stores: training keeps fp32 master weights
    (a half-precision checkpoint would otherwise be trained in half precision). ``quantize="int8"`` loads it on
    the CPU with int8 linear layers (``quantize_int8``), whatever device is present."""
    from sentence_transformers import SentenceTransformer

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize: {quantize!r} is not one of {QUANTIZE_CHOICES}")
    device = "cpu" if quantize == "int8" else device or pick_device()
    model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if quantize == "int8":
        return quantize_int8(model.float())
    if device == "cuda" and half:
        model = model.bfloat16()
    elif not half:
        model = model.float()
    return model


def document_text(doc: dict[str, str]) -> str:
    """BEIR's convention for dense models: ``title + " " + text``."""
    return f"{doc.get('title', '')} {doc.get('text', '')}".strip()


def encode(model, texts: list[str], batch_size: int, progress: bool = True, desc: str = "encoding") -> np.ndarray:
    """Embeddings as float32 (normalized if the model's pipeline normalizes)."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    vectors = model.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


class DenseSearcher:
    """A sentence-transformers model and its exact FAISS inner-product index, loaded once: queries are encoded and
    the top-k rows taken, ``score(q, d) = <E(q), E(d)>`` (cosine when the model normalizes).

    Example::

        searcher = DenseSearcher(Path("work/FetchModel/<fp>/model"), Path("work/DenseIndex/<fp>"))
        run = searcher.search({"q1": "vitamin d and infections"}, k=10)
    """

    def __init__(self, model_dir: Path, index_dir: Path, max_seq_length: int = 0, quantize: str = "none") -> None:
        import json

        from stillhouse.retrievers import faiss_index

        self.model = load_sentence_encoder(model_dir, max_seq_length or None, quantize=quantize)
        self.index = faiss_index.ExactSearcher(faiss_index.load_index(index_dir / "index.faiss"))
        self.doc_ids = json.loads((index_dir / "docids.json").read_text())

    def search(self, queries: dict[str, str], k: int, batch_size: int = 64, progress: bool = False) -> Run:
        """Top-``k`` documents of every query (query id -> text) by inner product."""
        query_ids = list(queries)
        vectors = encode(self.model, [queries[q] for q in query_ids], batch_size, progress=progress, desc="queries")
        scores, rows = self.index.search(vectors, k)
        return {qid: {self.doc_ids[r]: float(s) for s, r in zip(scores[i], rows[i], strict=True) if r >= 0}
                for i, qid in enumerate(query_ids)}


def dense_search(model_dir: Path, index_dir: Path, queries: dict[str, str], k: int, batch_size: int = 64,
                 max_seq_length: int = 0, progress: bool = False, quantize: str = "none") -> Run:
    """Top-``k`` documents per query from a FAISS index folder (``index.faiss`` + ``docids.json``), the queries
    encoded at the precision the index was built with (``quantize``)."""
    return DenseSearcher(model_dir, index_dir, max_seq_length, quantize).search(queries, k, batch_size, progress)


def build_corpus_index(model, corpus: dict[str, dict[str, str]], out_dir: Path, batch_size: int = 64) -> None:
    """Encode every document (title + text) and write an exact FAISS index folder (``index.faiss`` +
    ``docids.json``), the layout ``dense_search`` reads."""
    import json

    from stillhouse.retrievers import faiss_index

    ids = list(corpus)
    vectors = encode(model, [document_text(corpus[i]) for i in ids], batch_size, desc="corpus")
    out_dir.mkdir(parents=True, exist_ok=True)
    faiss_index.save_index(faiss_index.build_flat_ip(vectors), out_dir / "index.faiss")
    (out_dir / "docids.json").write_text(json.dumps(ids))
