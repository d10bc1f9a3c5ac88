"""Exact inner-product search: ``top-k_d <q, d>`` over a flat index (FAISS, Johnson et al., 2019).

Where faiss has CUDA the flat index moves to the GPU. Where it does not but torch sees a GPU (a CPU faiss wheel on a
GPU machine), the same exact search runs as one matrix product and ``torch.topk`` on the GPU (``torch_top_k``):
the flat index's answer, computed in fp32. Otherwise FAISS searches on the CPU.

Example::

    index = build_flat_ip(doc_vectors)
    scores, rows = ExactSearcher(index).search(query_vectors, k=100)
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


def torch_top_k(docs, query_vectors: np.ndarray, k: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The flat index's exact top-``k`` as torch computes it where ``docs`` (a fp32 tensor of the index's rows)
    lives: ``Q D^T`` in fp32, then ``topk`` (ties broken by torch, as FAISS breaks them by its own order). Used
    where faiss has no CUDA but torch does."""
    import torch

    scores, rows = [], []
    for start in range(0, len(query_vectors), batch):
        queries = torch.from_numpy(np.ascontiguousarray(query_vectors[start:start + batch], dtype=np.float32))
        top = torch.topk(queries.to(docs.device) @ docs.T, k, dim=1)
        scores.append(top.values.cpu().numpy())
        rows.append(top.indices.cpu().numpy().astype(np.int64))
    if not scores:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate(scores), np.concatenate(rows)


class ExactSearcher:
    """A flat index placed once where it is searched, so a searcher that answers query after query (``stillhouse
    search``) moves the vectors to the GPU once, not per call.

    Placement (``use_gpu`` None, the device policy): FAISS on the GPU if faiss has CUDA, else a fp32 tensor of the
    rows on the GPU for torch (``torch_top_k``) if torch sees one, else FAISS on the CPU. ``use_gpu`` True or False
    forces FAISS's choice; ``device`` puts the torch path on a named device (``"cpu"`` in tests).

    Example::

        searcher = ExactSearcher(load_index(Path("DenseIndex/<fp>/index.faiss")))
        scores, rows = searcher.search(query_vectors, k=10)
    """

    def __init__(self, index, use_gpu: bool | None = None, device: str | None = None) -> None:
        self.index, self.docs, self.ntotal = index, None, index.ntotal
        if device is None and use_gpu is None:
            import torch

            use_gpu = gpu_available()
            if not use_gpu and torch.cuda.is_available():
                device = "cuda"
        if device is not None:
            import torch

            self.docs = torch.from_numpy(index.reconstruct_n(0, index.ntotal)).to(device)
            log.info("searching on %s with torch (faiss has no CUDA)", device)
        elif use_gpu:
            import faiss

            self._resources = faiss.StandardGpuResources()  # must outlive the GPU index
            self.index = faiss.index_cpu_to_gpu(self._resources, 0, index)
            log.info("searching on the GPU")

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers of the top-``k`` rows per query (``k`` capped at the number of rows)."""
        k = min(k, self.ntotal)
        if self.docs is not None:
            return torch_top_k(self.docs, query_vectors, k)
        return self.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)


def search(index, query_vectors: np.ndarray, k: int, use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One search of ``index`` (``ExactSearcher`` placement); keep an ``ExactSearcher`` to search many times."""
    return ExactSearcher(index, use_gpu).search(query_vectors, k)
