"""Exact inner-product search: ``top-k_d <q, d>`` over a flat index (FAISS, Johnson et al., 2019).

Where faiss has CUDA the flat index moves to the GPU. Where it does not but torch sees a GPU (a CPU faiss wheel on a
GPU machine), the same exact search runs as one matrix product and ``torch.topk`` on the GPU (``torch_top_k``):
the flat index's answer, computed in fp32. Otherwise FAISS searches on the CPU.

Example::

    index = build_flat_ip(doc_vectors)
    scores, rows = search(index, query_vectors, k=100)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_flat_ip(embeddings: np.ndarray):
    """An exact inner-product index (cosine when the embeddings are normalized)."""
    import faiss

    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def save_index(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def load_index(path: Path):
    import faiss

    return faiss.read_index(str(path))


def torch_top_k(index, query_vectors: np.ndarray, k: int, device: str,
                batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The flat index's exact top-``k`` as torch computes it on ``device``: ``Q D^T`` in fp32, then ``topk``
    (ties broken by torch, as FAISS breaks them by its own order). Used where faiss has no CUDA but torch does."""
    import torch

    docs = torch.from_numpy(index.reconstruct_n(0, index.ntotal)).to(device)
    scores, rows = [], []
    for start in range(0, len(query_vectors), batch):
        queries = torch.from_numpy(np.ascontiguousarray(query_vectors[start:start + batch], dtype=np.float32))
        top = torch.topk(queries.to(device) @ docs.T, k, dim=1)
        scores.append(top.values.cpu().numpy())
        rows.append(top.indices.cpu().numpy().astype(np.int64))
    if not scores:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate(scores), np.concatenate(rows)


def search(index, query_vectors: np.ndarray, k: int, use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row numbers of the top-``k`` rows per query. By default (``use_gpu`` None): FAISS on the GPU if
    faiss has CUDA, else torch on the GPU if torch sees one, else FAISS on the CPU; ``use_gpu`` forces FAISS's
    choice."""
    import faiss

    if use_gpu is None:  # the device policy: the GPU whenever one is visible
        import torch

        use_gpu = gpu_available()
        if not use_gpu and torch.cuda.is_available():
            log.info("searching on the GPU with torch (faiss has no CUDA)")
            return torch_top_k(index, query_vectors, min(k, index.ntotal), "cuda")
    if use_gpu:
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
        log.info("searching on the GPU")
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
