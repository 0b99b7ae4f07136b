"""An in-process S3 (moto's server on 127.0.0.1) and a fresh bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Base URL of a moto S3 server on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Test credentials through boto3's default chain; no instance metadata, no ~/.aws."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def raw_s3(s3_endpoint: str, aws_env: None) -> Any:
    """A plain boto3 client on the moto server, to look behind S3Storage's back."""
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)


@pytest.fixture
def bucket(raw_s3: Any) -> str:
    """A new, empty bucket."""
    name = f"wanserve-{uuid.uuid4().hex[:12]}"
    raw_s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_url(s3_endpoint: str, bucket: str) -> str:
    """A storage URL for the bucket, under the prefix `tenant-a/`."""
    return f"s3://{bucket}/tenant-a?endpoint_url={s3_endpoint}&region={REGION}"


@pytest.fixture
def list_keys(raw_s3: Any, bucket: str) -> Callable[[str], list[str]]:
    """Every key in the bucket starting with a prefix, sorted."""

    def keys(prefix: str = "") -> list[str]:
        pages = raw_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    return keys
