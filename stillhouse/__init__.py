"""stillhouse: an unlabeled corpus and a handful of labeled examples in, strong and cheap retrievers out.

The subpackages follow the pipeline: ``generators`` (query generation), ``retrievers`` (indexes, teachers,
students, fusion), ``eval`` (BEIR data, metrics, significance, reports) and ``pipelines`` (the Luigi tasks, the
DAG and the command line, wiring around the other three).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stillhouse")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
