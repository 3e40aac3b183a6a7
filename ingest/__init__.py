"""Ingestion job: load documents, chunk, embed and sync them into Chroma incrementally."""
