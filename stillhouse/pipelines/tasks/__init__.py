"""Luigi tasks: parameters, requires, output, and one call into a library function each."""

from stillhouse.pipelines.tasks.base import StageTask
from stillhouse.pipelines.tasks.data import FetchModel, LoadDataset
from stillhouse.pipelines.tasks.report import Evaluate, Report
from stillhouse.pipelines.tasks.retrieval import BM25Index, BM25Search, DenseIndex, DenseSearch, EncodeShard

__all__ = ["BM25Index", "BM25Search", "DenseIndex", "DenseSearch", "EncodeShard", "Evaluate", "FetchModel",
           "LoadDataset", "Report", "StageTask"]
