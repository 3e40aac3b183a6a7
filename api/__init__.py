"""HTTP service: FastAPI app over the core query pipeline, with auth, limits, metrics and background ingestion."""
