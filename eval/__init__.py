"""Evaluation suite: retrieval and answer-quality metrics on labelled data, slices, MLflow, release gate."""
