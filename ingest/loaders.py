"""Loaders for .txt, .md, .html, .pdf and BEIR-style .jsonl.

Each loader turns raw bytes into text and a title, or raises ``DocumentLoadError`` with a reason a person can act
on. Files are hashed on their raw bytes before parsing, so unchanged files are never parsed again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rag.errors import DocumentLoadError
from rag.indexing.documents import Document, sha256_text

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


def load_text(raw: bytes, path: Path) -> tuple[str, str]:
    text = normalise_whitespace(decode_text(raw, path))
    return text, first_line_title(text, path.stem)


def load_markdown(raw: bytes, path: Path) -> tuple[str, str]:
    text = decode_text(raw, path).replace("\r\n", "\n")
    if text.startswith("---\n"):  # YAML front matter is metadata, not content
        end = text.find("\n---", 4)
        if end > 0:
            text = text[end + 4 :]
    text = normalise_whitespace(text)
    heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    title = heading.group(1).strip() if heading else first_line_title(text, path.stem)
    return text, title[:MAX_TITLE_CHARS]


def load_html(raw: bytes, path: Path) -> tuple[str, str]:
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
    text = normalise_whitespace(body.get_text())
    return text, title[:MAX_TITLE_CHARS]


def load_pdf(raw: bytes, path: Path) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise DocumentLoadError(f"{path}: encrypted PDF", hint="decrypt it first (e.g. qpdf --decrypt)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentLoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DocumentLoadError(f"{path}: corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from exc
    text = normalise_whitespace("\n\n".join(pages))
    if not text:
        raise DocumentLoadError(f"{path}: PDF has no extractable text", hint="scanned PDFs need OCR first")
    title = str(meta_title).strip() or first_line_title(text, path.stem)
    return text, title[:MAX_TITLE_CHARS]


FILE_LOADERS = {"txt": load_text, "md": load_markdown, "html": load_html, "pdf": load_pdf}


def load_file(source: SourceFile, max_bytes: int) -> Document:
    """Read and parse one file (not JSONL)."""
    raw = read_bytes(source.path, max_bytes)
    text, title = FILE_LOADERS[source.format](raw, source.path)
    if not text.strip():
        raise DocumentLoadError(f"{source.path}: no text after extraction", hint="check the file's content")
    return Document(
        doc_id=source.doc_id,
        text=text,
        title=title,
        source=str(source.path),
        source_root=str(source.root),
        content_hash=hashlib.sha256(raw).hexdigest(),
        format=source.format,
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
    return hashlib.sha256(read_bytes(path, max_bytes)).hexdigest()


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
