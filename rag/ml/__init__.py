"""Shared ML engineering modules: seeding, dataset analysis, slice evaluation, drift detection, tabular
training with MLflow tracking and registry promotion, and validated prediction serving.

Both tracks use this package: the tabular models, and the RAG service (query-log drift, slice tables in
the evaluation). Heavy dependencies (scikit-learn, MLflow, matplotlib, torch) are imported inside the
functions that need them so that importing ``rag.ml`` stays cheap. ``rag.ml`` imports only the foundation
modules (settings, errors, hashing, runtime, console), never ``rag.indexing``, ``rag.answering`` or ``rag.cli``.
"""

from __future__ import annotations
