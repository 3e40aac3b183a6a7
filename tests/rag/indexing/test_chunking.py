from __future__ import annotations

import itertools

import pytest

from rag.indexing.chunking import Chunker, ChunkerConfig
from rag.indexing.documents import Document
from rag.indexing.embedding import Embedder


def make_doc(text: str, title: str = "Title", doc_id: str = "doc.txt") -> Document:
    return Document(
        doc_id=doc_id, text=text, title=title, source=doc_id, source_root="/", content_hash="h", format="txt"
    )


@pytest.fixture(scope="module")
def chunker(embedder: Embedder) -> Chunker:
    return Chunker(
        ChunkerConfig(chunk_size=300, chunk_overlap=60), embedder.count_tokens, embedder.max_tokens
    )


def test_offsets_are_exact_and_chunks_cover_the_text(chunker: Chunker) -> None:
    paragraphs = [f"Paragraph {i}. " + " ".join(f"word{i}x{j}" for j in range(40)) + "." for i in range(6)]
    text = "\n\n".join(paragraphs)
    chunks = chunker.split(make_doc(text))
    assert len(chunks) > 3
    for chunk in chunks:
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert len(chunk.text) <= 300
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)
    for before, after in itertools.pairwise(chunks):
        # no text is lost between chunks: they overlap or are separated by whitespace only
        assert after.char_start <= before.char_end or not text[before.char_end : after.char_start].strip()
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_ids_are_deterministic_and_content_addressed(chunker: Chunker) -> None:
    text = "Alpha beta gamma. " * 60
    first = chunker.split(make_doc(text))
    second = chunker.split(make_doc(text))
    assert [c.chunk_id for c in first] == [c.chunk_id for c in second]
    other_doc = chunker.split(make_doc(text, doc_id="other.txt"))
    assert {c.chunk_id for c in first}.isdisjoint(c.chunk_id for c in other_doc)
    edited = chunker.split(make_doc(text.replace("Alpha", "Delta", 1)))
    assert edited[0].chunk_id != first[0].chunk_id
    assert edited[-1].chunk_id == first[-1].chunk_id  # untouched tail keeps its id


def test_title_is_embedded_but_not_part_of_the_span(chunker: Chunker) -> None:
    chunk = chunker.split(make_doc("Short body.", title="Coral reefs"))[0]
    assert chunk.text == "Short body."
    assert chunk.embed_text == "Coral reefs\nShort body."


def test_token_guard_resplits_chunks_the_encoder_would_truncate(embedder: Embedder) -> None:
    # Digits and symbols cost about one token per character, so 1,500 characters are far over 256 tokens.
    text = " ".join(f"{i:04d}-{i * 7 % 997:03d}" for i in range(170))
    guarded = Chunker(
        ChunkerConfig(chunk_size=1500, chunk_overlap=0), embedder.count_tokens, embedder.max_tokens
    )
    chunks = guarded.split(make_doc(text))
    assert guarded.stats.resplit_for_token_limit >= 1
    assert guarded.stats.over_token_limit == 0
    assert all(c.n_tokens <= embedder.max_tokens for c in chunks)
    assert all(text[c.char_start : c.char_end] == c.text for c in chunks)
    assert embedder.count_tokens([text])[0] > embedder.max_tokens


def test_each_chunk_carries_its_section_path_into_metadata_and_embed_text(chunker: Chunker) -> None:
    food = "A forager that finds food returns and dances on the comb. " * 4
    text = (
        f"# Honeybees\n\nIntro about bees.\n\n## The waggle dance\n\n{food}\n\n## Swarming\n\nColonies split in spring."
    )
    sections = (
        (0, "Honeybees"),
        (text.index("## The waggle"), "Honeybees › The waggle dance"),
        (text.index("## Swarming"), "Honeybees › Swarming"),
    )
    doc = Document(
        doc_id="bees.md", text=text, title="Honeybees", source="bees.md", source_root="/", content_hash="h",
        format="md", sections=sections,
    )
    chunks = chunker.split(doc)
    dance = [c for c in chunks if "forager" in c.text]
    assert dance and all(c.section == "Honeybees › The waggle dance" for c in dance)
    # the path starts with the title, so it replaces the title line rather than repeating it
    assert all(c.embed_text == f"Honeybees › The waggle dance\n{c.text}" for c in dance)
    assert all(c.metadata(doc)["section"] == c.section for c in chunks)
    last = [c for c in chunks if "Colonies split" in c.text][-1]
    assert last.section in ("Honeybees › Swarming", "Honeybees › The waggle dance")
    assert {c.section for c in chunks} >= {"Honeybees › The waggle dance"}


def test_section_is_the_heading_covering_most_of_the_chunk() -> None:
    text = "a" * 100 + "b" * 300
    doc = Document(
        doc_id="d", text=text, title="T", source="d", source_root="/", content_hash="h", format="md",
        sections=((0, "T › A"), (100, "T › B")),
    )
    assert doc.section_of(0, 400) == "T › B"
    assert doc.section_of(0, 150) == "T › A"
    assert doc.section_at(99) == "T › A" and doc.section_at(100) == "T › B"
    assert make_doc("x").section_of(0, 1) == ""


def test_title_and_section_on_two_lines_when_the_path_does_not_start_with_the_title(embedder: Embedder) -> None:
    doc = Document(
        doc_id="p.html", text="Body text here.", title="Page | Site", source="p.html", source_root="/",
        content_hash="h", format="html", sections=((0, "Page › Part"),),
    )
    on = Chunker(ChunkerConfig(chunk_size=300, chunk_overlap=0), embedder.count_tokens, embedder.max_tokens)
    off = Chunker(
        ChunkerConfig(chunk_size=300, chunk_overlap=0, embed_sections=False), embedder.count_tokens, embedder.max_tokens
    )
    assert on.split(doc)[0].embed_text == "Page | Site\nPage › Part\nBody text here."
    assert off.split(doc)[0].embed_text == "Page | Site\nBody text here."
    assert off.split(doc)[0].section == ""
    assert on.config.to_dict() != off.config.to_dict()  # the config hash, hence the index version, changes


def test_split_at_sections_keeps_every_chunk_inside_one_section(embedder: Embedder) -> None:
    text = "# A\n\n" + "alpha words here. " * 30 + "\n\n## B\n\n" + "beta words here. " * 30
    doc = Document(
        doc_id="d.md", text=text, title="A", source="d.md", source_root="/", content_hash="h", format="md",
        sections=((0, "A"), (text.index("## B"), "A › B")),
    )
    config = ChunkerConfig(chunk_size=400, chunk_overlap=50, split_at_sections=True)
    chunks = Chunker(config, embedder.count_tokens, embedder.max_tokens).split(doc)
    boundary = text.index("## B")
    assert all(c.char_end <= boundary or c.char_start >= boundary for c in chunks)
    assert {c.section for c in chunks} == {"A", "A › B"}
    assert all(text[c.char_start : c.char_end] == c.text for c in chunks)
    short = "# A\n\nalpha.\n\n## B\n\nbeta."
    small = Document(
        doc_id="s.md", text=short, title="A", source="s.md", source_root="/", content_hash="h", format="md",
        sections=((0, "A"), (short.index("## B"), "A › B")),
    )
    default = Chunker(ChunkerConfig(chunk_size=400, chunk_overlap=50), embedder.count_tokens, embedder.max_tokens)
    assert len(default.split(small)) == 1  # by default two short sections share a chunk
    assert [c.section for c in Chunker(config, embedder.count_tokens, embedder.max_tokens).split(small)] == [
        "A", "A › B"
    ]
