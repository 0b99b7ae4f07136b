"""S3Storage against moto's S3 server: every Storage method, URLs, settings and limits."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from pydantic import SecretStr

from wanserve.errors import StorageUnavailable
from wanserve.settings import Settings
from wanserve.storage import open_storage
from wanserve.storage import s3 as s3_module
from wanserve.storage.s3 import MAX_PRESIGN_SECONDS, S3Options, S3Storage, parse_s3_url


@pytest.fixture
def store(s3_url: str) -> S3Storage:
    storage = open_storage(s3_url)
    assert isinstance(storage, S3Storage)
    return storage


def test_put_bytes_lands_under_the_prefix_with_its_type(store, raw_s3, bucket, list_keys):
    store.put_bytes("jobs/a/media/first.png", b"png-bytes", "image/png")
    assert list_keys() == ["tenant-a/jobs/a/media/first.png"]
    head = raw_s3.head_object(Bucket=bucket, Key="tenant-a/jobs/a/media/first.png")
    assert head["ContentType"] == "image/png"
    assert store.size("jobs/a/media/first.png") == len(b"png-bytes")


def test_put_file_and_download_round_trip(store, raw_s3, bucket, tmp_path):
    source = tmp_path / "video.mp4"
    source.write_bytes(os.urandom(300_000))
    store.put_file("jobs/a/output/video.mp4", source, "video/mp4")
    head = raw_s3.head_object(Bucket=bucket, Key="tenant-a/jobs/a/output/video.mp4")
    assert head["ContentType"] == "video/mp4"

    target = tmp_path / "copy.mp4"
    store.download_to("jobs/a/output/video.mp4", target)
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.mp4", "video.mp4"]


def test_large_files_go_up_in_parts(store, raw_s3, bucket, tmp_path, monkeypatch):
    # S3's smallest part is 5 MiB; a lower threshold keeps the test small.
    small = s3_module.TransferConfig(
        multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
    )
    monkeypatch.setattr(s3_module, "_TRANSFER", small)
    source = tmp_path / "big.mp4"
    source.write_bytes(os.urandom(6 * 1024 * 1024))
    store.put_file("jobs/a/output/video.mp4", source, "video/mp4")
    head = raw_s3.head_object(Bucket=bucket, Key="tenant-a/jobs/a/output/video.mp4")
    assert head["ETag"].strip('"').endswith("-2"), "a two-part multipart upload"
    assert head["ContentType"] == "video/mp4"
    target = tmp_path / "back.mp4"
    store.download_to("jobs/a/output/video.mp4", target)
    assert target.read_bytes() == source.read_bytes()


def test_missing_objects(store, tmp_path):
    assert store.size("jobs/none/video.mp4") is None
    with pytest.raises(FileNotFoundError):
        store.download_to("jobs/none/video.mp4", tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == [], "no temp file left behind"


def test_objects_are_remote(store):
    assert store.local_path("jobs/a/output/video.mp4") is None


@pytest.mark.parametrize("key", ["", "/jobs/a", "jobs/../../other", ".."])
def test_bad_keys_are_refused(store, key):
    with pytest.raises(ValueError, match="bad storage key"):
        store.put_bytes(key, b"x", "text/plain")


def test_presigned_url_serves_bytes_and_type(store):
    store.put_bytes("jobs/a/output/video.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4")
    url = store.presigned_url("jobs/a/output/video.mp4", 600)
    assert url is not None
    query = parse_qs(urlparse(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    answer = httpx.get(url)
    assert answer.status_code == 200
    assert answer.content == b"\x00\x00\x00\x18ftypmp42"
    assert answer.headers["content-type"] == "video/mp4"


def test_presigned_url_expiry_is_clamped_to_seven_days(store):
    url = store.presigned_url("jobs/a/output/video.mp4", 30 * 24 * 3600)
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == [str(MAX_PRESIGN_SECONDS)]


def test_presigned_urls_use_the_public_endpoint(s3_endpoint, bucket):
    internal = f"s3://{bucket}/p?endpoint_url={s3_endpoint}&region=us-east-1"
    public = "https://media.example.test"
    store = S3Storage.from_url(
        internal,
        Settings(
            s3_public_endpoint_url=public,
            s3_access_key_id="k",
            s3_secret_access_key=SecretStr("s"),
        ),
    )
    url = store.presigned_url("jobs/a/output/video.mp4", 60)
    assert url.startswith(f"{public}/{bucket}/p/jobs/a/output/video.mp4?")
    assert store.client.meta.endpoint_url == s3_endpoint


def count_deletes(store: S3Storage) -> list[int]:
    """Sizes of the DeleteObjects requests `store` sends from now on."""
    sizes: list[int] = []

    def record(params: dict, **_: object) -> None:
        sizes.append(len(params["Delete"]["Objects"]))

    store.client.meta.events.register("provide-client-params.s3.DeleteObjects", record)
    return sizes


def fill(store: S3Storage, keys: list[str]) -> None:
    """Store a byte under each key, eight at a time."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: store.put_bytes(key, b"x", "text/plain"), keys))


def test_delete_prefix_works_in_batches(store, list_keys, monkeypatch):
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 10)
    fill(store, [f"jobs/a/media/{i:02d}" for i in range(25)])
    store.put_bytes("jobs/ab/keep", b"x", "text/plain")
    store.put_bytes("jobs/b/keep", b"x", "text/plain")
    sizes = count_deletes(store)

    store.delete_prefix("jobs/a/")
    assert sizes == [10, 10, 5]
    assert list_keys() == ["tenant-a/jobs/ab/keep", "tenant-a/jobs/b/keep"]
    store.delete_prefix("jobs/none/")  # nothing there: no error


@pytest.mark.slow
def test_delete_prefix_removes_more_than_a_thousand_objects(store, list_keys):
    # About 4 s: moto stores some 250 objects a second.
    fill(store, [f"jobs/a/media/{i:04d}" for i in range(1100)])
    sizes = count_deletes(store)
    store.delete_prefix("jobs/a/")
    assert sizes == [1000, 100]
    assert list_keys() == []


def test_delete_prefix_stays_inside_our_prefix(store, raw_s3, bucket, list_keys):
    raw_s3.put_object(Bucket=bucket, Key="jobs/a/other-tenant", Body=b"x")
    store.put_bytes("jobs/a/mine", b"x", "text/plain")
    store.delete_prefix("jobs/a/")
    assert list_keys() == ["jobs/a/other-tenant"]
    with pytest.raises(ValueError):
        store.delete_prefix("")


def test_check_needs_a_reachable_bucket(store, s3_endpoint):
    store.check()
    missing = open_storage(f"s3://no-such-bucket-here?endpoint_url={s3_endpoint}&region=us-east-1")
    with pytest.raises(ClientError):
        missing.check()


def test_check_fails_when_the_endpoint_is_down(aws_env, tmp_path):
    # A port that was free a moment ago: connection refused, retried, then raised.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = open_storage(f"s3://b?endpoint_url=http://127.0.0.1:{port}&region=us-east-1")
    with pytest.raises(EndpointConnectionError):
        store.check()


def test_url_options_override_settings():
    settings = Settings(
        s3_endpoint_url="http://internal:9000",
        s3_region="eu-west-1",
        s3_access_key_id="key",
        s3_secret_access_key=SecretStr("hunter2-value"),
    )
    options = parse_s3_url("s3://media/a/b/?region=us-east-2", settings)
    assert options == S3Options(
        bucket="media",
        prefix="a/b/",
        endpoint_url="http://internal:9000",
        region="us-east-2",
        access_key_id="key",
        secret_access_key="hunter2-value",
    )
    assert "hunter2" not in repr(settings) + repr(options)
    assert parse_s3_url("s3://media") == S3Options(bucket="media")


@pytest.mark.parametrize(
    ("url", "message"),
    [("s3:///prefix", "not an s3"), ("s3://b?secret=x", "unknown s3 URL options")],
)
def test_bad_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        parse_s3_url(url)


def test_open_storage_schemes(tmp_path: Path):
    with pytest.raises(ValueError, match="unsupported storage URL scheme"):
        open_storage("ftp://host/files")
    assert open_storage(f"file://{tmp_path}").local_path("a") == tmp_path.resolve() / "a"


def test_objects_lists_keys_under_a_prefix_with_their_times(store, raw_s3, bucket):
    raw_s3.put_object(Bucket=bucket, Key="jobs/a/other-tenant", Body=b"x")
    before = time.time() - 5
    store.put_bytes("jobs/a/media/first.png", b"x", "image/png")
    store.put_bytes("jobs/b/output/video.mp4", b"x", "video/mp4")
    store.put_bytes("elsewhere/x", b"x", "text/plain")
    found = {o.key: o.modified for o in store.objects("jobs/")}
    assert set(found) == {"jobs/a/media/first.png", "jobs/b/output/video.mp4"}
    assert all(before <= modified <= time.time() + 5 for modified in found.values())


def test_data_calls_to_a_dead_endpoint_are_storage_unavailable(aws_env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = open_storage(f"s3://b?endpoint_url=http://127.0.0.1:{port}&region=us-east-1")
    calls = [
        lambda: store.put_bytes("jobs/a/x", b"x", "text/plain"),
        lambda: store.size("jobs/a/x"),
        lambda: store.download_to("jobs/a/x", tmp_path / "x"),
        lambda: store.delete_prefix("jobs/a/"),
        lambda: list(store.objects("jobs/")),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable) as away:
            call()
        assert away.value.code == "service_unavailable"
        assert isinstance(away.value.__cause__, EndpointConnectionError)
    assert list(tmp_path.iterdir()) == []  # no partial download left
