"""Objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2), shared by every machine.

URL: `s3://bucket/optional/prefix?endpoint_url=http://host:9000&region=us-east-1`. Query
options override the `WANSERVE_S3_*` settings, which override boto3's own chain (AWS_*
variables, ~/.aws, instance roles).
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from wanserve.errors import StorageUnavailable
from wanserve.settings import Settings
from wanserve.storage.base import StoredObject

# SigV4 presigned URLs cannot live longer than seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
_MISSING = {"404", "NoSuchKey", "NotFound"}
_AWAY = "The file storage is unavailable right now; try again shortly."
_URL_OPTIONS = {"endpoint_url", "public_endpoint_url", "region", "addressing_style"}
_TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024,
    multipart_chunksize=16 * 1024 * 1024,
    max_concurrency=4,
)


@dataclass(frozen=True)
class S3Options:
    """Where the bucket is and how to reach it; None means boto3's default."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    public_endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    addressing_style: str | None = None


def parse_s3_url(url: str, settings: Settings | None = None) -> S3Options:
    """Options from an `s3://` URL, filled in from the `s3_*` settings."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    query = {name: values[-1] for name, values in parse_qs(parsed.query).items()}
    unknown = set(query) - _URL_OPTIONS
    if unknown:
        raise ValueError(f"unknown s3 URL options: {sorted(unknown)}")
    prefix = parsed.path.strip("/")
    options = S3Options(bucket=parsed.netloc, prefix=f"{prefix}/" if prefix else "")
    if settings is not None:
        secret = settings.s3_secret_access_key
        options = replace(
            options,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
        )
    return replace(options, **query)


def _client(options: S3Options, endpoint_url: str | None) -> Any:
    # Custom endpoints (MinIO, moto, an IP) rarely resolve bucket subdomains.
    style = options.addressing_style or ("path" if endpoint_url else "auto")
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=60,
        signature_version="s3v4",
        s3={"addressing_style": style},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=options.region,
        aws_access_key_id=options.access_key_id,
        aws_secret_access_key=options.secret_access_key,
        config=config,
    )


@contextmanager
def _reachable() -> Iterator[None]:
    """The bucket out of reach (no connection, its own 5xx after boto3's retries) reads as
    `StorageUnavailable`; its other answers (missing, forbidden) go through."""
    try:
        yield
    except (BotoConnectionError, HTTPClientError) as exc:
        raise StorageUnavailable(_AWAY, reason="unreachable") from exc
    except (ClientError, S3UploadFailedError) as exc:
        answer = exc if isinstance(exc, ClientError) else exc.__context__
        status = (
            answer.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if isinstance(answer, ClientError)
            else 0
        )
        if int(status) >= 500:
            raise StorageUnavailable(_AWAY, reason="unreachable") from exc
        raise


def _is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING


class S3Storage:
    """Storage in one bucket under one key prefix; safe to share between threads."""

    def __init__(self, options: S3Options):
        self.options = options
        self.bucket = options.bucket
        self.client = _client(options, options.endpoint_url)
        # Presigned URLs carry the host they were signed for: sign them for the
        # endpoint clients reach when that differs from ours. Signing is offline.
        public = options.public_endpoint_url
        self.signer = _client(options, public) if public else self.client

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> S3Storage:
        """Storage for an `s3://bucket/prefix?...` URL."""
        return cls(parse_s3_url(url, settings))

    def _key(self, key: str) -> str:
        # Keys are chosen by the server; refuse ones that could alias others all the same.
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad storage key: {key!r}")
        return self.options.prefix + key

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key` (an S3 PUT is atomic)."""
        with _reachable():
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` under `key`; large files go up in parts."""
        # An object appears only when its (multipart) upload completes; a failed
        # multipart upload is aborted by boto3.
        with _reachable():
            self.client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": content_type},
                Config=_TRANSFER,
            )

    def download_to(self, key: str, path: Path) -> None:
        """Copy the object at `key` into a local file (temp name, then rename)."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, _reachable():
                self.client.download_fileobj(self.bucket, self._key(key), out, Config=_TRANSFER)
            os.replace(tmp, path)
        except ClientError as exc:
            Path(tmp).unlink(missing_ok=True)
            if _is_missing(exc):
                raise FileNotFoundError(f"no stored object {key!r}") from exc
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def local_path(self, key: str) -> Path | None:
        """Objects are remote: always None."""
        return None

    def size(self, key: str) -> int | None:
        """Size in bytes, or None when there is no such object."""
        try:
            with _reachable():
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        """A GET URL valid for `expires_in` seconds (at most seven days)."""
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        content_type = mimetypes.guess_type(key)[0]
        if content_type:
            params["ResponseContentType"] = content_type
        seconds = max(1, min(int(expires_in), MAX_PRESIGN_SECONDS))
        return str(
            self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        )

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object whose key starts with `prefix` (1000 per request)."""
        full = self._key(prefix)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": _DELETE_BATCH}
        )
        with _reachable():
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self._delete(keys)

    def objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under `prefix`, with when it was last written."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        with _reachable():
            for page in pages:
                for item in page.get("Contents", []):
                    key = str(item["Key"]).removeprefix(self.options.prefix)
                    yield StoredObject(key, item["LastModified"].timestamp())

    def _delete(self, keys: list[dict[str, str]]) -> None:
        answer = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
        )
        errors = answer.get("Errors", [])
        if errors:
            first = errors[0]
            raise OSError(
                f"could not delete {len(errors)} objects, e.g. {first.get('Key')!r}: "
                f"{first.get('Code')}"
            )

    def check(self) -> None:
        """Raise if the bucket cannot be reached with our credentials."""
        self.client.head_bucket(Bucket=self.bucket)
