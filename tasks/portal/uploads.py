"""Files clients upload: type from the content against an allow-list, stored under generated names.

The name a client's browser sends is kept for display only (cleaned, never used as a path); the
file on disk is uploads/<onboarding id>/<random hex>.<type>, and it is only ever served back as
a download (Content-Disposition: attachment, nosniff), never inline from the portal's origin.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from db.questionnaire import FileType

CONTENT_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "zip": "application/zip",
}
_OFFICE_MARKERS = (("docx", "word/document.xml"), ("xlsx", "xl/workbook.xml"),
                   ("pptx", "ppt/presentation.xml"))
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\"\\/:*?<>|]")
MAX_NAME = 120


def sniff(handle: BinaryIO) -> str | None:
    """The file's type from its first bytes (and, for zip containers, its member names)."""
    handle.seek(0)
    head = handle.read(16)
    handle.seek(0)
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(handle) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        finally:
            handle.seek(0)
        if "[Content_Types].xml" in names:
            for kind, marker in _OFFICE_MARKERS:
                if marker in names:
                    return kind
        return "zip"
    return None


def describe_types(accept: list[FileType]) -> str:
    """'PDF, PNG or JPEG' for error lines and help text."""
    names = [kind.upper() if len(kind) <= 4 else kind for kind in accept]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def clean_filename(raw: str | None) -> str:
    """A display name: no directories, no control or shell characters, not enormous."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[\\/]", name)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 \
            else name[:MAX_NAME]
    return name or "file"


@dataclass(frozen=True)
class StoredFile:
    """A file written under its generated name."""

    path: Path
    stored_name: str
    kind: str
    size: int
    sha256: str


def store(handle: BinaryIO, directory: Path, kind: str) -> StoredFile:
    """Copy an upload to directory/<random>.<kind> (written to a temporary name, then renamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    stored_name = f"{uuid.uuid4().hex}.{kind}"
    final = directory / stored_name
    partial = directory / f".{stored_name}.part"
    digest = hashlib.sha256()
    size = 0
    handle.seek(0)
    with partial.open("wb") as out:
        while chunk := handle.read(1 << 16):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, final)
    return StoredFile(path=final, stored_name=stored_name, kind=kind, size=size,
                      sha256=digest.hexdigest())


def discard(files: list[StoredFile]) -> None:
    """Remove files written for a request that was then refused or rolled back."""
    for stored in files:
        stored.path.unlink(missing_ok=True)


def copy_to(handle: BinaryIO, target: Path) -> None:
    """Copy an upload's bytes to a path (tests and tools)."""
    handle.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(handle, out)
