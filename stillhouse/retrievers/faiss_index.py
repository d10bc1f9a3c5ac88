"""Exact inner-product search with FAISS (Johnson et al., 2019); on the GPU where faiss has CUDA."""

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


def search(index, query_vectors: np.ndarray, k: int, use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row numbers of the top-``k`` rows per query; moves the index to the GPU if it can."""
    import faiss

    if use_gpu is None:
        use_gpu = gpu_available()
    if use_gpu:
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
        log.info("searching on the GPU")
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
