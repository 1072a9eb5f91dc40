"""Tar archives built in memory for the extraction tests: plain files, links, a gzip'd whole."""

from __future__ import annotations

import io
import tarfile

__all__ = ["file_member", "link_member", "tar_bytes"]

Member = tuple[tarfile.TarInfo, bytes | None]


def file_member(name: str, data: bytes = b"x") -> Member:
    """A regular file ``name`` holding ``data``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    """A symbolic (or, with ``kind=tarfile.LNKTYPE``, hard) link ``name`` -> ``target``."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def tar_bytes(members: list[Member]) -> bytes:
    """The ``.tar.gz`` bytes of ``members``, in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()
