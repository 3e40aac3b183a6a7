"""The project's own exceptions. ``api/problems.py`` maps each ``code`` to an HTTP problem in one place."""

from __future__ import annotations


class RagError(Exception):
    """Base class: ``code`` is stable and machine-readable, the message says what was wrong and what to do."""

    code = "rag_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ConfigError(RagError):
    """A setting or option is invalid or inconsistent."""

    code = "invalid_config"


class InvalidInputError(RagError):
    """A request or file failed validation."""

    code = "invalid_input"


class UnsafeInputError(InvalidInputError):
    """The input looks like a prompt-injection attempt."""

    code = "unsafe_input"


class SourceNotFoundError(InvalidInputError):
    """A path given to ingestion does not exist."""

    code = "source_not_found"


class DocumentLoadError(RagError):
    """One document could not be read; ingestion reports it and goes on."""

    code = "document_unreadable"


class StoreUnavailableError(RagError):
    """The vector store cannot be reached or answered with an error."""

    code = "store_unavailable"


class IndexNotReadyError(RagError):
    """Nothing has been ingested into the collection yet."""

    code = "index_not_ready"


class ModelError(RagError):
    """A model could not be loaded or failed while running."""

    code = "model_error"


class NotFoundError(RagError):
    """A named resource (job, run, collection) does not exist."""

    code = "not_found"


# --- generation (rag/generation)
class GenerationTimeoutError(ModelError):
    """The generator did not finish in time (or stayed busy with another request)."""

    code = "generation_timeout"
