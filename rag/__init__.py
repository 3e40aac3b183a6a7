"""The product's library: foundation modules (``settings``, ``errors``, ``hashing``, ``runtime``, ``console``),
``indexing`` (documents, chunking, embedding, store, manifest, BM25), ``answering`` (retrieval, generation, the
query pipeline), ``ml`` (shared ML modules) and ``cli`` (the ``rag`` command).

It imports none of the job packages (``ingest``, ``api``, ``eval``, ``bench``); they import it. The import rules
are import-linter contracts in pyproject.toml (docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"
