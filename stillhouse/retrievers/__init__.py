"""Retrieval library: encoders, BM25 through Pyserini, FAISS indexes, model sources.

Library code only: nothing here imports ``pipelines``.
"""
