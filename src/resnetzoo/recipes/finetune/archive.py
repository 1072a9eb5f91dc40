"""Extracting a data-set archive safely: plain files and folders only, all or nothing.

Archives from the internet can hold members that write outside the folder they are
extracted into (absolute paths, ``..``, links, chains of links that are harmless one
by one), devices and fifos. :func:`safe_extract` refuses all of them before writing
anything, and makes an interrupted or failed extraction leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from resnetzoo._io import remove_orphans, temporary_name
from resnetzoo.recipes.finetune.errors import UnsafeArchiveError

__all__ = ["safe_extract"]


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing to extract")
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..' and would escape the folder; refusing to extract")
    if member.issym() or member.islnk():
        # A chain of links, each harmless alone (d/l -> .., d/l/x -> ..), can lead a later
        # member anywhere; no data-set archive needs links, so none is extracted.
        kind = "symbolic" if member.issym() else "hard"
        raise UnsafeArchiveError(
            f"archive member {name!r} is a {kind} link (to {member.linkname!r}); archives with links "
            f"are refused (the data-set archives have none)"
        )
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive member {name!r} is a device or fifo; refusing to extract")


def _move_into_place(staging: Path, dest: Path) -> None:
    if not dest.exists():
        os.replace(staging, dest)
        return
    entries = sorted(staging.iterdir())
    for entry in entries:
        target = dest / entry.name
        if target.exists() or target.is_symlink():
            raise UnsafeArchiveError(
                f"{target} already exists and extracting would replace it; move it away and retry "
                f"(nothing was extracted)"
            )
    for entry in entries:
        os.replace(entry, dest / entry.name)


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract a tar archive of plain files and folders into ``dest``, all or nothing.

    Every member is checked before anything is written: absolute paths, ``..``
    components, links of either kind, devices and fifos are refused. The members are
    extracted into a staging folder beside ``dest`` (with Python's ``tarfile`` ``"data"``
    filter where it has one) and moved into ``dest`` only when all of them are out; on
    any failure the staging folder is removed, so ``dest`` never holds part of an
    archive. A staging folder left by a killed process is removed by the next call.

    Args:
        archive: a ``.tar``, ``.tgz``, ``.tar.gz``, ``.tar.bz2`` or ``.tar.xz`` file.
        dest: the folder to extract into; created if absent. Entries of the archive's top
            level must not exist in it yet.

    Raises:
        UnsafeArchiveError: a member fails the checks, or would replace something in
            ``dest``; nothing has been extracted.
        tarfile.TarError, OSError: the archive is corrupt, or the disk is full;
            nothing has been extracted.
    """
    dest = Path(dest)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member)
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(dest)
        staging = temporary_name(dest)
        staging.mkdir()
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: the checks above are the protection
                tar.extractall(staging, members=members)
            _move_into_place(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
