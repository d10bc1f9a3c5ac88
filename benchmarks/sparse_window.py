"""The document window of a trained sparse student: ``python -m benchmarks.sparse_window --model DIR``.

SPLADE pooling takes each term's maximum over the document's tokens (Formal et al., 2021, Eq. 2), so a document
longer than the encoder's window loses the terms of its tail. This benchmark encodes the corpus of one split
with a trained student (a ``TrainSparse`` ``model/`` folder) under several windows, searches the split's queries
through the student's query route (the IDF lookup) on the integer impacts the Lucene index stores
(``benchmarks.train_sparse``), and prints NDCG@10, Recall@100 and MRR@10 with the pipeline's own metrics:

* ``trunc:N``: the first N tokens (special tokens included), what ``ImpactIndex`` does with
  ``max_seq_length = N``;
* ``win:N:S``: windows of N tokens starting every S tokens over the whole document, each encoded alone and
  max-pooled into one vector (SPLADE's pooling carried across windows).

Select on the train split only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks.common import add_data_arguments, add_split_arguments, checked_splits
from benchmarks.train_sparse import encode_all, impacts, top_k
from stillhouse.artifacts import write_json_atomic
from stillhouse.eval.beir_data import load_beir
from stillhouse.eval.metrics import DEFAULT_METRICS, evaluate_run
from stillhouse.retrievers.dense import document_text
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.sparse_student import document_route, load_inference_free_encoder
from stillhouse.retrievers.teachers import check_window


def document_windows(tokenizer, text: str, size: int, stride: int) -> list[str]:
    """Spans of ``text`` of at most ``size`` tokens once the tokenizer adds its two special tokens, starting
    about every ``stride`` tokens, the last one ending at the last token; together they cover every token.
    Cuts fall between words (at the tokens' character offsets), so each span tokenizes to the tokens it had
    inside the document; a word longer than the window is cut inside."""
    if size < 3 or stride < 1:
        raise ValueError(f"a window holds at least one token (size {size}) and moves on (stride {stride})")
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets, words = encoding["offset_mapping"], encoding.word_ids()
    count, body = len(offsets), size - 2

    def word_start(i: int) -> bool:
        return i == 0 or i >= count or words[i] != words[i - 1]

    if count <= body:
        return [text]
    spans, start = [], 0
    while True:
        end = min(start + body, count)
        cut = next((i for i in range(end, start, -1) if word_start(i)), end)  # the last word start in the window
        spans.append(text[offsets[start][0]:offsets[cut - 1][1]])
        if cut == count:
            return spans
        start = min(start + stride, cut)
        while start < cut and not word_start(start):
            start += 1


def max_pool_rows(matrix: sp.csr_matrix, owners: np.ndarray, rows: int) -> sp.csr_matrix:
    """Row ``i`` of the result is the elementwise maximum of the rows of ``matrix`` whose owner is ``i``
    (non-negative weights, as SPLADE's are)."""
    coo = matrix.tocoo()
    if coo.nnz == 0:
        return sp.csr_matrix((rows, matrix.shape[1]), dtype=matrix.dtype)
    keys = owners[coo.row].astype(np.int64) * matrix.shape[1] + coo.col
    order = np.lexsort((-coo.data, keys))  # per (owner, term), the largest weight first
    keys, data = keys[order], coo.data[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    keys, data = keys[first], data[first]
    return sp.csr_matrix((data, (keys // matrix.shape[1], keys % matrix.shape[1])), shape=(rows, matrix.shape[1]))


def encode_documents(model, texts: list[str], mode: str) -> sp.csr_matrix:
    """The corpus under one window setting (``trunc:N`` or ``win:N:S``)."""
    kind, *numbers = mode.split(":")
    if (kind, len(numbers)) not in (("trunc", 1), ("win", 2)) or not all(n.isdigit() for n in numbers):
        raise SystemExit(f"--windows: {mode!r} is neither trunc:N nor win:N:S (e.g. trunc:512, win:512:384)")
    size = int(numbers[0])
    check_window(model, size, f"--windows {mode}")
    document_route(model).max_seq_length = size
    if kind == "trunc":
        return encode_all(model, texts, 32, "document")
    stride = int(numbers[1])
    tokenizer = document_route(model).tokenizer
    pieces, owners = [], []
    for i, text in enumerate(texts):
        spans = document_windows(tokenizer, text, size, stride)
        pieces += spans
        owners += [i] * len(spans)
    return max_pool_rows(encode_all(model, pieces, 32, "document"), np.asarray(owners), len(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a TrainSparse model/ folder")
    parser.add_argument("--windows", default="trunc:256,trunc:512,win:256:192,win:512:384")
    add_data_arguments(parser)
    add_split_arguments(parser, "--split")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()

    model = load_inference_free_encoder(args.model)
    checked_splits(args, args.split)
    data = load_beir(args.data / args.dataset, args.split)
    doc_ids = list(data.corpus)
    texts = [document_text(data.corpus[d]) for d in doc_ids]
    query_ids = list(data.queries)
    queries = impacts(encode_all(model, [data.queries[q] for q in query_ids], 256, "query"))
    rows = []
    print(f"| window | {' | '.join(DEFAULT_METRICS)} | terms / document | encode s |")
    print("|---|" + "---:|" * (len(DEFAULT_METRICS) + 2))
    for mode in args.windows.split(","):
        started = time.perf_counter()
        try:
            docs = encode_documents(model, texts, mode)
        except UserError as exc:  # a window past the model's positions (the message names the mode)
            raise SystemExit(str(exc)) from None
        except ValueError as exc:  # a stride under 1
            raise SystemExit(f"--windows {mode}: {exc}") from None
        seconds = time.perf_counter() - started
        docs = impacts(docs)
        top, scores = top_k(queries, docs, 100)
        run = {q: {doc_ids[j]: float(s) for j, s in zip(top[i], scores[i], strict=True)}
               for i, q in enumerate(query_ids)}
        means, _ = evaluate_run(data.qrels, run)
        terms_per_doc = docs.nnz / docs.shape[0]
        rows.append({"window": mode, **means, "terms_per_doc": terms_per_doc, "encode_seconds": seconds,
                     "device": str(model.device)})
        print(f"| {mode} | " + " | ".join(f"{means[m]:.4f}" for m in DEFAULT_METRICS)
              + f" | {terms_per_doc:.1f} | {seconds:.0f} |", flush=True)
        if args.out:
            write_json_atomic(args.out, rows)


if __name__ == "__main__":
    main()
