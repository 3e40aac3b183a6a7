"""The bundled labelled sets are valid against the text the project's own loaders extract: a reference context
that is not in its document would make every retrieval and calibration figure computed from it silently wrong."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_qa", REPO / "samples" / "qa" / "check_qa.py")
assert spec is not None and spec.loader is not None
check_qa = importlib.util.module_from_spec(spec)
sys.modules["check_qa"] = check_qa  # its dataclasses look their module up while the module loads
spec.loader.exec_module(check_qa)


@pytest.mark.parametrize(
    ("qa", "corpus", "profile"),
    [
        ("samples/qa/sample_qa.jsonl", "samples/corpus", "sample"),
        ("samples/calibration/calibration_qa.jsonl", "samples/calibration/corpus", "calibration"),
    ],
)
def test_bundled_sets_validate(qa: str, corpus: str, profile: str) -> None:
    report = check_qa.validate(REPO / qa, REPO / corpus, profile=profile)
    assert report.ok, report.errors[:10]


def test_a_decision_must_open_its_reference_and_belongs_to_yes_no_rows(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.md").write_text("# A\n\nThe bridge is not open to cars.\n")
    row = {"id": "a-1", "question": "Can cars cross the bridge?", "reference": "No, it is closed to cars",
           "reference_doc_ids": ["a.md"], "reference_contexts": ["The bridge is not open to cars."],
           "answerable": True, "decision": "no", "tags": {"topic": "a", "type": "yes_no", "format": "md"}}
    wrong = row | {"id": "a-2", "question": "Is the bridge open to cars?", "decision": "yes"}
    untyped = row | {"id": "a-3", "question": "Are cars allowed?", "tags": row["tags"] | {"type": "factoid"}}
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in (row, wrong, untyped)))
    errors = check_qa.validate(qa, tmp_path / "corpus", profile="calibration").errors
    assert any("(a-2): decision 'yes'" in e for e in errors)
    assert any("(a-3): a yes_no row, and only one, carries a decision" in e for e in errors)
    assert not any("(a-1)" in e for e in errors)
