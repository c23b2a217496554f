"""Photos attached to work orders: checked by their bytes, stored on disk, listed on the order.

A file is stored under ``{ATTACHMENTS_DIR}/{order id}/{sha256}{ext}`` (written to a
temporary name, synced, then renamed, so a crash leaves no half file under a real name)
before the order lists it; the same photo uploaded twice is stored once. Only JPEG, PNG
and WebP are accepted, judged by their first bytes, not by the name or the claimed type.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from hub.workorders.lifecycle import FINAL, Actor, InvalidAction, Role, State
from hub.workorders.models import WorkOrderRecord
from hub.workorders.service import Conflict, add_note, load_locked, write

KINDS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


class TooLarge(InvalidAction):
    """A file over the size limit (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    data: bytes


def sniff(data: bytes) -> str | None:
    """The image type of ``data`` by its magic number, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def display_name(filename: str) -> str:
    """The uploader's file name as the order lists it: its last part, at most 100
    characters, without control characters or lone surrogates (no database stores a NUL,
    nor text that is not UTF-8), or ``photo`` if nothing is left."""
    name = Path(filename).name
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cs"))
    return name[:100] or "photo"


def path_of(root: Path, order_id: int, name: str) -> Path:
    """Where an attachment ``name`` (as listed on the order) is stored."""
    if "/" in name or name.startswith(".") or not name:
        raise InvalidAction(f"not an attachment name: {name!r}")
    return root / str(order_id) / name


def _store(root: Path, order_id: int, data: bytes, ext: str) -> tuple[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    name = digest[:32] + ext
    target = root / str(order_id) / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    return name, digest


def attach(
    s: Session,
    root: Path,
    order_id: int,
    files: list[Upload],
    who: str,
    role: str,
    now: datetime,
    *,
    max_bytes: int,
    max_files: int,
) -> WorkOrderRecord:
    """Store ``files`` and list them on the order; commits. InvalidAction (type, count,
    final order), TooLarge; nothing is listed then (files already written stay, unlisted).

    The caller checks that ``who`` may see the order.
    """
    if not files:
        raise InvalidAction("no file given")
    kinds = []
    for f in files:
        if len(f.data) > max_bytes:
            raise TooLarge(f"{f.filename}: {len(f.data)} bytes, the limit is {max_bytes}")
        kind = sniff(f.data)
        if kind is None:
            raise InvalidAction(f"{f.filename}: only JPEG, PNG or WebP photos are accepted")
        kinds.append(kind)
    try:
        rec = load_locked(s, order_id)
        if State(rec.state) in FINAL:
            raise InvalidAction(f"work order {order_id} is {rec.state}; nothing can be added")
        listed: list[dict[str, Any]] = list(rec.attachments)
        for f, kind in zip(files, kinds, strict=True):
            name, digest = _store(root, order_id, f.data, KINDS[kind])
            if any(a["name"] == name for a in listed):
                continue
            listed.append(
                {
                    "name": name,
                    "filename": display_name(f.filename),
                    "content_type": kind,
                    "size": len(f.data),
                    "sha256": digest,
                    "uploaded_by": who,
                    "at": now.isoformat(),
                }
            )
        if len(listed) > max_files:
            raise InvalidAction(f"a work order holds at most {max_files} attachments")
        added = listed[len(rec.attachments) :]
        if added:
            write(s, rec, {"attachments": listed}, now)
            add_note(
                s,
                rec,
                "attachment",
                ", ".join(a["filename"] for a in added),
                now,
                {"names": [a["name"] for a in added]},
                actor=Actor(who, Role(role)),
            )
        s.commit()
    except (InvalidAction, Conflict):
        s.rollback()
        raise
    return rec
