"""Core library: settings, embedding, vector store, manifest, retrieval and the shared ML modules.

The core imports none of the job packages (``ingest``, ``api``, ``eval``); they import it.
"""

__version__ = "0.1.0"
