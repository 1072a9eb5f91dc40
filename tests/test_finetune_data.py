"""Fine-tuning data: the readers (CUB, NABirds, image folders, torchvision's layouts), the dataset and its cache,
safe extraction, the CUB download."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LoopbackServer
from PIL import Image
from tarballs import file_member, link_member, tar_bytes

from resnetzoo._io import temporary_name
from resnetzoo.errors import ChecksumError
from resnetzoo.recipes.cub200 import (
    CUB200,
    CUB200TreeError,
    UnsafeArchiveError,
    build_transforms,
    download_cub200,
    find_tree,
    make_synthetic_tree,
    normalize_batch,
    read_tree,
    safe_extract,
)
from resnetzoo.recipes.finetune import DatasetError


# ------------------------------------------------------------------------------ helpers
def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.convert(mode).save(path)


def _dominant(image: torch.Tensor) -> int:
    """Index of the strongest channel of an image (JPEG shifts exact values by a few levels)."""
    return int(image.float().mean(dim=(1, 2)).argmax())


def _write(root: Path, name: str, lines: list[str]) -> None:
    (root / name).write_text("".join(f"{line}\n" for line in lines))


def _hand_tree(root: Path) -> Path:
    """Three images whose ids are neither in file-name nor in line order, tables in different orders.

    id 3 -> a/a_01.jpg (red, class 2 "Beta", train)
    id 1 -> a/a_02.jpg (green, class 1 "Alpha", test)
    id 2 -> b/b_01.png (RGBA blue, class 1 "Alpha", train)
    """
    _solid(root / "images" / "a" / "a_01.jpg", (255, 0, 0))
    _solid(root / "images" / "a" / "a_02.jpg", (0, 255, 0))
    _solid(root / "images" / "b" / "b_01.png", (0, 0, 255), mode="RGBA")
    _write(root, "classes.txt", ["1 001.Alpha", "2 002.Beta"])
    _write(root, "images.txt", ["3 a/a_01.jpg", "1 a/a_02.jpg", "2 b/b_01.png"])
    _write(root, "image_class_labels.txt", ["1 1", "2 1", "3 2"])
    _write(root, "train_test_split.txt", ["2 1", "3 1", "1 0"])
    _write(root, "bounding_boxes.txt", ["1 0 0 10 10", "3 5.0 5.0 20.0 10.0", "2 1 2 3 4"])
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_synthetic_tree(tmp_path / "tree", num_classes=3, train_per_class=3, test_per_class=2, image_size=(48, 40))


# ------------------------------------------------------------------------------ parsing
def test_tables_are_joined_on_the_image_id_not_on_line_order(tmp_path: Path) -> None:
    parsed = read_tree(_hand_tree(tmp_path / "t"))
    by_path = {r.path.relative_to(parsed.root / "images").as_posix(): r for r in parsed.records}
    assert parsed.classes == ("Alpha", "Beta")
    assert (by_path["a/a_01.jpg"].key, by_path["a/a_01.jpg"].label, by_path["a/a_01.jpg"].split) == ("3", 1, "train")
    assert (by_path["a/a_02.jpg"].key, by_path["a/a_02.jpg"].label, by_path["a/a_02.jpg"].split) == ("1", 0, "test")
    assert by_path["b/b_01.png"].bbox == (1.0, 2.0, 3.0, 4.0)

    train = CUB200(parsed, split="train")
    test = CUB200(parsed, split="test")
    assert [r.path.name for r in train.records] == ["a_01.jpg", "b_01.png"]
    assert [r.source for r in train.records] == ["images.txt:1", "images.txt:3"]
    assert train.targets == [1, 0] and test.targets == [0]
    image, label = test[0]
    assert label == 0
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert _dominant(image) == 1  # the green file, so the id join is right


def test_grayscale_cmyk_and_rgba_images_become_rgb(tmp_path: Path, tree: Path) -> None:
    modes = {}
    for record in read_tree(tree).records:
        with Image.open(record.path) as img:
            modes.setdefault(img.mode, record)
    assert {"L", "CMYK", "RGB"} <= set(modes)  # the generator wrote all three
    parsed = read_tree(tree)
    for mode, record in modes.items():
        dataset = CUB200(parsed, split=record.split)
        image, _ = dataset[dataset.records.index(record)]
        assert image.shape[0] == 3 and image.dtype == torch.uint8, mode
    rgba = CUB200(read_tree(_hand_tree(tmp_path / "t")), split="train")[1][0]
    assert rgba.shape[0] == 3 and _dominant(rgba) == 2


def test_bbox_crop_cuts_out_the_box(tmp_path: Path) -> None:
    root = _hand_tree(tmp_path / "t")
    img = Image.new("RGB", (40, 30), (0, 0, 0))
    img.paste((200, 10, 10), (5, 5, 25, 15))  # exactly the box of id 3: x=5 y=5 w=20 h=10
    img.save(root / "images" / "a" / "a_01.jpg", quality=100)
    image, _ = CUB200(root, split="train", bbox_crop=True)[0]
    assert image.shape == (3, 10, 20)
    assert (image[0].float().mean() > 180) and (image[1:].float().mean() < 40)


def test_synthetic_tree_ids_do_not_follow_file_names(tree: Path) -> None:
    parsed = read_tree(tree)
    assert len(parsed.classes) == 3 and len(parsed.records) == 15
    assert len(parsed.split("train")) == 9 and len(parsed.split("test")) == 6
    by_name = sorted(parsed.records, key=lambda r: r.path)
    assert [int(r.key) for r in by_name] != sorted(int(r.key) for r in by_name)
    for record in parsed.records:  # labels agree with the folder each file is in
        assert int(record.path.parent.name.split(".", 1)[0]) == record.label + 1
    assert find_tree(tree.parent) is None and find_tree(tree) == tree


def test_synthetic_tree_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        make_synthetic_tree(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    first = make_synthetic_tree(tmp_path / "gen", num_classes=2, train_per_class=1, test_per_class=1)
    before = (first / "images.txt").read_bytes()
    make_synthetic_tree(tmp_path / "gen", num_classes=2, train_per_class=1, test_per_class=1)  # rewrites its own
    assert (first / "images.txt").read_bytes() == before


# ----------------------------------------------------------------------- broken trees
def _break(root: Path, name: str, edit) -> None:
    path = root / name
    path.write_text(edit(path.read_text().splitlines()))


def _replace_line(index: int, text: str):
    def edit(lines: list[str]) -> str:
        lines[index] = text
        return "\n".join(lines) + "\n"

    return edit


BROKEN = {
    "missing split file": (lambda r: (r / "train_test_split.txt").unlink(), r"train_test_split\.txt: missing"),
    "missing bbox file": (lambda r: (r / "bounding_boxes.txt").unlink(), r"bounding_boxes\.txt: missing"),
    "id without a label": (
        lambda r: _break(r, "image_class_labels.txt", lambda lines: "\n".join(lines[1:]) + "\n"),
        r"images\.txt:\d+: image id 1 has no line in image_class_labels\.txt",
    ),
    "id only in split file": (
        lambda r: _break(r, "train_test_split.txt", lambda lines: "\n".join([*lines, "99 1"]) + "\n"),
        r"train_test_split\.txt:4: image id 99 is not in images\.txt",
    ),
    "label out of range": (
        lambda r: _break(r, "image_class_labels.txt", _replace_line(1, "2 7")),
        r"image_class_labels\.txt:2: class id 7 is not in classes\.txt \(ids 1\.\.2\)",
    ),
    "label not a number": (
        lambda r: _break(r, "image_class_labels.txt", _replace_line(0, "1 one")),
        r"image_class_labels\.txt:1: the class id must be an integer",
    ),
    "bad split value": (
        lambda r: _break(r, "train_test_split.txt", _replace_line(2, "1 2")),
        r"train_test_split\.txt:3: the split must be 1 \(train\) or 0 \(test\)",
    ),
    "short line": (
        lambda r: _break(r, "bounding_boxes.txt", _replace_line(0, "1 0 0 10")),
        r"bounding_boxes\.txt:1: expected 5 fields",
    ),
    "duplicate id": (
        lambda r: _break(r, "images.txt", _replace_line(2, "3 b/b_01.png")),
        r"images\.txt:3: id 3 is listed twice \(first on line 1\)",
    ),
    "missing image": (
        lambda r: (r / "images" / "a" / "a_02.jpg").unlink(),
        r"images\.txt:2: image file .*a_02\.jpg does not exist",
    ),
    "unreadable image": (
        lambda r: (r / "images" / "b" / "b_01.png").write_bytes(b"this is not an image"),
        r"images\.txt:3: .*b_01\.png is not a readable image",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_tree_fails_at_start_naming_file_and_line(tmp_path: Path, case: str) -> None:
    root = _hand_tree(tmp_path / "t")
    damage, message = BROKEN[case]
    damage(root)
    with pytest.raises(CUB200TreeError, match=message):
        CUB200(root, split="train")


def test_index_file_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    root = _hand_tree(tmp_path / "t")
    (root / "classes.txt").write_bytes("1 001.Alpha\n2 002.B\u00e9ta\n".encode("latin-1"))
    with pytest.raises(CUB200TreeError, match=r"classes\.txt:2: not UTF-8 text \(byte 0xe9 at column 8\)"):
        read_tree(root)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_bounding_box_that_is_not_a_finite_number_is_refused(tmp_path: Path, value: str) -> None:
    root = _hand_tree(tmp_path / "t")
    _break(root, "bounding_boxes.txt", _replace_line(1, f"3 5.0 {value} 20.0 10.0"))
    with pytest.raises(CUB200TreeError, match=r"bounding_boxes\.txt:2: .*not a finite number"):
        CUB200(root, split="train", bbox_crop=True)


def test_decompression_bomb_is_refused_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    root = _hand_tree(tmp_path / "t")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the 40 x 30 images are now "bombs"
    with pytest.raises(CUB200TreeError, match=r"images\.txt:1: .*a_01\.jpg is too large to decode safely"):
        read_tree(root)
    dataset = CUB200(root, split="train", check_images=False)
    with pytest.raises(DatasetError, match=r"a_01\.jpg is too large to decode safely"):
        dataset[0]


def test_cache_sweeps_temporaries_of_a_killed_run(tmp_path: Path, tree: Path) -> None:
    dataset = CUB200(tree, split="test", resize=24, cache_dir=tmp_path / "cache")
    dataset.cache_dir.mkdir(parents=True)
    orphan = Path(str(temporary_name(dataset.cache_dir / "1.npy")).replace(f".{os.getpid()}.", ".999999999."))
    orphan.write_bytes(b"half an array")
    dataset.build_cache(num_threads=1)
    assert not orphan.exists() and len(list(dataset.cache_dir.iterdir())) == len(dataset)


def test_no_tree_at_all_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(CUB200TreeError, match=r"no CUB-200-2011 tree.*--download.*--synthetic"):
        read_tree(tmp_path)


def test_truncated_jpeg_fails_when_the_cache_is_built_naming_the_file(tmp_path: Path) -> None:
    root = _hand_tree(tmp_path / "t")
    _solid(root / "images" / "a" / "a_01.jpg", (255, 0, 0), size=(200, 200))
    data = (root / "images" / "a" / "a_01.jpg").read_bytes()
    (root / "images" / "a" / "a_01.jpg").write_bytes(data[: len(data) // 2])  # header intact, body cut
    dataset = CUB200(root, split="train", resize=16, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match=r"images\.txt:1: cannot decode .*a_01\.jpg"):
        dataset.build_cache(num_threads=1)


# --------------------------------------------------------------------------- the cache
@pytest.mark.parametrize("mode", ["square", "shorter"])
def test_cache_gives_the_same_images_as_decoding(tmp_path: Path, tree: Path, mode: str) -> None:
    plain = CUB200(tree, split="test", resize=36, resize_mode=mode)
    cached = CUB200(plain.tree, split="test", resize=36, resize_mode=mode, cache_dir=tmp_path / "cache")
    cached.build_cache(num_threads=2)
    files = sorted(cached.cache_dir.glob("*.npy"))
    assert len(files) == len(cached)
    array = np.load(files[0])
    assert array.dtype == np.uint8 and array.shape[0] == 3
    assert min(array.shape[1:]) == 36 and (mode == "shorter" or array.shape[1:] == (36, 36))
    for i in range(len(plain)):
        assert torch.equal(plain.load_image(i), cached.load_image(i))


def test_cache_is_keyed_by_resize_and_bbox(tmp_path: Path, tree: Path) -> None:
    parsed = read_tree(tree)
    dirs = {
        CUB200(parsed, resize=32, cache_dir=tmp_path).cache_dir,
        CUB200(parsed, resize=40, cache_dir=tmp_path).cache_dir,
        CUB200(parsed, resize=32, bbox_crop=True, cache_dir=tmp_path).cache_dir,
        CUB200(parsed, resize=32, resize_mode="shorter", cache_dir=tmp_path).cache_dir,
    }
    assert len(dirs) == 4
    with pytest.raises(ValueError, match="cache_dir needs resize"):
        CUB200(parsed, cache_dir=tmp_path)


def test_transforms_and_normalisation(tree: Path) -> None:
    train = CUB200(tree, split="train", resize=40, transform=build_transforms(train=True, img_size=32))
    test = CUB200(tree, split="test", resize=40, transform=build_transforms(train=False, img_size=32))
    image, _ = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert torch.equal(test[0][0], test[0][0])  # evaluation is deterministic
    batch = torch.stack([test[i][0] for i in range(2)])
    out = normalize_batch(batch, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), channels_last=True)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, (batch.float() / 255 - 0.5) / 0.25, atol=1e-6)  # one multiply-add, not three steps


# ------------------------------------------------------------------------ extraction



@pytest.mark.parametrize(
    "member, message",
    [
        (file_member("../evil"), "contains '..'"),
        (file_member("ok/../../evil"), "contains '..'"),
        (file_member("/tmp/evil"), "absolute path"),
        (link_member("ok/link", "../../outside"), "symbolic link"),
        (link_member("ok/link", "/etc/passwd"), "symbolic link"),
        (link_member("ok/inside", "first.txt"), "symbolic link"),  # harmless alone, but no archive needs it
        (link_member("ok/hard", "../evil", tarfile.LNKTYPE), "contains '..'|hard link"),
        (link_member("ok/hard", "ok/first.txt", tarfile.LNKTYPE), "hard link"),
    ],
)
def test_safe_extract_rejects_links_and_members_escaping_the_folder(tmp_path: Path, member, message: str) -> None:
    archive = tmp_path / "bad.tgz"
    archive.write_bytes(tar_bytes([file_member("ok/first.txt"), member]))
    dest = tmp_path / "a" / "dest"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, dest)
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert [p.name for p in tmp_path.rglob("*")] == ["bad.tgz"]  # checked before anything is written


@pytest.mark.parametrize("data_filter", ["with", "without"], ids=["data_filter", "no-data_filter"])
def test_safe_extract_refuses_a_symlink_chain_out_of_the_folder(tmp_path: Path, monkeypatch, data_filter) -> None:
    """``d/l -> ..`` then ``d/l/x -> ..``: each link stays inside alone; together they reach the parent.

    Also on Pythons without ``tarfile.data_filter`` (< 3.10.12, < 3.11.4), where only our checks stand.
    """
    if data_filter == "without":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "chain.tar"
    archive.write_bytes(tar_bytes([link_member("d/l", ".."), link_member("d/l/x", ".."), file_member("d/l/x/escaped.txt", b"evil")]))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, work / "dest")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["chain.tar", "work"]


def test_safe_extract_is_all_or_nothing(tmp_path: Path) -> None:
    good = tar_bytes([file_member("top/a.txt", b"hello"), file_member("top/sub/b.txt", b"world")])
    archive = tmp_path / "cut.tgz"
    archive.write_bytes(good[: len(good) - 40])  # the gzip stream ends early: a corrupt download
    dest = tmp_path / "dest"
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        safe_extract(archive, dest)
    assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == ["cut.tgz"]

    (tmp_path / "good.tgz").write_bytes(good)
    dest.mkdir()
    (dest / "top").mkdir()
    (dest / "top" / "mine.txt").write_text("keep")
    with pytest.raises(UnsafeArchiveError, match="already exists"):  # would replace the user's top/
        safe_extract(tmp_path / "good.tgz", dest)
    assert [p.name for p in (dest / "top").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tgz", "dest", "good.tgz"]


def test_safe_extract_extracts_a_good_archive_and_sweeps_a_killed_staging_folder(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    orphan = Path(str(temporary_name(dest)).replace(f".{os.getpid()}.", ".999999999."))  # no such process
    (orphan / "half").mkdir(parents=True)
    archive = tmp_path / "good.tgz"
    archive.write_bytes(tar_bytes([file_member("top/a.txt", b"hello"), file_member("top/b/c.txt", b"there")]))
    safe_extract(archive, dest)
    assert (dest / "top" / "a.txt").read_bytes() == b"hello"
    assert (dest / "top" / "b" / "c.txt").read_bytes() == b"there"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tgz", "out"]


# --------------------------------------------------------------------------- download
ARCHIVE_PATH = "/CUB_200_2011.tgz"


@pytest.fixture
def archive(tree: Path) -> Iterator[bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tree, arcname="CUB_200_2011")
        info, data = file_member("attributes.txt", b"top-level file of the real archive")
        tar.addfile(info, io.BytesIO(data))
    yield buffer.getvalue()


def _fetch(root: Path, url: str, payload: bytes, **overrides: object) -> Path:
    kwargs = {"url": url, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "progress": False}
    return download_cub200(root, **{**kwargs, **overrides})  # type: ignore[arg-type]


def test_download_verifies_then_extracts(tmp_path: Path, archive: bytes, http_server) -> None:
    url = http_server.add(ARCHIVE_PATH, archive)
    tree_dir = _fetch(tmp_path / "data", url, archive)
    assert tree_dir == tmp_path / "data" / "CUB_200_2011"
    assert len(read_tree(tree_dir).records) == 15
    assert (tmp_path / "data" / "CUB_200_2011.tgz").read_bytes() == archive
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["CUB_200_2011", "CUB_200_2011.tgz"]
    _fetch(tmp_path / "data", url, archive)  # already there: no second request
    assert http_server.ranges_asked == [None]


@pytest.mark.parametrize("ranges", [True, False])
def test_download_resumes_a_partial_file(tmp_path: Path, archive: bytes, ranges: bool, http_server) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "CUB_200_2011.tgz.partial").write_bytes(archive[: len(archive) // 3])
    _fetch(root, http_server.add(ARCHIVE_PATH, archive, ranges=ranges), archive)
    assert http_server.ranges_asked == [f"bytes={len(archive) // 3}-"]
    assert (root / "CUB_200_2011.tgz").read_bytes() == archive  # right bytes even when Range was ignored
    assert not (root / "CUB_200_2011.tgz.partial").exists()


def test_download_with_wrong_checksum_extracts_nothing_and_leaves_nothing(
    tmp_path: Path, archive: bytes, http_server
) -> None:
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match="sha256"):
        _fetch(root, http_server.add(ARCHIVE_PATH, archive), archive, sha256="0" * 64)
    assert list(root.iterdir()) == []


def test_a_foreign_archive_with_wrong_checksum_is_left_alone(tmp_path: Path, archive: bytes, http_server) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "CUB_200_2011.tgz").write_bytes(b"my own file")
    with pytest.raises(ChecksumError, match="left alone"):
        _fetch(root, http_server.add(ARCHIVE_PATH, archive), archive)
    assert (root / "CUB_200_2011.tgz").read_bytes() == b"my own file" and http_server.hits == []


def test_unreachable_server_keeps_the_partial_file(tmp_path: Path, archive: bytes) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "CUB_200_2011.tgz.partial").write_bytes(b"abc")
    dead = LoopbackServer()
    url = dead.add(ARCHIVE_PATH, archive)
    dead.stop()
    with pytest.raises(ConnectionError, match=r"continue from the 3 bytes kept in .*CUB_200_2011\.tgz\.partial"):
        download_cub200(root, url=url, size=len(archive), sha256="0" * 64, progress=False, timeout=5)
    assert (root / "CUB_200_2011.tgz.partial").read_bytes() == b"abc"


def test_offline_download_says_where_to_put_the_archive_by_hand(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    root = tmp_path / "data"
    with pytest.raises(ConnectionError) as caught:
        download_cub200(root, progress=False)
    message = str(caught.value)
    assert f"save it as {root / 'CUB_200_2011.tgz'}" in message
    assert "1,150,585,339 bytes" in message and "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081" in message
    assert "partial" not in message  # nothing was received, so nothing is kept
    assert list(root.iterdir()) == []


def test_a_tree_folder_without_images_txt_stops_before_downloading(tmp_path: Path, archive: bytes, http_server) -> None:
    root = tmp_path / "data"
    (root / "CUB_200_2011" / "images").mkdir(parents=True)  # an interrupted copy
    with pytest.raises(CUB200TreeError, match=r"CUB_200_2011 exists but holds no images\.txt.*nothing was downloaded"):
        _fetch(root, http_server.add(ARCHIVE_PATH, archive), archive)
    assert http_server.hits == [] and sorted(p.name for p in root.iterdir()) == ["CUB_200_2011"]


def test_an_archive_without_the_tree_leaves_no_extracted_copy(tmp_path: Path, http_server) -> None:
    payload = tar_bytes([file_member("something_else/readme.txt", b"not CUB")])
    root = tmp_path / "data"
    with pytest.raises(CUB200TreeError, match="not the CUB-200-2011 archive"):
        _fetch(root, http_server.add(ARCHIVE_PATH, payload), payload)
    assert sorted(p.name for p in root.iterdir()) == ["CUB_200_2011.tgz"]


# ------------------------------------------------------------------- every other reader
def _jpeg(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")


def _aircraft(root: Path) -> dict[str, int]:
    """FGVC-Aircraft as torchvision lays it out: 2 variants, 3 trainval and 2 test images."""
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("707-320\nA300B4\n")
    (data / "images_variant_trainval.txt").write_text("0001 707-320\n0002 A300B4\n0003 A300B4\n")
    (data / "images_variant_test.txt").write_text("0004 707-320\n0005 A300B4\n")
    for i in range(1, 6):
        _jpeg(data / "images" / f"{i:04d}.jpg")
    return {"train": 3, "test": 2}


def _cars(root: Path) -> dict[str, int]:
    """Stanford Cars as torchvision lays it out: 2 classes, 2 train and 2 test images (MATLAB files)."""
    import numpy as np
    import scipy.io

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    kind = [("fname", "O"), ("class", "O")]
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(["AM Hummer", "Acura RL"], dtype=object)})
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat",
                     {"annotations": np.array([("00001.jpg", 1), ("00002.jpg", 2)], dtype=kind)})
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat",
                     {"annotations": np.array([("00001.jpg", 2), ("00002.jpg", 1)], dtype=kind)})
    for split in ("cars_train", "cars_test"):
        for i in (1, 2):
            _jpeg(base / split / f"{i:05d}.jpg")
    return {"train": 2, "test": 2}


def _flowers(root: Path) -> dict[str, int]:
    """Flowers-102 as torchvision lays it out: labels and splits in MATLAB files, 6 images."""
    import numpy as np
    import scipy.io

    base = root / "flowers-102"
    base.mkdir(parents=True)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([1, 2, 1, 2, 1, 2])})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([1, 2]), "valid": np.array([3, 4]),
                                          "tstid": np.array([5, 6])})
    for i in range(1, 7):
        _jpeg(base / "jpg" / f"image_{i:05d}.jpg")
    return {"train": 2, "val": 2, "test": 2}


def _pets(root: Path) -> dict[str, int]:
    """Oxford-IIIT Pets: annotations/trainval.txt and test.txt, image names carry the breed."""
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbasset_hound_1 2 2 1\nAbyssinian_2 1 1 1\n")
    (base / "annotations" / "test.txt").write_text("basset_hound_2 2 2 1\n")
    for name in ("Abyssinian_1", "basset_hound_1", "Abyssinian_2", "basset_hound_2"):
        _jpeg(base / "images" / f"{name}.jpg")
    return {"train": 3, "test": 1}


def _nabirds(root: Path) -> dict[str, int]:
    """NABirds: CUB's files, UUID image ids, a taxonomy in classes.txt of which two leaves label images."""
    base = root / "nabirds"
    base.mkdir(parents=True)
    ids = ["0a1b-01", "0a1b-02", "0a1b-03"]
    _write(base, "classes.txt", ["0 Birds", "1 Perching Birds", "295 Black-capped Chickadee", "313 Blue Jay"])
    _write(base, "images.txt", [f"{ids[0]} 0295/a.jpg", f"{ids[1]} 0313/b.jpg", f"{ids[2]} 0313/c.jpg"])
    _write(base, "image_class_labels.txt", [f"{ids[0]} 295", f"{ids[1]} 313", f"{ids[2]} 313"])
    _write(base, "train_test_split.txt", [f"{ids[0]} 1", f"{ids[1]} 1", f"{ids[2]} 0"])
    _write(base, "bounding_boxes.txt", [f"{i} 1 2 10 12" for i in ids])
    for rel in ("0295/a.jpg", "0313/b.jpg", "0313/c.jpg"):
        _jpeg(base / "images" / rel)
    return {"train": 2, "test": 1}


LAYOUTS = {
    "fgvc_aircraft": (_aircraft, ("707-320", "A300B4")),
    "stanford_cars": (_cars, ("AM Hummer", "Acura RL")),
    "flowers102": (_flowers, None),  # torchvision's 102 names
    "oxford_pets": (_pets, ("Abyssinian", "Basset Hound")),
    "nabirds": (_nabirds, ("Black-capped Chickadee", "Blue Jay")),
}


@pytest.fixture
def flowers_without_checksums(monkeypatch):
    """torchvision checks the md5 of Flowers-102's real .mat files; these are generated."""
    import torchvision.datasets.flowers102

    monkeypatch.setattr(torchvision.datasets.flowers102, "check_integrity", lambda *args, **kwargs: True)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_reader_reads_its_layout(tmp_path: Path, name: str, flowers_without_checksums) -> None:
    from resnetzoo.recipes.finetune import read_dataset

    make, classes = LAYOUTS[name]
    counts = make(tmp_path)
    image_set = read_dataset(name, data_root=tmp_path, official_counts=False)
    assert {split: len(image_set.split(split)) for split in counts} == counts
    if classes is not None:
        assert image_set.classes == classes
    else:
        assert len(image_set.classes) == 102
    for record in image_set.records:
        assert record.path.is_file() and 0 <= record.label < len(image_set.classes)
    keys = [r.key for r in image_set.records]
    assert len(set(keys)) == len(keys)
    if name == "nabirds":  # the labels follow the class ids, whatever the taxonomy lists around them
        assert [r.label for r in image_set.records] == [0, 1, 1] and image_set.has_boxes
    if name == "stanford_cars":
        assert [r.label for r in image_set.split("test")] == [1, 0]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_miscounted_data_set_says_which_split_and_by_how_much(tmp_path: Path, name: str, monkeypatch,
                                                                 flowers_without_checksums) -> None:
    """Against the official counts a tiny tree is off by thousands; against its own, by the one image removed."""
    import dataclasses

    from resnetzoo.recipes.finetune import READERS, read_dataset

    make, _ = LAYOUTS[name]
    counts = make(tmp_path)
    reader = READERS[name]
    if reader.counts is not None:
        first = next(iter(reader.counts))
        with pytest.raises(DatasetError, match=rf"the {first} split has {counts[first]} images, [\d,]+ fewer than "
                                               rf"the official {reader.counts[first]:,}.*--no-official-counts"):
            read_dataset(name, data_root=tmp_path)
    else:  # NABirds: the class count is checked
        with pytest.raises(DatasetError, match=r"2 classes in .*classes\.txt, not the official 555"):
            read_dataset(name, data_root=tmp_path)
    monkeypatch.setitem(READERS, name, dataclasses.replace(reader, counts={**counts, "test": counts["test"] + 1},
                                                           num_classes=None))
    with pytest.raises(DatasetError, match=rf"the test split has {counts['test']} images, 1 fewer than the official "
                                           rf"{counts['test'] + 1}"):
        read_dataset(name, data_root=tmp_path)


def test_missing_data_set_says_where_the_files_go(tmp_path: Path) -> None:
    from resnetzoo.recipes.finetune import read_dataset

    with pytest.raises(DatasetError, match=r"no FGVC-Aircraft at .*fgvc-aircraft-2013b.*Download fgvc-aircraft-2013b"):
        read_dataset("fgvc_aircraft", data_root=tmp_path)
    with pytest.raises(DatasetError, match=r"no Oxford-IIIT Pets at .*oxford-iiit-pet.*annotations\.tar\.gz"):
        read_dataset("oxford_pets", data_root=tmp_path)
    with pytest.raises(DatasetError, match=r"'cub_200' is not a known data set; choose one of cub200, nabirds"):
        read_dataset("cub_200", data_root=tmp_path)


def test_a_broken_index_line_is_named(tmp_path: Path) -> None:
    from resnetzoo.recipes.finetune import read_dataset

    _pets(tmp_path)
    (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").write_text("basset_hound_2 two 2 1\n")
    with pytest.raises(DatasetError, match=r"test\.txt:1: expected '<image> <class id> <species> <breed id>'"):
        read_dataset("oxford_pets", data_root=tmp_path, official_counts=False)


def test_a_broken_aircraft_index_is_named_with_file_and_line(tmp_path: Path) -> None:
    from resnetzoo.recipes.finetune import read_dataset

    _aircraft(tmp_path)
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    (data / "images_variant_test.txt").write_text("0004 707-320\n0005 747-400\n")
    with pytest.raises(DatasetError, match=r"images_variant_test\.txt:2: '747-400' is not one of the 2 variants in "
                                           r".*variants\.txt"):
        read_dataset("fgvc_aircraft", data_root=tmp_path, official_counts=False)
    (data / "images_variant_test.txt").write_text("0004 707-320\n0005\n")
    with pytest.raises(DatasetError, match=r"images_variant_test\.txt:2: expected 2 fields, found 1"):
        read_dataset("fgvc_aircraft", data_root=tmp_path, official_counts=False)
    (data / "variants.txt").write_text("707-320\nA300B4\n707-320\n")
    with pytest.raises(DatasetError, match=r"variants\.txt:3: '707-320' is listed twice"):
        read_dataset("fgvc_aircraft", data_root=tmp_path, official_counts=False)
    (data / "variants.txt").write_text("707-320\nA300B4\n")
    (data / "images_variant_test.txt").write_text("0004 707-320\n0009 A300B4\n")
    with pytest.raises(DatasetError, match=r"images_variant_test\.txt:2: image file .*0009\.jpg does not exist"):
        read_dataset("fgvc_aircraft", data_root=tmp_path, official_counts=False)


def test_a_broken_stanford_cars_annotation_is_named_with_file_and_entry(tmp_path: Path) -> None:
    import numpy as np
    import scipy.io

    from resnetzoo.recipes.finetune import read_dataset

    _cars(tmp_path)
    base = tmp_path / "stanford_cars"
    kind = [("fname", "O"), ("class", "O")]
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat",  # class 3 of 2: torchvision takes it silently
                     {"annotations": np.array([("00001.jpg", 2), ("00002.jpg", 3)], dtype=kind)})
    with pytest.raises(DatasetError, match=r"cars_test_annos_withlabels\.mat annotation 2: class 3 is not one of the "
                                           r"2 classes"):
        read_dataset("stanford_cars", data_root=tmp_path, official_counts=False)
    (base / "cars_test_annos_withlabels.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(DatasetError, match=r"cars_test_annos_withlabels\.mat: not a readable MATLAB file"):
        read_dataset("stanford_cars", data_root=tmp_path, official_counts=False)
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"labels": np.array([1, 2])})
    with pytest.raises(DatasetError, match=r"cars_test_annos_withlabels\.mat: has no 'annotations' table"):
        read_dataset("stanford_cars", data_root=tmp_path, official_counts=False)
    (base / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(DatasetError, match=r"devkit/cars_meta\.mat: missing\. The original download"):
        read_dataset("stanford_cars", data_root=tmp_path, official_counts=False)


def test_a_broken_flowers_file_is_named(tmp_path: Path, monkeypatch) -> None:
    import numpy as np
    import scipy.io

    from resnetzoo.recipes.finetune import read_dataset

    _flowers(tmp_path)
    base = tmp_path / "flowers-102"
    # torchvision checks the md5 of both files: an edited copy is "not found or corrupted"; say which file.
    with pytest.raises(DatasetError, match=r"flowers-102/imagelabels\.mat: not the official file \(its md5 is not "):
        read_dataset("flowers102", data_root=tmp_path, official_counts=False)
    import torchvision.datasets.flowers102
    import torchvision.datasets.utils

    for module in (torchvision.datasets.flowers102, torchvision.datasets.utils):  # torchvision's check, and ours
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([1, 2]), "valid": np.array([3, 4]),
                                          "tstid": np.array([5, 9])})
    with pytest.raises(DatasetError, match=r"setid\.mat tstid entry 2: image id 9 has no label in imagelabels\.mat"):
        read_dataset("flowers102", data_root=tmp_path, official_counts=False)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([1, 2, 1, 2, 1, 103])})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([1, 2]), "valid": np.array([3, 4]),
                                          "tstid": np.array([5, 6])})
    with pytest.raises(DatasetError, match=r"setid\.mat tstid entry 2: class 103 is not one of the 102 classes"):
        read_dataset("flowers102", data_root=tmp_path, official_counts=False)


def test_imagefolder_reads_class_folders_and_its_held_out_split(tmp_path: Path) -> None:
    from resnetzoo.recipes.finetune import read_dataset

    root = make_synthetic_tree(tmp_path / "folders", num_classes=3, train_per_class=2, test_per_class=1,
                               image_size=(40, 32), layout="imagefolder")
    assert sorted(p.name for p in root.iterdir()) == ["SYNTHETIC_CUB200_TREE.txt", "test", "train"]
    image_set = read_dataset(f"imagefolder:{root}")
    assert image_set.classes == ("001.Synthetic_ellipse_0", "002.Synthetic_rectangle_1", "003.Synthetic_triangle_2")
    assert (len(image_set.split("train")), len(image_set.split("test"))) == (6, 3)
    assert image_set.split("test")[0].key.startswith("test/001.Synthetic_ellipse_0/")
    (root / "test").rename(root / "val")  # val/ alone is the held-out set
    assert len(read_dataset(f"imagefolder:{root}").split("test")) == 3
    (root / "val" / "004.Only_in_val").mkdir()
    _jpeg(root / "val" / "004.Only_in_val" / "x.jpg")
    with pytest.raises(DatasetError, match=r"004\.Only_in_val: a class folder that train/ does not have"):
        read_dataset(f"imagefolder:{root}")
    with pytest.raises(DatasetError, match=r"no train/ folder"):
        read_dataset(f"imagefolder:{tmp_path}")


def test_the_box_follows_the_resize_and_the_centre_crop(tmp_path: Path) -> None:
    root = _hand_tree(tmp_path / "t")  # a_01.jpg: 40 x 30, box x=5 y=5 w=20 h=10
    dataset = CUB200(root, split="train", resize=60, resize_mode="square")
    # 40 x 30 -> 60 x 60: x scales by 1.5, y by 2; the 48 crop starts at (6, 6).
    assert dataset.box_in_input(0, crop=48) == pytest.approx((5 * 1.5 - 6, 5 * 2 - 6, 25 * 1.5 - 6, 15 * 2 - 6))
    shorter = CUB200(root, split="train", resize=30, resize_mode="shorter")  # 40 x 30 stays, crop 20 at (10, 5)
    assert shorter.box_in_input(0, crop=20) == pytest.approx((0.0, 0.0, 15.0, 10.0))  # clipped to the crop
    assert CUB200(root, split="train", resize=30, bbox_crop=True).box_in_input(0, crop=20) is None
