"""Loaders for .txt, .md, .html, .pdf and BEIR-style .jsonl.

Each loader turns raw bytes into text and a title, or raises ``DocumentLoadError`` with a reason a person can act
on. Files are hashed on their raw bytes before parsing, so unchanged files are never parsed again.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rag.errors import DocumentLoadError
from rag.hashing import sha256_bytes, sha256_text
from rag.indexing.documents import SECTION_SEPARATOR, Document

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md"}
HTML_SUFFIXES = {".html": "html", ".htm": "html"}
SUPPORTED_SUFFIXES = {**TEXT_SUFFIXES, **HTML_SUFFIXES, ".pdf": "pdf", ".jsonl": "jsonl"}
BOILERPLATE_TAGS = [
    "script",
    "style",
    "noscript",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "iframe",
    "svg",
]
BLOCK_TAGS = [  # block boundaries that must become line breaks when markup is stripped
    *("p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt"),
    *("dd", "tr", "td", "th", "table", "blockquote", "pre", "figcaption", "caption", "hr"),
]
MAX_TITLE_CHARS = 300
MAX_HEADING_CHARS = 200
HEADING_MARK = re.compile("\ue000(\\d+)\ue001")  # private-use characters: cannot occur in extracted text
MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
MD_FENCE = re.compile(r"^(```|~~~)")
Sections = tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Parsed:
    """What a format loader extracts: text, title and the heading structure (see ``Document.sections``)."""

    text: str
    title: str
    sections: Sections = ()


class HeadingPaths:
    """Turns (level, heading) in document order into section paths: a heading closes those at its level or deeper."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []

    def push(self, level: int, heading: str) -> str:
        heading = " ".join(heading.split())[:MAX_HEADING_CHARS]
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, heading))
        return SECTION_SEPARATOR.join(h for _, h in self.stack if h)


def markdown_sections(text: str) -> Sections:
    """ATX headings (``#`` .. ``######``) outside fenced code blocks, with their character offsets."""
    paths = HeadingPaths()
    sections: list[tuple[int, str]] = []
    offset = 0
    fenced = False
    for line in text.split("\n"):
        if MD_FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := MD_HEADING.match(line)):
            heading = re.sub(r"[*_`]", "", match.group(2)).strip()
            if heading:
                sections.append((offset, paths.push(len(match.group(1)), heading)))
        offset += len(line) + 1
    return tuple(sections)


def strip_marks(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove ``\ue000n\ue001`` markers; returns the text and (offset in that text, n) for each marker."""
    parts: list[str] = []
    marks: list[tuple[int, int]] = []
    cursor = length = 0
    for match in HEADING_MARK.finditer(marked):
        parts.append(marked[cursor : match.start()])
        length += match.start() - cursor
        cursor = match.end()
        marks.append((length, int(match.group(1))))
    parts.append(marked[cursor:])
    return "".join(parts), marks


def strip_heading_marks(marked: str, headings: list[tuple[int, str]]) -> tuple[str, Sections]:
    """Remove the markers put before heading ``n`` (level, text), recording each heading's path and offset."""
    text, marks = strip_marks(marked)
    paths = HeadingPaths()
    sections = [(offset, paths.push(*headings[n])) for offset, n in marks if headings[n][1]]
    return text, tuple(sections)


def supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class SourceFile:
    """A file found under a source root; ``doc_id`` is its path relative to that root."""

    path: Path
    root: Path
    doc_id: str
    format: str


def decode_text(raw: bytes, path: Path) -> str:
    if not raw.strip():
        raise DocumentLoadError(f"{path}: empty file", hint="add content or remove the file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DocumentLoadError(f"{path}: invalid UTF-16 text: {exc.reason}") from exc
    if b"\x00" in raw[:8192]:
        raise DocumentLoadError(f"{path}: binary file (NUL bytes), not text", hint="remove it or convert it")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentLoadError(
            f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            hint="convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from exc


def normalise_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def first_line_title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:MAX_TITLE_CHARS] if len(line) <= 120 else fallback
    return fallback


def load_text(raw: bytes, path: Path) -> Parsed:
    text = normalise_whitespace(decode_text(raw, path))
    return Parsed(text, first_line_title(text, path.stem))


def load_markdown(raw: bytes, path: Path) -> Parsed:
    text = decode_text(raw, path).replace("\r\n", "\n")
    if text.startswith("---\n"):  # YAML front matter is metadata, not content
        end = text.find("\n---", 4)
        if end > 0:
            text = text[end + 4 :]
    text = normalise_whitespace(text)
    heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    title = heading.group(1).strip() if heading else first_line_title(text, path.stem)
    return Parsed(text, title[:MAX_TITLE_CHARS], markdown_sections(text))


def load_html(raw: bytes, path: Path) -> Parsed:
    from bs4 import BeautifulSoup

    if b"\x00" in raw[:8192]:
        raise DocumentLoadError(f"{path}: binary file (NUL bytes), not HTML")
    soup = BeautifulSoup(raw, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(BOILERPLATE_TAGS):
        tag.decompose()
    body = soup.find("main") or soup.find("article") or soup.body or soup
    if not title:
        heading = body.find("h1")
        title = heading.get_text(" ", strip=True) if heading else path.stem
    for tag in body.find_all(BLOCK_TAGS):  # block boundaries become line breaks; inline tags join text
        tag.insert_before("\n")
        tag.insert_after("\n")
    for tag in body.find_all("br"):
        tag.replace_with("\n")
    headings: list[tuple[int, str]] = []
    for tag in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):  # a marker where each heading's text starts
        tag.insert(0, f"\ue000{len(headings)}\ue001")
        headings.append((int(tag.name[1]), HEADING_MARK.sub("", tag.get_text(" ", strip=True))))
    text, sections = strip_heading_marks(normalise_whitespace(body.get_text()), headings)
    return Parsed(text, title[:MAX_TITLE_CHARS], sections)


def load_pdf(raw: bytes, path: Path) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise DocumentLoadError(f"{path}: encrypted PDF", hint="decrypt it first (e.g. qpdf --decrypt)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
        outline = pdf_outline(reader)
    except DocumentLoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DocumentLoadError(f"{path}: corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from exc
    # Each non-empty page starts with a marker holding its number, so outline entries can find their page.
    marked = "\n\n".join(f"\ue000{n}\ue001{page.strip()}" for n, page in enumerate(pages) if page.strip())
    text, marks = strip_marks(normalise_whitespace(marked))
    if not text:
        raise DocumentLoadError(f"{path}: PDF has no extractable text", hint="scanned PDFs need OCR first")
    title = str(meta_title).strip() or first_line_title(text, path.stem)
    return Parsed(text, title[:MAX_TITLE_CHARS], outline_sections(text, outline, {n: o for o, n in marks}))


def pdf_outline(reader: object) -> list[tuple[int, int, str]]:
    """(level, page number, title) of each outline (bookmark) entry, in document order; [] without an outline."""
    entries: list[tuple[int, int, str]] = []

    def walk(items: list[object], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)  # type: ignore[attr-defined]
            except (KeyError, ValueError, TypeError, AttributeError):
                continue
            title = str(getattr(item, "title", "") or "").strip()
            if title and page is not None and page >= 0:
                entries.append((level, int(page), title))

    walk(list(getattr(reader, "outline", []) or []), 1)
    return entries


def outline_sections(text: str, outline: list[tuple[int, int, str]], page_starts: dict[int, int]) -> Sections:
    """Place each outline entry where its title appears on its page (else at the page's start)."""

    def start_of(page: int) -> int:  # an empty page has no marker: its content starts with the next page
        later = [offset for number, offset in page_starts.items() if number >= page]
        return min(later) if later else len(text)

    paths = HeadingPaths()
    sections: list[tuple[int, str]] = []
    floor = 0
    for level, page, heading in outline:
        start, end = max(floor, start_of(page)), start_of(page + 1)
        found = text.find(" ".join(heading.split()), start, max(end, start))
        offset = found if found >= 0 else start
        sections.append((offset, paths.push(level, heading)))
        floor = offset
    return tuple(sections)


FILE_LOADERS = {"txt": load_text, "md": load_markdown, "html": load_html, "pdf": load_pdf}


def load_file(source: SourceFile, max_bytes: int) -> Document:
    """Read and parse one file (not JSONL)."""
    raw = read_bytes(source.path, max_bytes)
    parsed = FILE_LOADERS[source.format](raw, source.path)
    text, title = parsed.text, parsed.title
    if not text.strip():
        raise DocumentLoadError(f"{source.path}: no text after extraction", hint="check the file's content")
    return Document(
        doc_id=source.doc_id,
        text=text,
        title=title,
        source=str(source.path),
        source_root=str(source.root),
        content_hash=sha256_bytes(raw),
        format=source.format,
        sections=parsed.sections,
    )


def read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DocumentLoadError(
                f"{path}: {size} bytes is over the limit of {max_bytes}", hint="raise RAG_MAX_FILE_BYTES"
            )
        return path.read_bytes()
    except OSError as exc:
        raise DocumentLoadError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def hash_file(path: Path, max_bytes: int) -> str:
    return sha256_bytes(read_bytes(path, max_bytes))


@dataclass(frozen=True)
class JsonlRecord:
    """One parsed line of a BEIR-style corpus, or the reason it could not be used."""

    document: Document | None
    error: str | None
    line: int


def iter_jsonl(path: Path, max_bytes: int) -> Iterator[JsonlRecord]:
    raw = read_bytes(path, max_bytes * 20)  # a corpus file is many documents
    text = decode_text(raw, path)
    root = str(path.resolve())
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield JsonlRecord(None, f"{path}:{number}: invalid JSON ({exc.msg})", number)
            continue
        if not isinstance(record, dict) or not str(record.get("_id", "")).strip():
            yield JsonlRecord(None, f'{path}:{number}: a record needs a non-empty "_id"', number)
            continue
        doc_text = normalise_whitespace(str(record.get("text") or ""))
        title = str(record.get("title") or "").strip()[:MAX_TITLE_CHARS]
        doc_id = str(record["_id"]).strip()
        if not doc_text:
            yield JsonlRecord(None, f'{path}:{number}: record "{doc_id}" has empty "text"', number)
            continue
        yield JsonlRecord(
            Document(
                doc_id=doc_id,
                text=doc_text,
                title=title,
                source=f"{path}#{doc_id}",
                source_root=root,
                content_hash=sha256_text(json.dumps([title, doc_text], ensure_ascii=False)),
                format="jsonl",
                metadata={"line": number},
            ),
            None,
            number,
        )


def discover(root: Path) -> tuple[list[SourceFile], list[str]]:
    """Supported files under ``root`` (hidden entries skipped) and the paths ignored for their type."""
    root = resolved_root = root.resolve()
    if root.is_file():
        return [SourceFile(root.resolve(), resolved_root.parent, root.name, _format(root))], []
    found: list[SourceFile] = []
    ignored: list[str] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
            ignored.append(f"{path} (symlink outside the source root)")
            continue
        if not supported(path):
            ignored.append(str(path))
            continue
        found.append(SourceFile(path, resolved_root, relative.as_posix(), _format(path)))
    return found, ignored


def _format(path: Path) -> str:
    return SUPPORTED_SUFFIXES.get(path.suffix.lower(), path.suffix.lower().lstrip("."))
