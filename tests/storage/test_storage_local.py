"""LocalStorage: atomic writes, keys kept inside the root, sizes and prefix deletes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wanserve.storage import open_storage
from wanserve.storage.local import LocalStorage


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    storage = open_storage(f"file://{tmp_path / 'files'}")
    assert isinstance(storage, LocalStorage)
    return storage


def files_under(root: Path) -> list[str]:
    """Every file below `root`, temp files included, as sorted relative paths."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_and_read_back(store, tmp_path):
    store.put_bytes("jobs/a/media/first.png", b"png", "image/png")
    source = tmp_path / "video.mp4"
    source.write_bytes(b"mp4" * 1000)
    store.put_file("jobs/a/output/video.mp4", source, "video/mp4")

    assert files_under(store.root) == ["jobs/a/media/first.png", "jobs/a/output/video.mp4"]
    assert store.size("jobs/a/media/first.png") == 3
    assert store.size("jobs/a/output/video.mp4") == 3000
    assert store.local_path("jobs/a/media/first.png").read_bytes() == b"png"
    assert store.presigned_url("jobs/a/output/video.mp4", 60) is None
    copy = tmp_path / "copy.mp4"
    store.download_to("jobs/a/output/video.mp4", copy)
    assert copy.read_bytes() == source.read_bytes()


def test_a_failed_write_keeps_the_old_file_and_no_temp(store, tmp_path):
    store.put_bytes("jobs/a/output/video.mp4", b"old", "video/mp4")
    with pytest.raises(FileNotFoundError):
        store.put_file("jobs/a/output/video.mp4", tmp_path / "missing.mp4", "video/mp4")
    assert store.local_path("jobs/a/output/video.mp4").read_bytes() == b"old"
    assert files_under(store.root) == ["jobs/a/output/video.mp4"]


def test_an_overwrite_replaces_the_whole_file(store):
    store.put_bytes("jobs/a/x", b"a much longer first version", "text/plain")
    store.put_bytes("jobs/a/x", b"short", "text/plain")
    assert store.local_path("jobs/a/x").read_bytes() == b"short"


@pytest.mark.parametrize("key", ["../outside", "jobs/../../outside", "/etc/passwd", ""])
def test_keys_cannot_escape_the_root(store, key):
    with pytest.raises(ValueError, match="escapes the root"):
        store.put_bytes(key, b"x", "text/plain")
    with pytest.raises(ValueError, match="escapes the root"):
        store.size(key)


def test_missing_objects(store, tmp_path):
    assert store.size("jobs/none/video.mp4") is None
    with pytest.raises(FileNotFoundError):
        store.download_to("jobs/none/video.mp4", tmp_path / "out.mp4")


def test_delete_prefix_removes_a_folder_or_a_file(store):
    for key in ("jobs/a/media/first.png", "jobs/a/output/video.mp4", "jobs/ab/x", "jobs/b/x"):
        store.put_bytes(key, b"x", "application/octet-stream")
    store.delete_prefix("jobs/a/")
    assert files_under(store.root) == ["jobs/ab/x", "jobs/b/x"]
    store.delete_prefix("jobs/b/x")
    assert files_under(store.root) == ["jobs/ab/x"]
    store.delete_prefix("jobs/none/")  # nothing there: no error


def test_check_leaves_nothing_behind(store):
    store.check()
    assert files_under(store.root) == []


def test_objects_lists_files_under_a_prefix_with_their_times(store):
    store.put_bytes("jobs/a/media/first.png", b"png", "image/png")
    store.put_bytes("jobs/b/output/video.mp4", b"mp4", "video/mp4")
    store.put_bytes("elsewhere/x", b"x", "text/plain")
    os.utime(store.local_path("jobs/a/media/first.png"), (1000.0, 1000.0))
    found = {o.key: o.modified for o in store.objects("jobs/")}
    assert set(found) == {"jobs/a/media/first.png", "jobs/b/output/video.mp4"}
    assert found["jobs/a/media/first.png"] == 1000.0
    assert list(store.objects("nothing/")) == []
