"""Content-addressed model blobs in an S3-compatible object store (AWS S3, MinIO, Ceph, moto).

The layout and the guarantees are those of :class:`~fedloom.store.blobs.FileBlobStore`:
a blob's key is the SHA-256 of its bytes, it lives at ``prefix/ab/cdef...`` in the
bucket, every read is verified against its key, a missing blob is a ``StoreError``
and deleting one twice is not an error. S3 makes a ``PUT`` atomic by itself: an object
is either absent or complete, so no temporary object is needed.

Credentials never come from the run config (which is stored and shown): they come from
boto3's own chain — ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``
in the environment, or a named profile of ``~/.aws/credentials`` / ``AWS_CONFIG_FILE``
— so this class accepts no key, secret or token argument at all.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from fedloom.core.errors import ConfigError, IntegrityError, StoreError
from fedloom.store.blobs import blob_key, check_key

# S3's bucket naming rules: 3-63 characters, lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or a digit.
_BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_INSTALL_HINT = "S3 blobs need boto3: pip install 'fedloom[s3]'"


def check_bucket(bucket: str) -> str:
    """Return ``bucket`` if S3 would accept it as a bucket name, else say why not."""
    if not isinstance(bucket, str) or not _BUCKET_PATTERN.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"invalid S3 bucket {bucket!r}: expected 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return bucket


def check_prefix(prefix: str) -> str:
    """Normalise ``prefix`` to ``""`` or ``"a/b/"``; refuse one that is absolute or climbs (``..``).

    S3 keys are plain strings, but a prefix is also shown as a path and may be mirrored
    to a filesystem by tools, so it gets the same care as a directory name.
    """
    if not isinstance(prefix, str):
        raise ConfigError(f"S3 blob prefix must be a string, got {type(prefix).__name__}")
    if prefix.startswith("/"):
        raise ConfigError(f"S3 blob prefix {prefix!r} must be relative: drop the leading '/'")
    segments = [segment for segment in prefix.split("/") if segment]
    for segment in segments:
        if segment in {".", ".."} or not _PREFIX_SEGMENT.fullmatch(segment):
            raise ConfigError(
                f"invalid S3 blob prefix {prefix!r}: segment {segment!r} must be letters, digits, '.', '_' or '-' "
                "and not '.' or '..'"
            )
    return "".join(f"{segment}/" for segment in segments)


def _load_boto3() -> Any:
    """Import boto3 only when S3 blobs are used, so the base install does not need it."""
    try:
        return importlib.import_module("boto3")
    except ImportError as exc:
        raise ConfigError(_INSTALL_HINT) from exc


class S3BlobStore:
    """Blobs at ``s3://bucket/prefix/ab/cdef...``, with the contract of ``FileBlobStore``.

    ``endpoint_url`` points at an S3-compatible server (MinIO, Ceph, a test's moto);
    ``None`` means AWS itself. ``profile`` names a profile of the AWS config files;
    ``None`` uses the environment and the default profile. The bucket must exist: the
    store never creates buckets, since who may do so is the operator's policy.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
    ) -> None:
        self.bucket = check_bucket(bucket)
        self.prefix = check_prefix(prefix)
        self.endpoint_url = endpoint_url
        boto3 = _load_boto3()
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        try:
            session = boto3.session.Session(profile_name=profile, region_name=region)
            self._client: Any = session.client("s3", endpoint_url=endpoint_url)
        except BotoCoreError as exc:  # an unknown profile, an unparsable config file
            raise ConfigError(f"could not set up the S3 client for {self.url}: {exc}") from exc

    @property
    def url(self) -> str:
        """``s3://bucket/prefix`` — where the blobs are, for messages (holds no secret)."""
        return f"s3://{self.bucket}/{self.prefix}"

    def __repr__(self) -> str:
        return f"S3BlobStore({self.url!r}, endpoint_url={self.endpoint_url!r})"

    def object_key(self, key: str) -> str:
        """The S3 object key of the blob with ``key`` (validated, so it is always under the prefix)."""
        check_key(key)
        return f"{self.prefix}{key[:2]}/{key[2:]}"

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its key; a no-op when an object of the same size is there."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError(f"blob data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        key = blob_key(data)
        if self._stored_size(key) == len(data):
            return key
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)
        except self._errors as exc:
            raise StoreError(f"could not write blob {key} to {self.url}: {_reason(exc)}") from exc
        return key

    def get(self, key: str) -> bytes:
        """The blob's bytes, verified against its key so a corrupted object never goes unnoticed."""
        name = self.object_key(key)
        try:
            data: bytes = self._client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        except self._errors as exc:
            if _is_missing(exc):
                raise StoreError(f"blob {key} is missing from {self.url}") from None
            raise StoreError(f"could not read blob {key} from {self.url}: {_reason(exc)}") from exc
        actual = blob_key(data)
        if actual != key:
            raise IntegrityError(f"blob {key} in {self.url} is corrupted: its bytes hash to {actual}")
        return data

    def exists(self, key: str) -> bool:
        """True when a blob with ``key`` is stored (its content is not verified here)."""
        return self._stored_size(key) is not None

    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing blob is not an error, so clean-ups can be retried."""
        name = self.object_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        except self._errors as exc:
            if not _is_missing(exc):
                raise StoreError(f"could not delete blob {key} from {self.url}: {_reason(exc)}") from exc

    def _stored_size(self, key: str) -> int | None:
        """The stored object's size, or None when there is none (a ``HEAD`` request)."""
        name = self.object_key(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=name)
        except self._errors as exc:
            if _is_missing(exc):
                return None
            raise StoreError(f"could not look up blob {key} in {self.url}: {_reason(exc)}") from exc
        return int(head["ContentLength"])


def _reason(exc: Exception) -> str:
    """The client's error, plus where credentials come from when there were none."""
    if type(exc).__name__ == "NoCredentialsError":
        return f"{exc}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or use a profile"
    return str(exc)


def _is_missing(exc: Exception) -> bool:
    """True for S3's "no such object" answers (``HEAD`` says 404, ``GET`` says NoSuchKey)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in _MISSING_CODES
