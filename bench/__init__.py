"""Benchmarks: ingestion speed against a LangChain pipeline, query latency and load, retrieval quality on SciFact.

Run ``python -m bench ingest|query|quality|encoder [--quick]``; each prints a table and writes JSON (with the
machine, versions and git commit) under ``.bench/``. See docs/PERFORMANCE.md for the results and how to read them.
"""
