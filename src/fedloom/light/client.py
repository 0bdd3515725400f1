"""The light agent's side of docs/protocol.md over ``urllib`` (no httpx on a small device).

One method per endpoint an agent uses. Network failures, 5xx answers and the "not now"
refusals (408, 429 with ``Retry-After``) are retried with exponential backoff and full
jitter, up to ``max_attempts`` tries or forever (``None``: an agent on a device rides out
an aggregator restart); any other 4xx is never retried and becomes a
:class:`ServerRefusal` carrying the server's ``error`` code and ``detail``. Answers are
read with a size limit, so a hostile server cannot make the device hold more than that.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fedloom.light.wire import DEFAULT_MAX_BYTES, Payload, decode

__all__ = ["LightClient", "ServerRefusal", "ServerUnavailable"]

log = logging.getLogger("fedloom.light")

SHA256_HEADER = "X-Fedloom-Sha256"
#: the largest JSON answer read (a task or a registration is far smaller)
MAX_JSON_BYTES = 1024 * 1024
_RETRIED = frozenset({408, 429})
_MAX_RETRY_AFTER = 300.0


class ServerRefusal(Exception):  # noqa: N818 - what it is, in the protocol's words
    """A 4xx answer: ``status``, the protocol's ``code`` (e.g. ``duplicate``) and ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class ServerUnavailable(Exception):  # noqa: N818
    """The aggregator could not be reached (or answered 5xx) and the retries ran out."""


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class LightClient:
    """A client for one aggregator (``base_url`` like ``https://agg.example.org:8443``)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: str | None = None,
        timeout: float = 30.0,
        max_attempts: int | None = None,
        max_download_bytes: int = DEFAULT_MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"server URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_attempts, self.max_download_bytes = timeout, max_attempts, max_download_bytes
        self.credential: str | None = None
        self.stopped = False
        self._sleep = sleep
        self._rng = random.Random()
        self._context = ssl.create_default_context(cafile=ca_file) if self.base_url.startswith("https") else None

    # ---------------------------------------------------------------- endpoints

    def register(self, name: str, join_token: str) -> dict[str, str]:
        """``POST /v1/agents/register``: ``{"agent_id", "credential", "role", "run_id"}``."""
        body = json.dumps({"name": name, "join_token": join_token}).encode()
        answer = self._json("POST", "/v1/agents/register", body=body, auth=False)
        if not isinstance(answer.get("agent_id"), str) or not isinstance(answer.get("credential"), str):
            raise ServerRefusal(200, "invalid_answer", "the registration answer lacks agent_id or credential")
        self.credential = answer["credential"]
        return {k: str(v) for k, v in answer.items() if k in ("agent_id", "credential", "role", "run_id")}

    def task(self, wait: float) -> dict[str, Any]:
        """``GET /v1/task?wait=``: the TaskInfo (long-polls up to ``wait`` seconds, at most 60)."""
        wait = max(0.0, min(float(wait), 60.0))
        return self._json("GET", f"/v1/task?wait={wait:g}", timeout=self.timeout + wait)

    def download(self, round: int | str) -> Payload:
        """The global model that starts ``round`` (or ``latest``), verified against its hash header."""
        answer = self._request("GET", f"/v1/models/global/{round}", limit=self.max_download_bytes)
        payload = decode(answer.body, max_bytes=self.max_download_bytes)
        claimed = answer.headers.get(SHA256_HEADER.lower())
        if claimed is not None and claimed != payload.sha256:
            raise ValueError(
                f"global model {round}: {SHA256_HEADER} says {claimed}, the tensors hash to {payload.sha256}"
            )
        return payload

    def upload(self, payload: bytes) -> dict[str, Any]:
        """``POST /v1/updates`` with ready-made payload bytes."""
        return self._json("POST", "/v1/updates", body=payload, content_type="application/octet-stream")

    # ---------------------------------------------------------------- plumbing

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = self._request(method, path, limit=MAX_JSON_BYTES, **kwargs)
        try:
            data = json.loads(answer.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ServerRefusal(answer.status, "invalid_answer", f"{method} {path}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise ServerRefusal(answer.status, "invalid_answer", f"{method} {path}: the answer is not a JSON object")
        return data

    def _request(self, method: str, path: str, *, limit: int, **kwargs: Any) -> _Answer:
        """Send with retries; a 2xx answer, or :class:`ServerRefusal` / :class:`ServerUnavailable`."""
        attempt = 0
        while True:
            try:
                answer = self._once(method, path, limit=limit, **kwargs)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                failure: str = f"{type(exc).__name__}: {exc}"
                wait_at_least = 0.0
            else:
                if answer.status < 400:
                    return answer
                code, detail = _error_of(answer)
                if answer.status < 500 and answer.status not in _RETRIED:
                    raise ServerRefusal(answer.status, code, detail)
                failure, wait_at_least = f"{answer.status} {code}: {detail}", _retry_after(answer)
            attempt += 1
            if self.stopped or (self.max_attempts is not None and attempt >= self.max_attempts):
                raise ServerUnavailable(f"{method} {path}: {failure}")
            delay = max(wait_at_least, self._rng.uniform(0.0, min(60.0, 2.0 ** min(attempt - 1, 16))))
            log.warning("%s %s failed (%s); retry %d in %.1f s", method, path, failure, attempt, delay)
            self._sleep(delay)

    def _once(
        self,
        method: str,
        path: str,
        *,
        limit: int,
        body: bytes | None = None,
        auth: bool = True,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> _Answer:
        headers = {"User-Agent": "fedloom-light/1", "Content-Type": content_type}
        if auth:
            if self.credential is None:
                raise ValueError(f"{method} {path} needs a credential: register first")
            headers["Authorization"] = f"Bearer {self.credential}"
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method=method)  # noqa: S310
        try:
            response = urllib.request.urlopen(request, timeout=timeout or self.timeout, context=self._context)  # noqa: S310
        except urllib.error.HTTPError as error:
            response = error
        with response:
            data = _read_limited(response, limit, f"{method} {path}")
            return _Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, data)


def _read_limited(response: Any, limit: int, what: str) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ValueError(f"{what}: the aggregator announced {declared} bytes, over the limit of {limit}")
    data = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what}: the aggregator sent more than {limit} bytes; stopped reading")
    return bytes(data)


def _error_of(answer: _Answer) -> tuple[str, str]:
    """The protocol's ``error`` code and ``detail`` of a refusal (or words from its status)."""
    try:
        data = json.loads(answer.body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return f"http_{answer.status}", answer.body[:300].decode("utf-8", "replace")
    if not isinstance(data, dict):
        return f"http_{answer.status}", str(data)[:300]
    detail = data.get("detail", "")
    return str(data.get("error") or f"http_{answer.status}"), detail if isinstance(detail, str) else str(detail)[:300]


def _retry_after(answer: _Answer) -> float:
    try:
        asked = float(answer.headers.get("retry-after", "0"))
    except ValueError:
        return 0.0
    return min(max(asked, 0.0), _MAX_RETRY_AFTER) if math.isfinite(asked) else 0.0
