"""Choose a blob store from one URL: ``s3://bucket/prefix`` or a directory (``file:///path`` or a path).

One string is what a command-line flag (``--blob-url``) or a config field can carry.
What must not be in a run config stays out of it: the S3 endpoint, region and profile
come from ``FEDLOOM_S3_ENDPOINT``, ``FEDLOOM_S3_REGION`` and ``FEDLOOM_S3_PROFILE``, and
the credentials from boto3's own chain (see :mod:`fedloom.store.s3_blobs`). A URL that
carries credentials (``s3://key:secret@bucket``) is refused, so none can be stored by mistake.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from fedloom.core.errors import ConfigError
from fedloom.store.blobs import BlobStore, FileBlobStore

S3_ENDPOINT_ENV = "FEDLOOM_S3_ENDPOINT"
S3_REGION_ENV = "FEDLOOM_S3_REGION"
S3_PROFILE_ENV = "FEDLOOM_S3_PROFILE"


def blob_store_from_url(url: str, environ: Mapping[str, str] | None = None) -> BlobStore:
    """The blob store ``url`` names; ``environ`` (default ``os.environ``) supplies the S3 settings."""
    env = os.environ if environ is None else environ
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("blob URL is empty: give s3://bucket/prefix or a directory")
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if "@" in parts.netloc:
            raise ConfigError(
                f"blob URL s3://{parts.netloc.rsplit('@', 1)[-1]}/... must not carry credentials: "
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or FEDLOOM_S3_PROFILE instead"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"blob URL {url!r} must be s3://bucket/prefix, without '?' or '#'")
        from fedloom.store.s3_blobs import S3BlobStore

        return S3BlobStore(
            parts.netloc,
            prefix=parts.path.lstrip("/"),
            endpoint_url=env.get(S3_ENDPOINT_ENV) or None,
            region=env.get(S3_REGION_ENV) or None,
            profile=env.get(S3_PROFILE_ENV) or None,
        )
    if parts.scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise ConfigError(f"blob URL {url!r} names host {parts.netloc!r}: file URLs must be local (file:///path)")
        return FileBlobStore(Path(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise ConfigError(f"blob URL scheme {parts.scheme!r} is not supported: use s3://bucket/prefix or a directory")
    return FileBlobStore(Path(url))
