"""One router per resource: ``ops`` (page, health, metrics), ``query`` (answers, info), ``ingest`` (jobs)."""
