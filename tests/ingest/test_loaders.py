from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.loaders import SourceFile, discover, iter_jsonl, load_file
from rag.errors import DocumentLoadError
from tests.ingest.conftest import write_pdf


def source(path: Path, root: Path, fmt: str) -> SourceFile:
    return SourceFile(path, root, path.relative_to(root).as_posix(), fmt)


def test_txt_keeps_text_and_takes_title_from_first_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Lighthouse keeping\r\n\r\nThe lamp   was lit at dusk.\r\n", encoding="utf-8")
    doc = load_file(source(path, tmp_path, "txt"), 10_000)
    assert doc.title == "Lighthouse keeping"
    assert doc.text == "Lighthouse keeping\n\nThe lamp was lit at dusk."
    assert doc.doc_id == "notes.txt" and doc.format == "txt"


def test_markdown_drops_front_matter_and_uses_heading(tmp_path: Path) -> None:
    path = tmp_path / "bees.md"
    path.write_text("---\nauthor: x\n---\nIntro line\n\n# Honeybees\n\nA colony has one queen.\n")
    doc = load_file(source(path, tmp_path, "md"), 10_000)
    assert doc.title == "Honeybees"
    assert "author" not in doc.text and "A colony has one queen." in doc.text


def test_html_strips_markup_and_boilerplate_but_keeps_title(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Volcano types</title><style>p{color:red}</style></head><body>"
        "<nav>Home | About</nav><header>Site header</header><script>var tracking = 1;</script>"
        "<main><h1>Volcanoes</h1><p>A <b>shield</b> volcano has gentle slopes.</p></main>"
        "<aside>Accept cookies</aside><footer>Copyright 2026</footer></body></html>"
    )
    doc = load_file(source(path, tmp_path, "html"), 10_000)
    assert doc.title == "Volcano types"
    assert "A shield volcano has gentle slopes." in doc.text
    for noise in ("Home | About", "Site header", "tracking", "cookies", "Copyright", "color:red", "<b>"):
        assert noise not in doc.text


def test_pdf_text_and_metadata_title(tmp_path: Path) -> None:
    path = write_pdf(
        tmp_path / "reef.pdf", "Coral reefs", ["Coral polyps build reefs from calcium carbonate."]
    )
    doc = load_file(source(path, tmp_path, "pdf"), 1_000_000)
    assert doc.title == "Coral reefs"
    assert "calcium carbonate" in doc.text


def test_jsonl_ids_titles_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    lines = [
        json.dumps({"_id": "d1", "title": "T1", "text": "first text"}),
        "{not json",
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"_id": "d2", "title": "", "text": "  "}),
        json.dumps({"_id": 7, "title": "T7", "text": "seventh"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    records = list(iter_jsonl(path, 1_000_000))
    docs = [r.document for r in records if r.document]
    errors = [r.error for r in records if r.error]
    assert [(d.doc_id, d.title, d.text) for d in docs] == [("d1", "T1", "first text"), ("7", "T7", "seventh")]
    assert len(errors) == 3
    assert any(":2: invalid JSON" in e for e in errors)
    assert any('needs a non-empty "_id"' in e for e in errors)
    assert any('"d2" has empty "text"' in e for e in errors)


@pytest.mark.parametrize(
    ("name", "content", "fmt", "reason"),
    [
        ("empty.txt", b"", "txt", "empty file"),
        ("blank.md", b"  \n\n ", "md", "empty file"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "txt", "binary file"),
        ("latin1.txt", "café au lait".encode("latin-1"), "txt", "not valid UTF-8"),
        ("broken.pdf", b"%PDF-1.4\n this is not really a pdf", "pdf", "PDF"),
    ],
)
def test_bad_files_raise_clear_errors(
    tmp_path: Path, name: str, content: bytes, fmt: str, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DocumentLoadError) as excinfo:
        load_file(source(path, tmp_path, fmt), 10_000)
    assert reason in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 1000)
    with pytest.raises(DocumentLoadError, match="over the limit"):
        load_file(source(path, tmp_path, "txt"), 100)


def test_discover_relative_ids_skips_hidden_and_reports_unsupported(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "sub" / "b.TXT").write_text("b")
    (tmp_path / ".git" / "config.txt").write_text("hidden")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    found, ignored = discover(tmp_path)
    assert [(f.doc_id, f.format) for f in found] == [("a.md", "md"), ("sub/b.TXT", "txt")]
    assert ignored == [str(tmp_path / "image.png")]


def test_markdown_headings_become_section_paths(tmp_path: Path) -> None:
    path = tmp_path / "bees.md"
    path.write_text(
        "# Honeybees\n\nIntro.\n\n## The waggle dance\n\nA forager tells others where food is.\n\n"
        "```python\n# not a heading\n```\n\n### Distance\n\nThe run's length.\n\n## Swarming\n\nColonies split.\n"
    )
    doc = load_file(source(path, tmp_path, "md"), 10_000)
    paths = [p for _, p in doc.sections]
    assert paths == [
        "Honeybees",
        "Honeybees › The waggle dance",
        "Honeybees › The waggle dance › Distance",
        "Honeybees › Swarming",  # a level-2 heading closes the level-3 one
    ]
    assert doc.section_at(doc.text.index("A forager")) == "Honeybees › The waggle dance"
    assert doc.section_at(doc.text.index("# not a heading")) == "Honeybees › The waggle dance"
    assert doc.section_at(doc.text.index("Colonies split")) == "Honeybees › Swarming"
    for offset, path_ in doc.sections:  # each offset is where its heading line starts
        assert doc.text[offset:].startswith("#") and path_.rsplit(" › ", 1)[-1] in doc.text[offset:].split("\n")[0]


def test_html_headings_become_section_paths_with_exact_offsets(tmp_path: Path) -> None:
    path = tmp_path / "reef.html"
    path.write_text(
        "<html><head><title>Reefs</title></head><body><nav><h2>Menu</h2></nav><main>"
        "<h1>Coral <em>reefs</em></h1><p>Intro text.</p><h2>Types</h2><p>Fringing reefs.</p>"
        "<h3>Atolls</h3><p>Rings of coral.</p><h2>Threats</h2><p>Warm water bleaches coral.</p></main></body></html>"
    )
    doc = load_file(source(path, tmp_path, "html"), 10_000)
    assert "\ue000" not in doc.text and "\ue001" not in doc.text
    assert [p for _, p in doc.sections] == [
        "Coral reefs", "Coral reefs › Types", "Coral reefs › Types › Atolls", "Coral reefs › Threats"
    ]  # the <nav> heading was boilerplate and is gone
    assert [doc.text[o : o + 6] for o, _ in doc.sections] == ["Coral ", "Types\n", "Atolls", "Threat"]
    assert doc.section_at(doc.text.index("Rings of coral")) == "Coral reefs › Types › Atolls"
    assert doc.section_at(doc.text.index("Warm water")) == "Coral reefs › Threats"


def test_pdf_outline_becomes_section_paths(tmp_path: Path) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    path = tmp_path / "vaccines.pdf"
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pages = [("Vaccines", "Vaccines train the immune system."), ("History", "Jenner tested a smallpox vaccine."),
             ("Safety", "Trials check that vaccines are safe.")]
    for number, (heading, body) in enumerate(pages):
        pdf.drawString(72, 760, heading)
        pdf.drawString(72, 740, body)
        pdf.bookmarkPage(f"p{number}")
        pdf.addOutlineEntry(heading, f"p{number}", level=0 if number == 0 else 1)
        pdf.showPage()
    pdf.save()
    doc = load_file(source(path, tmp_path, "pdf"), 100_000)
    assert [p for _, p in doc.sections] == ["Vaccines", "Vaccines › History", "Vaccines › Safety"]
    assert doc.section_at(doc.text.index("Jenner")) == "Vaccines › History"
    assert doc.section_at(doc.text.index("Trials")) == "Vaccines › Safety"
    assert doc.text[doc.sections[1][0] :].startswith("History")


def test_formats_without_headings_have_no_sections(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("# not markdown\n\nJust text.\n")
    assert load_file(source(path, tmp_path, "txt"), 10_000).sections == ()
    pdf = write_pdf(tmp_path / "flat.pdf", "Flat", ["No outline here."])
    assert load_file(source(pdf, tmp_path, "pdf"), 100_000).sections == ()
