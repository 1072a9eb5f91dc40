"""The CUB archive extractor on a Python without ``tarfile.data_filter``.

Pythons before 3.10.12 / 3.11.4 (allowed by ``requires-python``) have no extraction
filters, so :func:`~resnetzoo.recipes.finetune.archive.safe_extract` takes its other
branch there: the member checks are then the only protection. These tests remove
``tarfile.data_filter`` to run that branch on any Python, and check that it really was
the branch taken (``extractall`` called without ``filter``).
"""

from __future__ import annotations

import errno
import tarfile
from pathlib import Path

import pytest
from tarballs import file_member, tar_bytes

from resnetzoo.recipes.finetune.archive import safe_extract
from resnetzoo.recipes.finetune.errors import UnsafeArchiveError


@pytest.fixture
def old_python(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """No ``tarfile.data_filter``, as on Python < 3.10.12 / 3.11.4; returns the ``extractall`` keyword arguments."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    calls: list[dict] = []
    extractall = tarfile.TarFile.extractall

    def recording(self, *args, **kwargs):
        calls.append(kwargs)
        return extractall(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", recording)
    return calls


def test_a_good_archive_extracts_without_a_filter(tmp_path: Path, old_python: list[dict]) -> None:
    archive = tmp_path / "good.tgz"
    archive.write_bytes(tar_bytes([file_member("top/a.txt", b"hello"), file_member("top/b/c.txt", b"there")]))
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "out" / "top" / "b" / "c.txt").read_bytes() == b"there"
    assert len(old_python) == 1 and "filter" not in old_python[0]  # the branch without data_filter ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tgz", "out"]


def test_a_failure_halfway_leaves_nothing(tmp_path: Path, old_python: list[dict], monkeypatch) -> None:
    """The disk fills after the first file: the staging folder goes, ``dest`` never appears."""
    makefile = tarfile.TarFile.makefile

    def full_after_one(self, tarinfo, targetpath):
        if Path(targetpath).name == "b.txt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return makefile(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", full_after_one)
    archive = tmp_path / "data.tgz"
    archive.write_bytes(tar_bytes([file_member("top/a.txt", b"hello"), file_member("top/b.txt", b"world")]))
    with pytest.raises(OSError, match="No space"):
        safe_extract(archive, tmp_path / "dest")
    assert len(old_python) == 1 and "filter" not in old_python[0]
    assert [p.name for p in tmp_path.iterdir()] == ["data.tgz"]


def test_an_existing_top_folder_is_never_merged_into(tmp_path: Path, old_python: list[dict]) -> None:
    archive = tmp_path / "good.tgz"
    archive.write_bytes(tar_bytes([file_member("top/a.txt", b"hello")]))
    dest = tmp_path / "dest"
    (dest / "top").mkdir(parents=True)
    (dest / "top" / "mine.txt").write_text("keep")
    with pytest.raises(UnsafeArchiveError, match="already exists"):
        safe_extract(archive, dest)
    assert [p.name for p in (dest / "top").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "good.tgz"]
