"""Documents over HTTP: upload, list with index status, delete one, list collections (API key required).

Uploads are stored under ``data_dir/uploads/<collection>/`` as ``<sha256 of the content, 16 hex>/<plain name>``
(so the same bytes are stored once and a document id says where it came from), then the collection is synced from
that directory by the existing background job queue (``api/jobs.py``; 202 + job). The upload directory is the
job's ingestion root, so deleting a document is removing its file and syncing again: the ingestion pipeline's own
pruning deletes its chunks from Chroma and the manifest, rebuilds BM25 and records a new index version.

Refused with a problem response: file names with a path (traversal), unsupported types, too many or too large
files (413), and zip archives whose members escape the directory or that unpack too far (a zip bomb, 413).
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import KEY_PROBLEMS, AdminAccess, Services, check_collection, readable
from api.jobs import Job
from api.problems import ApiError, problem_responses
from api.schemas import JobAccepted
from rag.indexing.manifest import Manifest
from rag.settings import COLLECTION_NAME_PATTERN, Settings

UPLOADABLE = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf"}
ZIP_MAX_RATIO = 100  # unpacked / packed size of one member above which an archive is treated as a bomb
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,150}$")
UPLOAD_PROBLEMS = problem_responses(
    "validation_error",
    "malformed_request",
    "rate_limited",
    "not_ready",
    "payload_too_large",
    *KEY_PROBLEMS,
    "invalid_input",
    "ingestion_running",
)
LIST_PROBLEMS = problem_responses("validation_error", "rate_limited", "not_ready", *KEY_PROBLEMS, "not_found")
DELETE_PROBLEMS = problem_responses(
    "validation_error", "rate_limited", "not_ready", *KEY_PROBLEMS, "not_found", "invalid_input", "ingestion_running"
)
Collection = Annotated[str | None, Query(pattern=COLLECTION_NAME_PATTERN, description="Default: RAG_COLLECTION.")]

router = APIRouter(tags=["documents"])


class StoredUpload(BaseModel):
    doc_id: str
    name: str
    bytes: int
    sha256: str


class UploadAccepted(JobAccepted):
    collection: str
    documents: list[StoredUpload]


class DocumentInfo(BaseModel):
    doc_id: str
    title: str
    format: str
    source: str
    chunks: int
    characters: int
    ingested_at: str | None
    status: str = Field(description="indexed, pending (uploaded, not synced yet) or stale (file deleted, sync pending)")
    uploaded: bool = Field(description="Stored under the upload directory (deletable over HTTP).")


class DocumentList(BaseModel):
    collection: str
    index_version: str | None
    dirty: bool
    documents: list[DocumentInfo]


class CollectionInfo(BaseModel):
    name: str
    documents: int
    chunks: int
    index_version: str | None
    updated_at: str | None


def upload_root(settings: Settings, collection: str) -> Path:
    return settings.data_dir / "uploads" / collection


def plain_name(raw: str | None) -> str:
    """The client's file name if it is a plain name; anything with a path or odd characters is refused."""
    name = (raw or "").strip()
    if not name or "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise ApiError(422, "invalid_input", f"file name {name[:100]!r} is not a plain name (no paths, no '..')")
    if not SAFE_NAME.match(name):
        raise ApiError(
            422,
            "invalid_input",
            f"file name {name[:100]!r} has characters other than letters, digits, spaces and ._()+-",
        )
    return name


def check_type(name: str) -> None:
    if PurePosixPath(name).suffix.lower() not in UPLOADABLE:
        allowed = " ".join(sorted(UPLOADABLE | {".zip"}))
        raise ApiError(422, "invalid_input", f"{name!r}: unsupported file type; upload one of {allowed}")


def unpack(name: str, data: bytes, settings: Settings) -> list[tuple[str, bytes]]:
    """The supported members of a zip upload; traversal, bombs and oversize archives are refused."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ApiError(422, "invalid_input", f"{name!r} is not a readable zip archive") from exc
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > settings.upload_max_files:
        raise ApiError(
            413, "payload_too_large", f"{name!r} holds {len(members)} files, over {settings.upload_max_files}"
        )
    total = 0
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise ApiError(422, "invalid_input", f"{name!r}: member {member.filename[:100]!r} escapes the archive")
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if total > settings.upload_max_unpacked_bytes or ratio > ZIP_MAX_RATIO:
            raise ApiError(
                413,
                "payload_too_large",
                f"{name!r} unpacks to too much data (a zip bomb?); limit "
                f"{settings.upload_max_unpacked_bytes} bytes, ratio {ZIP_MAX_RATIO}",
            )
    files = []
    for member in members:
        inner = PurePosixPath(member.filename.replace("\\", "/")).name
        if PurePosixPath(inner).suffix.lower() in UPLOADABLE:
            with archive.open(member) as handle:
                content = handle.read(settings.upload_max_unpacked_bytes + 1)
            if len(content) > member.file_size:  # a lying header: stop at what it declared
                raise ApiError(413, "payload_too_large", f"{name!r}: member {inner!r} is larger than it declares")
            files.append((plain_name(inner), content))
    return files


def store_files(root: Path, files: list[tuple[str, bytes]]) -> tuple[list[StoredUpload], list[Path]]:
    """Write each file as ``<sha256[:16]>/<name>``; returns the records and the paths that are new."""
    stored, created = [], []
    for name, content in files:
        digest = hashlib.sha256(content).hexdigest()
        target = root / digest[:16] / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{name}.part")
            tmp.write_bytes(content)
            tmp.replace(target)
            created.append(target)
        stored.append(StoredUpload(doc_id=f"{digest[:16]}/{name}", name=name, bytes=len(content), sha256=digest))
    return stored, created


def sync(services: Services, collection: str) -> Job:
    """Sync the collection from its upload directory (pruning what is no longer there) as a background job."""
    root = upload_root(services.settings, collection)
    root.mkdir(parents=True, exist_ok=True)
    return services.jobs.submit([root.resolve()], collection, True)


async def read_uploads(files: list[UploadFile], settings: Settings) -> list[tuple[str, bytes]]:
    if len(files) > settings.upload_max_files:
        raise ApiError(413, "payload_too_large", f"{len(files)} files, over the limit of {settings.upload_max_files}")
    accepted: list[tuple[str, bytes]] = []
    for upload in files:
        name = plain_name(upload.filename)
        data = await upload.read(settings.upload_max_bytes + 1)
        if len(data) > settings.upload_max_bytes:
            raise ApiError(413, "payload_too_large", f"{name!r} is over {settings.upload_max_bytes} bytes")
        if not data:
            raise ApiError(422, "invalid_input", f"{name!r} is empty")
        if name.lower().endswith(".zip"):
            accepted.extend(await run_in_threadpool(unpack, name, data, settings))
        else:
            check_type(name)
            accepted.append((name, data))
    if not accepted:
        raise ApiError(422, "invalid_input", "no supported document in the upload")
    if len(accepted) > settings.upload_max_files:
        raise ApiError(
            413, "payload_too_large", f"{len(accepted)} files, over the limit of {settings.upload_max_files}"
        )
    return accepted


@router.post("/v1/documents", status_code=202, response_model=UploadAccepted, responses=UPLOAD_PROBLEMS)
async def upload_documents(
    files: Annotated[list[UploadFile], File(description="Documents (.txt .md .html .pdf) or .zip archives of them.")],
    request: Request,
    services: AdminAccess,
    collection: Collection = None,
) -> UploadAccepted:
    """Store uploaded documents under data_dir and ingest them into the collection (202 + job)."""
    name = check_collection(request, collection or services.settings.collection)
    accepted = await read_uploads(files, services.settings)
    stored, created = await run_in_threadpool(store_files, upload_root(services.settings, name), accepted)
    try:
        job = sync(services, name)
    except ApiError:
        for path in created:  # nothing half-done: a refused upload leaves no file behind
            path.unlink(missing_ok=True)
        raise
    return UploadAccepted(
        job_id=job.id, state=job.state, status_url=f"/v1/jobs/{job.id}", collection=name, documents=stored
    )


def manifest_of(settings: Settings, collection: str) -> Manifest:
    if not Manifest.path_for(settings.manifest_dir, collection).exists():
        raise ApiError(404, "not_found", f"collection {collection!r} does not exist; ingest or upload into it first")
    return Manifest.load(settings.manifest_dir, collection)


def describe(settings: Settings, collection: str) -> DocumentList:
    manifest = manifest_of(settings, collection)
    root = upload_root(settings, collection)
    root_text = str(root.resolve())
    on_disk = {str(p.relative_to(root)) for p in root.glob("*/*") if p.is_file()} if root.is_dir() else set()
    docs = []
    for doc_id, record in sorted(manifest.documents.items()):
        uploaded = record.source_root == root_text
        status = "stale" if uploaded and doc_id not in on_disk else "indexed"
        docs.append(
            DocumentInfo(
                doc_id=doc_id,
                title=record.title,
                format=record.format,
                source=record.source,
                chunks=len(record.chunk_ids),
                characters=record.n_chars,
                ingested_at=record.ingested_at,
                status=status,
                uploaded=uploaded,
            )
        )
    for doc_id in sorted(on_disk - set(manifest.documents)):
        docs.append(
            DocumentInfo(
                doc_id=doc_id,
                title="",
                format=PurePosixPath(doc_id).suffix.lstrip("."),
                source=str(root / doc_id),
                chunks=0,
                characters=0,
                ingested_at=None,
                status="pending",
                uploaded=True,
            )
        )
    return DocumentList(
        collection=collection, index_version=manifest.index_version, dirty=manifest.dirty, documents=docs
    )


@router.get("/v1/collections/{collection}/documents", response_model=DocumentList, responses=LIST_PROBLEMS)
async def list_documents(
    collection: Annotated[str, PathParam(pattern=COLLECTION_NAME_PATTERN)], request: Request, services: AdminAccess
) -> DocumentList:
    """The collection's documents with their index status (indexed, pending, stale).

    (Not ``GET /v1/documents``: two routes on one path answer 405 with only one route's ``Allow`` methods.)
    """
    return await run_in_threadpool(describe, services.settings, check_collection(request, collection))


@router.delete("/v1/documents/{doc_id:path}", status_code=202, response_model=JobAccepted, responses=DELETE_PROBLEMS)
async def delete_document(
    doc_id: Annotated[str, PathParam(max_length=300)],
    request: Request,
    services: AdminAccess,
    collection: Collection = None,
) -> JobAccepted:
    """Delete one uploaded document: its file goes now, its chunks with the sync job (202 + job)."""
    name = check_collection(request, collection or services.settings.collection)
    root = upload_root(services.settings, name)
    parts = PurePosixPath(doc_id).parts
    if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{16}", parts[0]):
        known = (
            Manifest.path_for(services.settings.manifest_dir, name).exists()
            and doc_id in manifest_of(services.settings, name).documents
        )
        if known:
            raise ApiError(
                422,
                "invalid_input",
                f"{doc_id!r} was not uploaded over HTTP; remove it from its source and run the ingestion again",
            )
        raise ApiError(404, "not_found", f"no uploaded document {doc_id!r} in collection {name!r}")
    target = root / parts[0] / plain_name(parts[1])
    if not target.is_file():
        raise ApiError(404, "not_found", f"no uploaded document {doc_id!r} in collection {name!r}")
    target.unlink()
    if not any(target.parent.iterdir()):
        target.parent.rmdir()
    job = sync(services, name)
    return JobAccepted(job_id=job.id, state=job.state, status_url=f"/v1/jobs/{job.id}")


def collection_infos(settings: Settings) -> list[CollectionInfo]:
    infos = []
    if settings.manifest_dir.is_dir():
        for path in sorted(settings.manifest_dir.glob("*.json")):
            if not re.match(COLLECTION_NAME_PATTERN, path.stem):
                continue
            manifest = Manifest.load(settings.manifest_dir, path.stem)
            infos.append(
                CollectionInfo(
                    name=path.stem,
                    documents=len(manifest.documents),
                    chunks=sum(len(d.chunk_ids) for d in manifest.documents.values()),
                    index_version=manifest.index_version,
                    updated_at=manifest.updated_at,
                )
            )
    return infos


@router.get("/v1/collections", response_model=list[CollectionInfo], responses=LIST_PROBLEMS)
async def list_collections(request: Request, services: AdminAccess) -> list[CollectionInfo]:
    """Every ingested collection (that the key may read) with its size and index version."""
    infos = await run_in_threadpool(collection_infos, services.settings)
    allowed = set(readable(request, [info.name for info in infos]))
    return [info for info in infos if info.name in allowed]
